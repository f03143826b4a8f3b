"""Benchmark: warping a 182 x 218 x 182 float32 volume on the CPU (time and peak memory).

Two transforms, both applied as a pull warp ``out(x) = moving(T(x))`` with linear interpolation and
zero padding, fixed grid = moving grid (1 mm, oblique direction):

* ``affine``: a 3D affine (rotation about all axes, anisotropic scale, translation) about the centre;
* ``field``: a dense smooth displacement field (world mm, up to 5 mm) on the same grid.

Methods, each run in its **own subprocess** (so its peak resident memory is its own):

* ``omnireg``: :func:`omnireg.transforms.resample` with ``Affine.from_matrix`` / ``DisplacementField``
  (non-learnable, under ``torch.no_grad``: the inference path);
* ``sitk``: ``sitk.Resample`` with an ``AffineTransform`` (the matrix converted to LPS) or a
  ``DisplacementFieldTransform`` (vectors converted to LPS, float64 as ITK requires);
* ``scipy``: ``scipy.ndimage.map_coordinates(order=1)`` on moving voxel coordinates computed with NumPy
  (the coordinates are part of the timed work); for the affine also ``scipy.ndimage.affine_transform``
  (``scipy-affine``), SciPy's own affine path. SciPy is single-threaded.

Reported per method: median wall time of N repeats (after one untimed warm-up call), the peak resident
memory of the warm-up call above the memory held before it (Linux ``/proc/self/clear_refs`` + ``VmHWM``),
for SciPy also the ``tracemalloc`` peak (NumPy buffers only), and the largest absolute difference to the
omnireg output on interior voxels (points at least one voxel inside the moving image).

Usage::

    python benchmarks/warp.py --quick            # 2 repeats
    python benchmarks/warp.py --full             # 5 repeats
    python benchmarks/warp.py --full --profile   # also a torch profile of the omnireg warps

Writes ``bench-results/warp.json`` (``--json PATH``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

SHAPE = (182, 218, 182)
KINDS = ("affine", "field")
METHODS = {"affine": ("omnireg", "sitk", "scipy", "scipy-affine"), "field": ("omnireg", "sitk", "scipy")}
MAX_DISPLACEMENT_MM = 5.0


# ---------------------------------------------------------------------------------------------- data
def make_grid():
    """1 mm grid with an oblique direction (about 10 degrees off the axes), centred near world 0."""
    import numpy as np
    from scipy.spatial.transform import Rotation

    from omnireg.core import Grid

    direction = Rotation.from_euler("xyz", [8.0, -6.0, 5.0], degrees=True).as_matrix()
    centre_vox = (np.asarray(SHAPE) - 1) / 2.0
    origin = -direction @ centre_vox
    return Grid(SHAPE, (1.0, 1.0, 1.0), tuple(origin), direction)


def make_volume(seed: int = 0):
    """Random smooth float32 data (Gaussian-filtered white noise, sigma 3 voxels), ``(*S)``."""
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(SHAPE, dtype=np.float32)
    vol = ndimage.gaussian_filter(noise, 3.0, truncate=3.0)
    vol -= vol.min()
    vol /= vol.max()
    return np.ascontiguousarray(vol, dtype=np.float32)


def make_affine():
    """World (RAS mm) matrix fixed -> moving: rotations (10, -5, 7) deg, scales (1.05, 0.97, 1.02), shift."""
    from omnireg.training.synthetic import affine_matrix

    return affine_matrix(ndim=3, rotation_deg=[10.0, -5.0, 7.0], translation_mm=[4.0, -3.0, 2.0], scale=[1.05, 0.97, 1.02])


def make_field(grid, seed: int = 1):
    """Smooth world-mm displacement ``(3, *S)`` float32 (largest vector norm 5 mm)."""
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    u = np.empty((3, *SHAPE), dtype=np.float32)
    for c in range(3):
        u[c] = ndimage.gaussian_filter(rng.standard_normal(SHAPE, dtype=np.float32), 12.0, truncate=2.5)
    norm = np.sqrt((u.astype(np.float64) ** 2).sum(0)).max()
    u *= np.float32(MAX_DISPLACEMENT_MM / norm)
    return u


def moving_voxel_coordinates(kind: str, grid, matrix, field):
    """Moving voxel coordinates ``(3, *S)`` float32 of every fixed voxel (NumPy; used by scipy and the check)."""
    import numpy as np

    d = 3
    if kind == "affine":
        total = grid.voxel_from_world() @ matrix @ grid.world_from_voxel()
        idx = np.indices(SHAPE, dtype=np.float32)
        a = total[:d, :d].astype(np.float32)
        b = total[:d, d].astype(np.float32)
        out = np.empty((d, *SHAPE), dtype=np.float32)
        for r in range(d):
            out[r] = a[r, 0] * idx[0] + a[r, 1] * idx[1] + a[r, 2] * idx[2] + b[r]
        return out
    # same grid for field and image: vox_m = idx + L^-1 u, with L = direction @ diag(spacing)
    inv_lin = grid.voxel_from_world()[:d, :d].astype(np.float32)
    out = np.indices(SHAPE, dtype=np.float32)
    for r in range(d):
        out[r] += inv_lin[r, 0] * field[0] + inv_lin[r, 1] * field[1] + inv_lin[r, 2] * field[2]
    return out


# ---------------------------------------------------------------------------------------------- methods
def prepare(method: str, kind: str):
    """``(run, to_numpy)``: ``run()`` does one warp; ``to_numpy(result)`` gives the ``(*S)`` array (untimed)."""
    import numpy as np

    grid = make_grid()
    vol = make_volume()
    matrix = make_affine()
    field = make_field(grid) if kind == "field" else None

    if method == "omnireg":
        import torch

        from omnireg.core import Image
        from omnireg.transforms import Affine, DisplacementField, resample

        image = Image(torch.from_numpy(vol)[None], grid)
        if kind == "affine":
            transform = Affine.from_matrix(matrix, learnable=False)
        else:
            transform = DisplacementField(torch.from_numpy(field)[None], grid, learnable=False)
        del field

        def run():
            with torch.no_grad():
                return resample(image, transform, onto=grid, interp="linear", padding="zeros").data[0].numpy()

        return run, lambda out: out

    if method == "sitk":
        import SimpleITK as sitk

        from omnireg.io._convert import convert_affine_ras_lps, lps_flip, sitk_from_array

        image = sitk_from_array(vol[None], grid)
        if kind == "affine":
            m = convert_affine_ras_lps(matrix)
            transform = sitk.AffineTransform(3)
            transform.SetMatrix(tuple(m[:3, :3].reshape(-1)))
            transform.SetTranslation(tuple(m[:3, 3]))
        else:
            f = lps_flip(3)
            field_lps = (field.astype(np.float64) * f[:, None, None, None])
            del field
            field_img = sitk_from_array(field_lps, grid)  # vector pixels, LPS geometry
            del field_lps
            transform = sitk.DisplacementFieldTransform(field_img)  # takes the image over (float64 vectors)

        def run():
            return sitk.Resample(image, image, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)

        return run, lambda out: sitk.GetArrayFromImage(out).transpose(2, 1, 0)

    if method == "scipy":
        from scipy import ndimage

        def run():
            coords = moving_voxel_coordinates(kind, grid, matrix, field)
            return ndimage.map_coordinates(vol, coords, order=1, mode="constant", cval=0.0, prefilter=False)

        return run, lambda out: out

    if method == "scipy-affine":
        from scipy import ndimage

        total = grid.voxel_from_world() @ matrix @ grid.world_from_voxel()

        def run():
            return ndimage.affine_transform(vol, total[:3, :3], offset=total[:3, 3], order=1, mode="constant", cval=0.0,
                                            prefilter=False)

        return run, lambda out: out
    raise ValueError(f"method: unknown {method!r}")


def worker(args) -> None:
    """One method and transform in this process: warm-up (peak memory), then timed repeats."""
    C.set_threads(args.threads)
    import numpy as np

    run, to_numpy = prepare(args.method, args.kind)
    import gc

    C.release_free_memory()
    base = C.rss_mb()
    reset = C.reset_peak_rss()
    t0 = time.perf_counter()
    out = run()
    first = time.perf_counter() - t0
    peak = C.peak_rss_mb() - (base if reset else 0.0)
    trace_peak = None
    if args.method.startswith("scipy"):
        import tracemalloc

        del out
        gc.collect()
        tracemalloc.start()
        out = run()
        trace_peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    times = []
    for _ in range(args.repeats):
        del out
        t0 = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t0)
    if args.out:
        np.save(args.out, np.ascontiguousarray(to_numpy(out), dtype=np.float32))
    result = {
        "method": args.method,
        "kind": args.kind,
        "times_s": times,
        "median_s": float(np.median(times)),
        "first_call_s": first,
        "peak_rss_delta_mb": peak,
        "peak_rss_reset": reset,
        "rss_before_mb": base,
        "tracemalloc_peak_mb": trace_peak,
    }
    print("RESULT " + json.dumps(result))


def profile_omnireg(threads: int, kind: str) -> dict:
    """torch profiler summary of one omnireg warp (operators by self CPU time)."""
    C.set_threads(threads)
    import torch

    run, _ = prepare("omnireg", kind)
    run()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        run()
    avg = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in avg)
    rows = sorted(avg, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    print(f"\nomnireg {kind}: torch profile (self CPU time)")
    table = [[e.key, e.count, e.self_cpu_time_total / 1e3, 100 * e.self_cpu_time_total / total] for e in rows]
    print(C.table(["op", "calls", "self ms", "%"], table))
    return {e.key: {"calls": e.count, "self_ms": e.self_cpu_time_total / 1e3} for e in rows}


# ---------------------------------------------------------------------------------------------- driver
def run_subprocess(method: str, kind: str, repeats: int, threads: int, out: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--method", method, "--kind", kind,
           "--repeats", str(repeats), "--threads", str(threads), "--out", str(out)]
    env = dict(os.environ)
    env.update({k: str(threads) for k in C.THREAD_ENV})
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"method": method, "kind": kind, "error": (proc.stderr or proc.stdout).strip().splitlines()[-5:]}


def agreement(kind: str, outputs: dict[str, Path]) -> dict[str, float]:
    """Max abs difference of each output to omnireg's on voxels whose moving position is >= 1 voxel inside."""
    import numpy as np

    grid = make_grid()
    field = make_field(grid) if kind == "field" else None
    coords = moving_voxel_coordinates(kind, grid, make_affine(), field)
    del field
    inside = np.ones(SHAPE, dtype=bool)
    for a, s in enumerate(SHAPE):
        inside &= (coords[a] >= 1) & (coords[a] <= s - 2)
    del coords
    ref = np.load(outputs["omnireg"]) if "omnireg" in outputs else None
    diffs = {"interior_voxels": int(inside.sum())}
    if ref is None:
        return diffs
    for name, path in outputs.items():
        if name == "omnireg":
            continue
        other = np.load(path)
        diffs[name] = float(np.abs(other[inside] - ref[inside]).max())
    return diffs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="2 repeats (default)")
    mode.add_argument("--full", action="store_true", help="5 repeats")
    p.add_argument("--repeats", type=int, help="timed repeats per method (overrides --quick/--full)")
    p.add_argument("--threads", type=int, default=2, help="threads for torch, ITK, OpenMP (default 2)")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--methods", nargs="+", help="subset of omnireg, sitk, scipy, scipy-affine")
    p.add_argument("--profile", action="store_true", help="print a torch profile of the omnireg warps")
    p.add_argument("--json", type=Path, default=C.default_json("warp"))
    # worker mode (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--kind", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 5 if args.full else 2
    if args.worker:
        worker(args)
        return 0

    C.set_threads(args.threads)
    info = C.machine_info(args.threads)
    results, agree, profiles = [], {}, {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="omnireg-warp-") as tmp:
        for kind in args.kinds:
            outputs = {}
            for method in METHODS[kind]:
                if args.methods and method not in args.methods:
                    continue
                out = Path(tmp) / f"{kind}-{method}.npy"
                r = run_subprocess(method, kind, args.repeats, args.threads, out)
                results.append(r)
                if "error" in r:
                    print(f"{kind:6s} {method:12s} FAILED: {' | '.join(r['error'])}", flush=True)
                    continue
                outputs[method] = out
                print(f"{kind:6s} {method:12s} median {r['median_s']:.3f} s  peak +{r['peak_rss_delta_mb']:.0f} MiB",
                      flush=True)
            agree[kind] = agreement(kind, outputs)
            for o in outputs.values():
                o.unlink(missing_ok=True)
    if args.profile:
        for kind in args.kinds:
            profiles[kind] = profile_omnireg(args.threads, kind)

    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["kind"], r["method"], None, None, None, None, "failed"])
            continue
        diff = agree.get(r["kind"], {}).get(r["method"], 0.0 if r["method"] == "omnireg" else None)
        rows.append([r["kind"], r["method"], r["median_s"], r["first_call_s"], r["peak_rss_delta_mb"],
                     r["tracemalloc_peak_mb"], diff])
    print(f"\nWarp {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} float32, linear, {args.threads} threads, median of {args.repeats}")
    print(C.table(["transform", "method", "median s", "first s", "peak MiB", "tracemalloc MiB", "max|diff| vs omnireg"], rows))
    for kind in args.kinds:
        by = {r["method"]: r for r in results if r["kind"] == kind and "error" not in r}
        if "omnireg" in by and "sitk" in by:
            ratio = by["omnireg"]["median_s"] / by["sitk"]["median_s"]
            verdict = "omnireg faster or equal" if ratio <= 1 else "omnireg slower"
            print(f"{kind}: omnireg / SimpleITK time ratio {ratio:.2f} ({verdict})")
    data = {
        "benchmark": "warp",
        "shape": SHAPE,
        "spacing_mm": 1.0,
        "interpolation": "linear",
        "max_displacement_mm": MAX_DISPLACEMENT_MM,
        "repeats": args.repeats,
        "machine": info,
        "results": results,
        "agreement_max_abs_diff": agree,
        "profile_omnireg": profiles,
        "wall_s": time.perf_counter() - t_all,
    }
    path = C.write_json(data, args.json)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
