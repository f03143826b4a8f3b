"""Registration networks against affine only, the engine's deformable preset and ANTs SyN (issues 17 and 18).

Data: the test subjects 16-20 of a folder written by ``scripts/prepare_synthseg.py`` (their label maps at 2 mm in
their own, unaligned LIA field of view, ``native/``; never read by training). Each subject gets one synthesised
image per contrast (``omnireg.training.synthesis``, seeded by subject and contrast, no deformation): ``t1``
(T1-like, the same kind of contrast in both images) and ``random`` (every image its own random contrast, so
moving and fixed differ). The 20 ordered pairs of the five subjects are registered from scratch.

Rows (``--methods``; a network row is skipped, with the reason, when its model is missing):

* ``identity`` (no registration), ``affine`` (the ``affine`` preset), ``deformable`` (the engine's deformable
  preset for ``t1`` and ``multimodal-deformable`` for ``random``), every one through
  :func:`omnireg.pipeline.run_registration`, what ``omnireg register`` runs;
* ``syn``: ANTsPy ``SyN`` (its own affine first; ``CC`` radius 4 for ``t1``, Mattes MI for ``random``;
  ``reg_iterations`` 100-70-40; antspyx is an optional benchmark extra, never a dependency);
* ``voxelmorph``, ``voxelmorph-diff``, ``pyramid``, and ``<model>+refine`` (``--refine N`` engine iterations from
  the network's field): ``omnireg register --model`` (the engine's affine stages first). ``--model NAME=PATH``
  names the model file of a row (default: the shipped weights of that name); a NAME outside those three adds a
  row of its own (e.g. ``--model pyramid-noaux=noaux.pt --methods ...,pyramid-noaux``: ablations).

Columns: Dice over the 32 named structures (mean over pairs, and the worst structure's mean over pairs), the
mean Dice on the 10 % of pairs (at least one) that the ``affine`` row leaves most misaligned (its lowest Dice; when
``affine`` is among the methods), the network's parameter count, HD95 (mm, mean over structures and pairs), % non-positive Jacobian determinants of the whole transform on the fixed
grid, time per pair (the method's wall time, loading and writing included) and peak memory of the process
during the pair (VmHWM reset before each).

Usage::

    python benchmarks/networks.py --data /work/data_cache/synthseg_2mm [--quick] [--contrasts t1,random]
        [--methods affine,deformable,syn,voxelmorph-diff] [--model voxelmorph-diff=vmdiff_3d.pt] [--threads 2]
        [--ndim 2]

``--quick``: the first 4 pairs, ``t1`` only.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import default_json, fmt, machine_info, peak_rss_mb, release_free_memory, reset_peak_rss, set_threads, table, write_json

DEFAULT_DATA = Path(os.environ.get("OMNIREG_PREPARED", "/work/data_cache/synthseg_2mm"))
ENGINE = ("identity", "affine", "deformable")
NETWORKS = ("voxelmorph", "voxelmorph-diff", "pyramid")
CONTRASTS = ("t1", "random")


def _images(data: Path, labels: dict, contrasts: list[str], tmp: Path) -> dict:
    """``{(subject, contrast): (image path, label path)}``: one synthesised image per subject and contrast, from
    ``labels`` (``{subject: (array, grid)}``, :func:`_read_labels`)."""
    import numpy as np
    import torch

    from omnireg.core import Image
    from omnireg.io import save_image
    from omnireg.training.labelmaps import read_prepared_index, to_classes
    from omnireg.training.synthesis import SynthesisConfig, synthesize

    table = np.asarray(read_prepared_index(data)["label_values"], dtype=np.int64)
    values = torch.as_tensor(table)
    out = {}
    for s, (array, grid) in labels.items():
        classes = to_classes([array], table)
        for ci, c in enumerate(contrasts):
            g = torch.Generator().manual_seed(1000 * int(s) + ci)
            syn = synthesize(classes, values, SynthesisConfig(mode=c), [g], deform=False)
            path = tmp / f"img_{s}_{c}.nii.gz"
            save_image(Image(syn.image[0].float() * 1000.0, grid), path, force=True)
            out[(s, c)] = (path, _label_path(data, s))
    return out


def slice_images(data: Path, subjects: list[str], contrasts: list[str], tmp: Path) -> tuple[dict, dict]:
    """2D cases: ``({subject: (label array, grid)}, {(subject, contrast): (image path, label path)})`` from one
    axial slice per subject (the middle of the brain's axial extent in the aligned maps), synthesised as
    :func:`_images` does."""
    import numpy as np
    import torch

    from omnireg.core import Grid, Image
    from omnireg.io import save_image
    from omnireg.training.labelmaps import LabelMapSet
    from omnireg.training.pairs import brain_slice_range
    from omnireg.training.synthesis import SynthesisConfig, synthesize

    maps = LabelMapSet.load(data, subjects)
    lo, hi = brain_slice_range(maps.labels, 2, 0.2)
    z = lo + (hi - lo) // 2
    grid = Grid(maps.grid.shape[:2], maps.grid.spacing[:2])
    labels, images = {}, {}
    for i, s in enumerate(subjects):
        classes = maps.labels[i : i + 1, :, :, :, z]
        numbers = maps.values[classes.long()][0, 0].numpy().astype(np.int64)
        lpath = tmp / f"seg_{s}.nii.gz"
        save_image(Image(torch.as_tensor(numbers.astype(np.int16))[None], grid), lpath, force=True)
        labels[s] = (numbers, grid)
        for ci, c in enumerate(contrasts):
            g = torch.Generator().manual_seed(1000 * int(s) + ci)
            syn = synthesize(classes, maps.values, SynthesisConfig(mode=c), [g], deform=False)
            path = tmp / f"img_{s}_{c}.nii.gz"
            save_image(Image(syn.image[0].float() * 1000.0, grid), path, force=True)
            images[(s, c)] = (path, lpath)
    return labels, images


def _label_path(data: Path, subject: str) -> Path:
    return data / "native" / f"seg_{subject}.nii.gz"


def _label_scores(fixed: "np.ndarray", warped: "np.ndarray", spacing) -> tuple[list[float], list[float]]:
    """Dice and HD95 per named structure (NaN where the structure is absent from the fixed map)."""
    import numpy as np

    from omnireg.evaluation import hd95
    from omnireg.training.labelmaps import NAMED_STRUCTURES

    dice, hd = [], []
    for v in NAMED_STRUCTURES:
        a, b = fixed == v, warped == v
        if not a.any():
            dice.append(float("nan"))
            hd.append(float("nan"))
            continue
        dice.append(float(2 * (a & b).sum() / (a.sum() + b.sum())))
        hd.append(hd95(a, b, spacing) if b.any() else float("nan"))
    return dice, hd


def _read_labels(path: Path):
    """A label map as ``(int64 array, grid)``."""
    import numpy as np

    from omnireg.io import load_image

    img = load_image(path)
    return img.data.numpy().reshape(img.grid.shape).astype(np.int64), img.grid


def _omnireg_pair(method: str, fixed, moving, fgrid, mlab, out: Path, contrast: str, models: dict, refine: int):
    """Run one omnireg row; returns (warped moving labels on the fixed grid, % non-positive det., seconds)."""
    from omnireg.evaluation import jacobian_determinant
    from omnireg.io import load_image
    from omnireg.optim import preset
    from omnireg.pipeline import method_for, run_registration
    from omnireg.transforms import resample
    from omnireg.transforms.files import load_transform

    mimg = load_image(mlab)
    if method == "identity":
        return resample(mimg, None, onto=fgrid, interp="nearest").data.numpy().reshape(fgrid.shape), 0.0, 0.0
    base = method.split("+")[0]
    if base in models:
        m = method_for(preset("affine"), model=str(models[base]), affine=True,
                       refine=refine if method.endswith("+refine") else 0)
        kw = {"method": m}
    else:
        name = method if method == "affine" else ("deformable" if contrast == "t1" else "multimodal-deformable")
        kw = {"config": preset(name)}
    t0 = time.perf_counter()
    run_registration(fixed, moving, out, report=False, force=True, **kw)
    seconds = time.perf_counter() - t0
    t = load_transform(out / "transform.h5")
    warped = resample(mimg, t, onto=fgrid, interp="nearest").data.numpy().reshape(fgrid.shape)
    return warped, 100.0 * float((jacobian_determinant(t, fgrid) <= 0).mean()), seconds


def _syn_pair(fixed, moving, flab, mlab, contrast: str, settings: dict):
    import ants
    import numpy as np

    f, m = ants.image_read(str(fixed)), ants.image_read(str(moving))
    kw = dict(type_of_transform="SyN", syn_metric="CC" if contrast == "t1" else "mattes",
              syn_sampling=4 if contrast == "t1" else 32, aff_metric="mattes", reg_iterations=(100, 70, 40))
    settings.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()})
    t0 = time.perf_counter()
    tx = ants.registration(f, m, **kw)
    seconds = time.perf_counter() - t0
    fl, ml = ants.image_read(str(flab)), ants.image_read(str(mlab))
    warped = ants.apply_transforms(fl, ml, transformlist=tx["fwdtransforms"], interpolator="genericLabel").numpy()
    jac = ants.create_jacobian_determinant_image(f, tx["fwdtransforms"][0], do_log=False).numpy()
    return np.rint(warped).astype(np.int64), 100.0 * float((jac <= 0).mean()), seconds


def _hard_pairs(rows: list[dict], raw: list[dict]) -> None:
    """Add ``dice_hard`` to ``rows``: the mean Dice on the 10 % of pairs (at least one) with the lowest Dice after
    the ``affine`` row, per contrast (nothing when ``affine`` did not run)."""
    import numpy as np

    for contrast in {r["contrast"] for r in rows}:
        aff = sorted((r["dice_mean"], r["moving"], r["fixed"]) for r in raw
                     if r["contrast"] == contrast and r["method"] == "affine")
        if not aff:
            continue
        hard = {(m, f) for _, m, f in aff[: max(1, len(aff) // 10)]}
        for row in rows:
            if row["contrast"] == contrast:
                vals = [r["dice_mean"] for r in raw if r["contrast"] == contrast and r["method"] == row["method"]
                        and (r["moving"], r["fixed"]) in hard]
                row["dice_hard"] = float(np.mean(vals)) if vals else None
                row["hard_pairs"] = sorted(hard)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="prepared label-map folder (prepared.json, native/)")
    ap.add_argument("--quick", action="store_true", help="the first 4 pairs, t1 only")
    ap.add_argument("--pairs", type=int, default=20, help="how many of the 20 ordered test pairs")
    ap.add_argument("--contrasts", default="t1,random")
    ap.add_argument("--methods", default="identity,affine,deformable,syn,voxelmorph,voxelmorph-diff,voxelmorph-diff+refine")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="model file of a network row")
    ap.add_argument("--refine", type=int, default=30, help="engine iterations of the +refine rows")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ndim", type=int, choices=(2, 3), default=3, help="3D volumes, or one axial slice per subject")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not (args.data / "prepared.json").is_file() or not (args.data / "native").is_dir():
        print(f"--data: {args.data} is not a folder written by scripts/prepare_synthseg.py (run it first)", file=sys.stderr)
        return 2
    set_threads(args.threads)
    import numpy as np

    from omnireg.networks.store import packaged_weights
    from omnireg.training.labelmaps import NAMED_STRUCTURES, read_prepared_index

    contrasts = ["t1"] if args.quick else [c.strip() for c in args.contrasts.split(",") if c.strip()]
    bad = [c for c in contrasts if c not in CONTRASTS]
    if bad:
        print(f"--contrasts: unknown {bad}; expected some of {list(CONTRASTS)}", file=sys.stderr)
        return 2
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    models, skipped = {}, {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        if not name or "+" in name or name in ENGINE or name == "syn" or not Path(path).is_file():
            print(f"--model: expected NAME=PATH with a new row name or one of {list(NETWORKS)} and an existing file, "
                  f"got {spec!r}", file=sys.stderr)
            return 2
        models[name] = Path(path)
    for m in methods:
        base = m.split("+")[0]
        if base in NETWORKS and base not in models:
            try:
                models[base] = packaged_weights(f"{base}_{args.ndim}d")
            except ValueError as exc:
                skipped[m] = str(exc)
        elif base not in models and base not in ENGINE and base != "syn":
            print(f"--methods: unknown {m!r}", file=sys.stderr)
            return 2
    if "syn" in methods:
        try:
            import ants  # noqa: F401
        except ImportError:
            skipped["syn"] = "antspyx is not installed (pip install antspyx)"
    methods = [m for m in methods if m not in skipped]
    subjects = read_prepared_index(args.data)["split"]["test"]
    pairs = [(a, b) for a, b in itertools.permutations(subjects, 2)][: 4 if args.quick else args.pairs]
    names = list(NAMED_STRUCTURES.values())
    rows, raw = [], []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        if args.ndim == 3:
            labels = {s: _read_labels(_label_path(args.data, s)) for s in subjects}
            images = _images(args.data, labels, contrasts, tmp)
        else:
            labels, images = slice_images(args.data, subjects, contrasts, tmp)
        for contrast in contrasts:
            for method in methods:
                dice, hd, neg, secs, peaks, settings = [], [], [], [], [], {}
                for mov, fix in pairs:
                    (fi, fl), (mi, ml) = images[(fix, contrast)], images[(mov, contrast)]
                    flab, fgrid = labels[fix]
                    release_free_memory()
                    reset_peak_rss()
                    if method == "syn":
                        warped, n, s = _syn_pair(fi, mi, fl, ml, contrast, settings)
                    else:
                        warped, n, s = _omnireg_pair(method, fi, mi, fgrid, ml, tmp / "out", contrast, models,
                                                     args.refine)
                    peaks.append(peak_rss_mb())
                    d, h = _label_scores(flab, warped, fgrid.spacing)
                    dice.append(d)
                    hd.append(h)
                    neg.append(n)
                    secs.append(s)
                    raw.append({"contrast": contrast, "method": method, "moving": mov, "fixed": fix,
                                "dice_mean": float(np.nanmean(d)), "hd95_mean": float(np.nanmean(h)), "neg_jac_pct": n,
                                "time_s": s, "peak_rss_mb": peaks[-1]})
                    print(f"{contrast} {method} {mov}->{fix}: Dice {np.nanmean(d):.3f} HD95 {np.nanmean(h):.2f} mm "
                          f"non-pos {n:.3f}% {s:.1f} s", flush=True)
                base = method.split("+")[0]
                params = None
                if base in models:
                    from omnireg.networks.store import load_model

                    params = sum(p.numel() for p in load_model(models[base])[0].parameters())
                per_struct = np.nanmean(np.array(dice), axis=0)
                worst = int(np.nanargmin(per_struct))
                rows.append({"contrast": contrast, "method": method, "pairs": len(pairs),
                             "dice": float(np.nanmean(np.nanmean(np.array(dice), axis=1))),
                             "worst_structure": names[worst], "worst_dice": float(per_struct[worst]),
                             "hd95_mm": float(np.nanmean(np.array(hd))), "neg_jac_pct": float(np.mean(neg)),
                             "time_s": float(np.mean(secs)), "peak_rss_mb": float(np.max(peaks)), "params": params,
                             "model": str(models[base]) if base in models else None, "settings": settings or None})
    _hard_pairs(rows, raw)
    cols = ["contrast", "method", "pairs", "dice", "dice_hard", "worst_structure", "worst_dice", "hd95_mm", "neg_jac_pct",
            "params", "time_s", "peak_rss_mb"]
    print(table(cols, [[fmt(r.get(c)) if r.get(c) is not None else "-" for c in cols] for r in rows]))
    for m, why in skipped.items():
        print(f"skipped {m}: {why}")
    path = write_json({
        "machine": machine_info(args.threads, extra_packages=("antspyx",)), "data": str(args.data), "ndim": args.ndim,
        "pairs": pairs, "contrasts": contrasts, "refine_iterations": args.refine, "rows": rows, "per_pair": raw,
        "skipped": skipped}, args.json or default_json("networks" if args.ndim == 3 else "networks_2d"))
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
