"""DeepSim (issue 19): the segmenter it rests on, and the engine's deformable registration with DeepSim vs LNCC and MI.

Data: the test subjects 16-20 of a folder written by ``scripts/prepare_synthseg.py`` (never read by training).

(a) **Segmenter**: hard Dice per named structure on the test subjects synthesised once per contrast (``t1``:
    T1-like; ``random``: a random contrast per image; no deformation, no skull stripping; in 2D the axial slices at
    30/50/70 % of the labelled range, as the trainer's validation), and on the real T1 of
    ``../shared/data/voxelmorph_test_subject`` against its own FreeSurfer segmentation (the file's identity header
    replaced by the LIA orientation it is stored in, see ``omnireg/data/sample/ATTRIBUTION.md``; in 2D the scan is
    resampled to 2 mm RAS and cut axially at 30/50/70 % of its labelled range). Structures absent from an image
    are left out of its mean.
(b) **Networks** trained with different losses at the same budget (``--network NAME=PATH``, repeated: model files
    written by ``omnireg train registration``; the command that made them is recorded in each file), run on the
    pairs of (c) as ``omnireg register --model PATH`` runs them (the affine preset's stages first, then the
    network). Columns as (c).
(c) **Engine**: the 20 ordered pairs of test subjects, per contrast (``t1``: both images T1-like; ``random``: each
    image its own random contrast), registered by the ``deformable`` preset (rigid and affine stages with NMI)
    whose SVF stage uses ``deepsim``, ``lncc`` or ``mi`` (``--metrics``; the SVF stage's other settings are the
    preset's, DeepSim on the levels ``--metric deepsim`` uses), and ``affine`` (the affine preset: those stages
    before the SVF alone). 3D: each subject in its own unaligned native
    field of view (as ``benchmarks/networks.py``); 2D: the axial slice at 50 % of the labelled range of the
    affinely aligned maps. Columns: Dice over the named structures (mean over pairs; before registration too),
    HD95 (mm), % non-positive Jacobian determinants on the fixed grid, time per pair.

Usage::

    python benchmarks/deepsim.py --ndim 2 [--segmenter seg2d.pt] [--pairs 20] [--contrasts t1,random]
        [--metrics affine,deepsim,lncc,mi] [--network NAME=PATH ...] [--skip-engine] [--threads 2] [--json out.json]

Without ``--segmenter`` the shipped ``segmenter_<ndim>d`` weights are used.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from _common import default_json, fmt, machine_info, set_threads, table, write_json

DEFAULT_DATA = Path(os.environ.get("OMNIREG_PREPARED", "/work/data_cache/synthseg_2mm"))
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "voxelmorph_test_subject"
CONTRASTS = ("t1", "random")
METRICS = ("deepsim", "lncc", "mi")
#: rows of part (c): the SVF stage's similarity, or "affine" (the affine preset: the stages before the SVF alone)
ROWS = ("affine", *METRICS)
SLICE_FRACTIONS = (0.3, 0.5, 0.7)
#: world directions (columns) of the VoxelMorph test scan's tensor axes: FreeSurfer's conformed LIA
LIA = ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0))
SEED = 2026


def _dice_per_structure(fixed, other) -> "np.ndarray":
    """Dice per named structure (NaN where absent from ``fixed``)."""
    import numpy as np

    from omnireg.training.labelmaps import NAMED_STRUCTURES

    out = []
    for v in NAMED_STRUCTURES:
        a, b = fixed == v, other == v
        out.append(float(2 * (a & b).sum() / (a.sum() + b.sum())) if a.any() else float("nan"))
    return np.array(out)


def _real_images(ndim: int):
    """The VoxelMorph test scan and its segmentation as ``[(image tensor (1,1,*S), labels (S), grid), ...]``."""
    import numpy as np
    import torch

    from omnireg.core import Grid, Image
    from omnireg.io import load_image
    from omnireg.networks.registration import frame_grid
    from omnireg.transforms import resample

    vol, seg = load_image(REAL / "test_scan_vol.nii.gz"), load_image(REAL / "test_scan_seg.nii.gz")
    grid = Grid(vol.grid.shape, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.array(LIA).T)
    vol, seg = Image(vol.data, grid), Image(seg.data, grid)
    if ndim == 3:
        return [(vol.batch().float(), seg.data.numpy().reshape(grid.shape).astype(np.int64), grid)]
    ras = frame_grid(grid, spacing_mm=2.0)
    v = resample(vol, None, onto=ras, interp="linear").data.reshape(ras.shape)
    s = resample(seg, None, onto=ras, interp="nearest").data.numpy().reshape(ras.shape).astype(np.int64)
    zs = np.nonzero((s > 0).any(axis=(0, 1)))[0]
    g2 = Grid(ras.shape[:2], (2.0, 2.0))
    out = []
    for f in SLICE_FRACTIONS:
        z = int(zs[0] + round(f * (zs[-1] - zs[0])))
        out.append((v[:, :, z][None, None].float(), s[:, :, z], g2))
    return out


def segmenter_rows(model, data: Path, ndim: int) -> tuple[list[dict], dict]:
    import numpy as np

    from omnireg.networks.segmenter import predict_labels
    from omnireg.training.labelmaps import NAMED_STRUCTURES, LabelMapSet, read_prepared_index
    from omnireg.training.segmenter import segmenter_synthesis, validate_segmenter, validation_images

    test = read_prepared_index(data)["split"]["test"]
    maps = LabelMapSet.load(data, test)
    rows, per_structure = [], {}
    for mode in CONTRASTS:
        images = validation_images(maps, segmenter_synthesis(), modes=(mode,), seed=SEED, ndim=ndim, axis=2,
                                   slice_fractions=SLICE_FRACTIONS)
        rec = validate_segmenter(model, images, model.config.labels)
        rows.append({"images": f"test 16-20 synthesised, {mode}", "n": len(images), "dice": rec["dice"],
                     "worst_structure_dice": rec["dice_worst_structure"]})
        per_structure[mode] = rec["per_structure"]
    if REAL.is_dir():
        dice = []
        for image, labels, grid in _real_images(ndim):
            pred = predict_labels(model, image, grid)[0, 0].numpy().astype(np.int64)
            dice.append(_dice_per_structure(labels, pred))
        dice = np.array(dice)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a structure in none of the slices: NaN, left out
            structs = np.nanmean(dice, axis=0)
        rows.append({"images": "VoxelMorph test scan (real T1)", "n": len(dice),
                     "dice": float(np.nanmean(np.nanmean(dice, axis=1))), "worst_structure_dice": float(np.nanmin(structs))})
        per_structure["real_t1"] = {name: round(float(v), 4) for name, v in zip(NAMED_STRUCTURES.values(), structs)
                                    if not np.isnan(v)}
    return rows, per_structure


def _engine_images(data: Path, ndim: int, contrasts: list[str], tmp: Path) -> tuple[dict, list[str]]:
    """``{(subject, contrast): (image path, labels (FreeSurfer numbers), label path, grid)}``."""
    from omnireg.training.labelmaps import read_prepared_index

    test = read_prepared_index(data)["split"]["test"]
    if ndim == 3:
        from networks import _images, _label_path, _read_labels

        labels = {s: _read_labels(_label_path(data, s)) for s in test}
        paths = _images(data, labels, contrasts, tmp)
        return {k: (p, labels[k[0]][0], lp, labels[k[0]][1]) for k, (p, lp) in paths.items()}, test
    from networks import slice_images

    labels, paths = slice_images(data, test, contrasts, tmp)
    return {k: (p, labels[k[0]][0], lp, labels[k[0]][1]) for k, (p, lp) in paths.items()}, test


def _method(row: str, weights: str | None, networks: dict):
    """The registration method of a row of (b) or (c)."""
    from omnireg.optim import preset
    from omnireg.pipeline import method_for

    if row in networks:
        return method_for(preset("affine"), model=str(networks[row]), affine=True)
    return method_for(engine_config(row, weights))


def engine_config(metric: str, weights: str | None):
    """The ``deformable`` preset with its SVF stage comparing images with ``metric`` (``affine``: the affine preset)."""
    from omnireg.optim import preset
    from omnireg.optim.presets import _learned_levels

    if metric == "affine":
        return preset("affine")
    cfg = preset("deformable")
    st = cfg.stages[-1]
    st.metric = metric
    if metric == "deepsim":
        st.metric_options = {"weights": weights} if weights else {}
        st.shrink, st.iterations, st.smoothing_mm = _learned_levels(st)
    elif metric != "lncc":
        st.metric_options = {}
    cfg.__post_init__()
    return cfg.validate()


def engine_rows(data: Path, ndim: int, contrasts: list[str], metrics: list[str], n_pairs: int, weights: str | None,
                tmp: Path, networks: dict | None = None) -> tuple[list[dict], list[dict], list]:
    import numpy as np

    from networks import _label_scores
    from omnireg.evaluation import jacobian_determinant
    from omnireg.io import load_image
    from omnireg.pipeline import run_registration
    from omnireg.transforms import resample
    from omnireg.transforms.files import load_transform

    images, subjects = _engine_images(data, ndim, contrasts, tmp)
    pairs = list(itertools.permutations(subjects, 2))[:n_pairs]
    rows, raw = [], []
    for contrast in contrasts:
        before = []
        for mov, fix in pairs:
            _, flab, _, fgrid = images[(fix, contrast)]
            mimg = load_image(images[(mov, contrast)][2])
            warped = resample(mimg, None, onto=fgrid, interp="nearest").data.numpy().reshape(fgrid.shape)
            before.append(float(np.nanmean(_dice_per_structure(flab, warped))))
        for metric in metrics:
            method = _method(metric, weights, networks or {})
            dice, hd, neg, secs = [], [], [], []
            for mov, fix in pairs:
                fpath, flab, _, fgrid = images[(fix, contrast)]
                mpath, _, mlpath, _ = images[(mov, contrast)]
                out = tmp / "out"
                t0 = time.perf_counter()
                run_registration(fpath, mpath, out, method=method, report=False, force=True)
                secs.append(time.perf_counter() - t0)
                t = load_transform(out / "transform.h5")
                warped = resample(load_image(mlpath), t, onto=fgrid, interp="nearest").data.numpy().reshape(fgrid.shape)
                d, h = _label_scores(flab, warped, fgrid.spacing)
                dice.append(float(np.nanmean(d)))
                hd.append(float(np.nanmean(h)))
                neg.append(100.0 * float((jacobian_determinant(t, fgrid) <= 0).mean()))
                raw.append({"contrast": contrast, "metric": metric, "moving": mov, "fixed": fix, "dice": dice[-1],
                            "hd95_mm": hd[-1], "neg_jac_pct": neg[-1], "time_s": secs[-1]})
                print(f"{ndim}D {contrast} {metric} {mov}->{fix}: Dice {dice[-1]:.3f} HD95 {hd[-1]:.2f} mm "
                      f"non-pos {neg[-1]:.3f}% {secs[-1]:.1f} s", flush=True)
            rows.append({"contrast": contrast, "method": metric, "pairs": len(pairs), "dice_before": float(np.mean(before)),
                         "dice": float(np.mean(dice)), "hd95_mm": float(np.nanmean(hd)), "neg_jac_pct": float(np.mean(neg)),
                         "time_s": float(np.mean(secs))})
    return rows, raw, pairs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="prepared label-map folder (prepared.json)")
    ap.add_argument("--ndim", type=int, choices=(2, 3), default=2)
    ap.add_argument("--segmenter", default=None, help="segmenter model file (default: the shipped segmenter_<ndim>d)")
    ap.add_argument("--pairs", type=int, default=20, help="how many of the 20 ordered test pairs")
    ap.add_argument("--contrasts", default="t1,random")
    ap.add_argument("--metrics", default=",".join(ROWS), help="rows of part (c): SVF-stage similarities, or affine")
    ap.add_argument("--network", action="append", default=[], metavar="NAME=PATH",
                    help="part (b): a registration network's model file, one row NAME (repeat)")
    ap.add_argument("--skip-engine", action="store_true", help="part (a) only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not (args.data / "prepared.json").is_file():
        print(f"--data: {args.data} is not a folder written by scripts/prepare_synthseg.py (run it first)", file=sys.stderr)
        return 2
    contrasts = [c.strip() for c in args.contrasts.split(",") if c.strip()]
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if set(contrasts) - set(CONTRASTS) or set(metrics) - set(ROWS):
        print(f"--contrasts/--metrics: expected some of {list(CONTRASTS)} / {list(ROWS)}", file=sys.stderr)
        return 2
    networks = {}
    for spec in args.network:
        name, _, path = spec.partition("=")
        if not name or name in ROWS or not Path(path).is_file():
            print(f"--network: expected NAME=PATH with a new NAME and an existing file, got {spec!r}", file=sys.stderr)
            return 2
        networks[name] = Path(path)
    set_threads(args.threads)
    from omnireg.networks.store import resolve_weights
    from omnireg.similarity.deepsim import load_segmenter

    try:
        model = load_segmenter(args.segmenter, args.ndim)
    except (ValueError, FileNotFoundError) as exc:
        print(f"--segmenter: {exc}", file=sys.stderr)
        return 2
    weights = str(resolve_weights(args.segmenter, "segmenter", args.ndim))
    t0 = time.perf_counter()
    seg_rows, per_structure = segmenter_rows(model, args.data, args.ndim)
    cols = ["images", "n", "dice", "worst_structure_dice"]
    print(table(cols, [[fmt(r[c]) for c in cols] for r in seg_rows]))
    eng_rows, raw, pairs = [], [], []
    if not args.skip_engine:
        with tempfile.TemporaryDirectory() as td:
            eng_rows, raw, pairs = engine_rows(args.data, args.ndim, contrasts, metrics + list(networks), args.pairs,
                                               weights, Path(td), networks)
        cols = ["contrast", "method", "pairs", "dice_before", "dice", "hd95_mm", "neg_jac_pct", "time_s"]
        print(table(cols, [[fmt(r[c]) for c in cols] for r in eng_rows]))
    path = write_json({"machine": machine_info(args.threads), "data": str(args.data), "ndim": args.ndim,
                       "segmenter": weights, "networks": {k: str(v) for k, v in networks.items()}, "segmenter_rows": seg_rows, "per_structure": per_structure,
                       "engine_rows": eng_rows, "per_pair": raw, "pairs": pairs, "total_s": time.perf_counter() - t0},
                      args.json or default_json(f"deepsim_{args.ndim}d"))
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
