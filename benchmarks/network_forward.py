"""Benchmark: forward-pass time and peak memory of the registration networks on the CPU.

One pair of 2 mm brain-sized float32 volumes (default 91 x 109 x 91, the MNI field of view at 2 mm,
padded inside the network to 96 x 112 x 96) through ``VoxelMorph`` with its default configuration
(``voxelmorph`` and ``voxelmorph-diff``; with ``--kinds`` also the pyramid network and its ablations,
:data:`PYRAMID_KINDS`; random weights: the time does not depend on them), under
``torch.no_grad`` or ``torch.inference_mode``, with the input in the default or the channels-last memory
format. Each variant runs in its **own subprocess** with ``--threads`` threads: one untimed warm-up call,
whose peak resident memory is reported both in total (``VmHWM``: Python, torch, the model and the
pass) and above the memory held before the call (``/proc/self/clear_refs`` + ``VmHWM`` after
``malloc_trim``), then N timed calls (median wall time and median CPU time of the process, user +
system over all threads, reported: on a loaded machine the wall time grows, the CPU time much less).

Usage::

    python benchmarks/network_forward.py                 # 3 repeats, both kinds, all variants
    python benchmarks/network_forward.py --repeats 5 --kinds voxelmorph-diff --shape 96 112 96
    python benchmarks/network_forward.py --kinds pyramid pyramid-noaux pyramid-concat voxelmorph-diff --variants no_grad

Writes ``bench-results/network_forward.json`` (``--json PATH``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import _common as C

VARIANTS = {
    "no_grad": ("no_grad", False),
    "inference_mode": ("inference_mode", False),
    "no_grad+channels_last": ("no_grad", True),
}


def _cpu_s() -> float:
    """User + system CPU time of this process (all threads): the work, whatever the machine's load."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


PYRAMID_KINDS = {
    "pyramid": {},
    "pyramid-noaux": {"aux_decoder": False},
    "pyramid-concat": {"fusion": "concat"},
    "pyramid-global": {"msfb_branches": "global"},
    "pyramid-local": {"msfb_branches": "local"},
    "pyramid-fullres": {"finest_stride": 1},
}
"""Pyramid network variants (default config and the ablations of issue 18)."""


def _build(kind: str, ndim: int):
    if kind in PYRAMID_KINDS:
        from omnireg.networks.pyramid import PyramidConfig, PyramidNet

        return PyramidNet(PyramidConfig(ndim=ndim, **PYRAMID_KINDS[kind]))
    from omnireg.networks.voxelmorph import VoxelMorph, VoxelMorphConfig

    return VoxelMorph(VoxelMorphConfig.from_kind(kind, ndim=ndim))


def child(kind: str, variant: str, shape: tuple[int, ...], repeats: int, threads: int) -> dict:
    C.set_thread_env(threads)
    import torch

    torch.set_num_threads(threads)

    torch.manual_seed(0)
    net = _build(kind, len(shape)).eval()
    mode, channels_last = VARIANTS[variant]
    g = torch.Generator().manual_seed(1)
    moving, fixed = torch.rand(1, 1, *shape, generator=g), torch.rand(1, 1, *shape, generator=g)
    if channels_last:
        moving = moving.contiguous(memory_format=torch.channels_last_3d)
        fixed = fixed.contiguous(memory_format=torch.channels_last_3d)
    context = torch.no_grad if mode == "no_grad" else torch.inference_mode

    def run():
        with context():
            out = net(moving, fixed)
        return out

    C.release_free_memory()
    before = C.rss_mb()
    reset = C.reset_peak_rss()
    t0 = time.perf_counter()
    out = run()
    warm = time.perf_counter() - t0
    peak = C.peak_rss_mb()
    del out
    times, cpu = [], []
    for _ in range(repeats):
        c0, t0 = _cpu_s(), time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
        cpu.append(_cpu_s() - c0)
    times.sort()
    cpu.sort()
    return {
        "kind": kind,
        "variant": variant,
        "shape": list(shape),
        "parameters": sum(p.numel() for p in net.parameters()),
        "warmup_s": warm,
        "times_s": times,
        "median_s": times[len(times) // 2],
        "cpu_s": cpu,
        "median_cpu_s": cpu[len(cpu) // 2],
        "rss_before_mb": before,
        "peak_rss_mb": peak,
        "peak_above_before_mb": peak - before if reset else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", nargs="+", default=["voxelmorph-diff", "voxelmorph"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--shape", nargs="+", type=int, default=[91, 109, 91])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=C.default_json("network_forward"))
    ap.add_argument("--child", nargs=2, metavar=("KIND", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    shape = tuple(args.shape)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], shape, args.repeats, args.threads)))
        return
    results = []
    for kind in args.kinds:
        for variant in args.variants:
            cmd = [sys.executable, __file__, "--child", kind, variant, "--shape", *map(str, shape),
                   "--repeats", str(args.repeats), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            if proc.returncode != 0:
                raise SystemExit(f"{kind} {variant} failed:\n{proc.stderr}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rows = [
        (r["kind"], r["variant"], r["parameters"], r["median_s"], r["median_cpu_s"], r["warmup_s"], r["peak_rss_mb"],
         r["peak_above_before_mb"])
        for r in results
    ]
    print(f"input {shape} (padded inside each network), {args.threads} threads, median of {args.repeats}")
    print(C.table(["kind", "variant", "params", "forward s", "CPU s", "warm-up s", "peak RSS MiB", "pass MiB"], rows))
    C.RESULTS_DIR.mkdir(exist_ok=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": C.machine_info(args.threads), "results": results}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
