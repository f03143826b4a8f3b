"""Benchmark: DISA against exact LC2, NMI and MIND on multi-modal cases with a known alignment.

Datasets (fixed = contrast A, moving = contrast B of the same anatomy, aligned with A, moved by a known
transform; the moving field of view is the fixed one padded by 50 mm per side):

- ``synthetic``: the bundled T1 vs its synthetic T2w with a 20 % bias field and 2 % noise (2 mm);
- ``spm-t2`` / ``spm-pd``: SPM12 ``avg152T1`` vs ``avg152T2`` / ``avg152PD`` (real templates, 2 mm, read at
  run time from ``../shared/data``; GPL, never copied; skipped when absent). Neither was used in training.

Parts (all in one run, one JSON):

(a)/(b) **accuracy and time**: a known affine (rotations 8/-6/10 deg, translations 8/-10/6 mm, scales
    1.07/0.93/1.04) recovered by a rigid + affine registration (moments initialisation, global search) with
    each metric: DISA (the shipped 3D model; pyramid 2-1), DISA with the moving features recomputed in the
    fixed frame every 10 iterations (``reorient=10``, ``disa-reorient``), DISA followed by one full-resolution
    exact-LC2 stage of 20 iterations (``disa+lc2``, a hybrid: DISA's capture, LC2's optimum), exact LC2, NMI
    (32 bins), MIND (pyramid 2-1). Reported: mean target error over the brain, run time, and the speed-up of the
    DISA variants over LC2.
(c) **capture range**: rigid poses (rotation 0-60 deg about a world axis through the brain centre, plus a
    0-40 mm translation in a seeded random direction), one rigid stage with no initialiser and no global
    search (each metric's own basin of attraction; ``disa+lc2`` adds its rigid LC2 stage). Success: mean target
    error < 2 mm.
(d) **approximation quality**: Pearson and Spearman correlation between DISA's dot product and exact LC2 on
    patch pairs drawn (as in training) from held-out image pairs: each dataset's A/B pair.
(e) **limits** (``_disa_limits.py``): on the known-affine case of (a), where the optimum of DISA's registration
    objective, of the network's own similarity with the moving features recomputed (no interpolation) and of exact
    LC2 lies (L-BFGS over 12 affine parameters started at the truth), how sharply each falls off with a
    translation, and the speed floor (the two feature extractions every DISA registration needs at its finest
    level; LC2's registration time divided by it bounds DISA's speed-up).

Usage::

    python benchmarks/disa.py --quick     # synthetic + spm-t2; capture: S axis, 0/30/60 deg, 0/40 mm
    python benchmarks/disa.py --full      # all datasets; capture: R/A/S, 0-60 deg by 15, 0/20/40 mm

Writes ``bench-results/disa.json`` (``--json``) and ``bench-results/disa.png`` (capture range per metric).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _common as C

AXES = ("R", "A", "S")
DATASETS = ("synthetic", "spm-t2", "spm-pd")
METRICS = ("disa", "disa-stride2", "disa-reorient", "disa+lc2", "lc2", "nmi", "mind")
CAPTURE_METRICS = ("disa", "disa-reorient", "disa+lc2", "lc2", "nmi")
#: benchmark variants of a metric: (metric, options)
VARIANTS = {"disa-stride2": ("disa", {"moving_stride": 2}), "disa-reorient": ("disa", {"reorient": 10}),
            "disa+lc2": ("disa", {})}
#: hybrid variants: the metric's stages, then one full-resolution stage of an exact measure (iterations)
REFINED = {"disa+lc2": ("lc2", 20)}
SUCCESS_MM = 2.0
#: ``--disa-weights``: a DISA model file to benchmark instead of the shipped one (None: shipped)
DISA_WEIGHTS = None
TRUE_AFFINE = dict(rotation_deg=(8.0, -6.0, 10.0), translation_mm=(8.0, -10.0, 6.0), scale=(1.07, 0.93, 1.04))


def stage_setup(st, metric: str, quick: bool) -> None:
    """Metric, options and pyramid of one stage."""
    metric, options = VARIANTS.get(metric, (metric, {}))
    st.metric = metric
    st.metric_options = {"bins": 32} if metric == "nmi" else dict(options)
    if metric == "disa" and DISA_WEIGHTS:
        st.metric_options["weights"] = DISA_WEIGHTS
    if metric in ("disa", "mind"):  # (a variant's metric: disa-stride2 and disa-reorient are disa)
        # DISA resamples to its 2 mm model spacing (stride-4 features); MIND fails at >= 8 mm voxels
        st.shrink, st.iterations, st.smoothing_mm = [2, 1], [60, 30], None
    elif quick:
        st.shrink, st.iterations = [4, 2, 1], [40, 25, 15]


def refine(rc, metric: str, transform: str):
    """Append the exact-measure stage of a hybrid variant (``REFINED``): full resolution, no search."""
    from omnireg.optim import StageConfig

    if metric in REFINED:
        exact, iterations = REFINED[metric]
        rc.stages.append(StageConfig(transform=transform, metric=exact, shrink=[1], iterations=[iterations]))
    return rc


def affine_config(metric: str, quick: bool):
    from omnireg.optim import preset

    rc = preset("multimodal-affine")
    for st in rc.stages:
        stage_setup(st, metric, quick)
    return refine(rc, metric, "affine").validate()


def capture_config(metric: str, quick: bool):
    from omnireg.optim import preset

    rc = preset("rigid")
    rc.init = "none"
    st = rc.stages[0]
    stage_setup(st, metric, quick)
    st.global_search = False
    return refine(rc, metric, "rigid").validate()


def make_case(dataset, data, matrix, seed: int):
    from _cases import padded_grid
    from omnireg.training.synthetic import make_known_case

    fixed, source, _ = data
    kw = dict(bias=0.2, noise=0.02) if dataset == "synthetic" else {}
    return make_known_case(fixed, matrix=matrix, moving_source=source, moving_grid=padded_grid(fixed.grid), seed=seed, **kw)


def brain_centre(data):
    import numpy as np

    fixed, _, mask = data
    return fixed.grid.transform_points(np.argwhere(mask.numpy()).astype(np.float64).mean(0), "voxel", "world")


def run_one(case, mask, config) -> dict:
    import torch

    from omnireg.optim import register

    t0 = time.perf_counter()
    try:
        res = register(case.fixed, case.moving, config=config)
        with torch.no_grad():
            err = case.target_error(res.transform, mask=mask).numpy()
        return {"mean_mm": float(err.mean()), "max_mm": float(err.max()), "runtime_s": res.runtime_s,
                "success": float(err.mean()) < SUCCESS_MM}
    except Exception as exc:  # noqa: BLE001 - a failed registration is a result
        return {"error": f"{type(exc).__name__}: {exc}", "mean_mm": None, "success": False, "runtime_s": time.perf_counter() - t0}


def warm_up() -> None:
    """One tiny registration (global search + gradient steps) before anything is timed: the libraries that
    load on first use (torch's optimizer wrappers import sympy, the search imports nlopt; about 1 s) would
    otherwise be charged to whichever metric runs first."""
    import torch

    from omnireg.core import Grid, Image
    from omnireg.optim import preset, register

    g = torch.Generator().manual_seed(0)
    a = torch.rand((1, 20, 20, 20), generator=g)
    grid = Grid((20, 20, 20), (2.0, 2.0, 2.0))
    rc = preset("rigid")
    st = rc.stages[0]
    st.shrink, st.iterations, st.smoothing_mm, st.global_search = [1], [2], None, True
    register(Image(a, grid), Image(a.roll(1, 1), grid), config=rc.validate())


def correlation(dataset, data, n: int) -> dict:
    """(d): DISA vs exact LC2 on patch pairs of one held-out pair, sampled as in training."""
    from omnireg.networks.store import resolve_weights
    from omnireg.similarity.disa import load_disa_model
    from omnireg.training.disa import DISAPairSampler, DISATrainConfig, disa_validation
    from omnireg.training.patches import load_training_volume

    model = load_disa_model(DISA_WEIGHTS, 3)
    import torch

    meta = torch.load(resolve_weights(DISA_WEIGHTS, "disa", 3), weights_only=True)["meta"]
    tc = meta.get("train_config", {})
    size = int(tc.get("patch_size", 25))
    size += -(size - 1) % 8  # centre patches need 8 m + 1 voxels (models trained on 21 are read at 25)
    cfg = DISATrainConfig(ndim=3, patch_size=size, patch_spacing_mm=tc.get("patch_spacing_mm", 2.0),
                          batch_size=64, max_offset_mm=tc.get("max_offset_mm", 24.0))
    sampler = DISAPairSampler([(load_training_volume(data[0]), load_training_volume(data[1]))], cfg)
    return disa_validation(model, sampler, n=n, seed=2024)


def plot(capture, angles, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in capture})
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.6), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        for metric in CAPTURE_METRICS:
            rows = [r for r in capture if r["dataset"] == ds and r["metric"] == metric]
            if not rows:
                continue
            rate = [100 * sum(r["success"] for r in rows if r["angle_deg"] == a) / max(1, sum(r["angle_deg"] == a for r in rows))
                    for a in angles]
            ax.plot(angles, rate, marker="o", label=metric)
        ax.set_title(ds)
        ax.set_xlabel("initial rotation (deg)")
        ax.set_ylabel("success rate (%)")
        ax.set_ylim(-5, 105)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="synthetic + spm-t2; S axis; 0/30/60 deg; 0/40 mm")
    mode.add_argument("--full", action="store_true", help="all datasets; R/A/S; 0-60 deg by 15; 0/20/40 mm")
    p.add_argument("--datasets", nargs="+", choices=DATASETS)
    p.add_argument("--parts", nargs="+", choices=("accuracy", "capture", "correlation", "limits"),
                   default=["accuracy", "capture", "correlation", "limits"])
    p.add_argument("--metrics", nargs="+", choices=METRICS, help="metrics to run (default: all)")
    p.add_argument("--disa-weights", type=Path, help="DISA model file to benchmark (default: the shipped 3D model)")
    p.add_argument("--patches", type=int, default=1000, help="patch pairs per dataset for the correlation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=C.default_json("disa"))
    args = p.parse_args(argv)
    C.set_threads(args.threads)
    global DISA_WEIGHTS
    if args.disa_weights is not None:
        if not args.disa_weights.is_file():
            p.error(f"--disa-weights: {args.disa_weights} is not a file")
        DISA_WEIGHTS = str(args.disa_weights.resolve())
    metrics = args.metrics or list(METRICS)
    import logging

    logging.getLogger("omnireg").setLevel(logging.ERROR)
    from mad import load_dataset, pose_matrix, poses
    from omnireg.training.synthetic import affine_matrix

    quick = not args.full
    warm_up()
    datasets = args.datasets or (["synthetic", "spm-t2"] if quick else list(DATASETS))
    axes, angles, trans = (("S",), (0, 30, 60), (0, 40)) if quick else (AXES, (0, 15, 30, 45, 60), (0, 20, 40))
    out = {"machine": C.machine_info(args.threads), "quick": quick, "disa_weights": DISA_WEIGHTS or "shipped", "accuracy": [], "capture": [], "correlation": [], "limits": []}
    for ds in datasets:
        data = load_dataset(ds)
        if data is None:
            print(f"{ds}: data absent, skipped", file=sys.stderr)
            continue
        mask = data[2]
        if "correlation" in args.parts:
            rec = {"dataset": ds, **correlation(ds, data, args.patches)}
            out["correlation"].append(rec)
            prof = rec["offset_profile"]
            print(f"(d) {ds:9s} Pearson {rec['pearson']:.3f} Spearman {rec['spearman']:.3f} (n={rec['n']}); within-place "
                  f"Pearson over offsets {prof['within_pearson']:.3f}, prediction {prof['pred_mean']} vs LC2 "
                  f"{prof['teacher_mean']} at {prof['offsets_mm']} mm", flush=True)
        if "accuracy" in args.parts or "limits" in args.parts:
            case = make_case(ds, data, affine_matrix(ndim=3, center=brain_centre(data), **TRUE_AFFINE), args.seed)
        if "accuracy" in args.parts:
            for metric in [m for m in METRICS if m in metrics]:
                rec = {"dataset": ds, "metric": metric, **run_one(case, mask, affine_config(metric, quick))}
                out["accuracy"].append(rec)
                print(f"(a) {ds:9s} {metric:5s} {C.fmt(rec['mean_mm'])} mm {rec['runtime_s']:6.1f} s", flush=True)
        if "limits" in args.parts:
            from _disa_limits import limits

            lc2 = [r["runtime_s"] for r in out["accuracy"] if r["dataset"] == ds and r["metric"] == "lc2" and r.get("mean_mm") is not None]
            rec = {"dataset": ds, **limits(case, mask, brain_centre(data), weights=DISA_WEIGHTS, lc2_runtime_s=lc2[0] if lc2 else None)}
            out["limits"].append(rec)
            print(f"(e) {ds:9s} optimum from the truth: " + ", ".join(f"{k} {v['mean_mm']:.2f} mm" for k, v in rec["optimum"].items())
                  + f"; features {rec['feature_s']['fixed']:.2f} + {rec['feature_s']['moving']:.2f} s", flush=True)
        if "capture" in args.parts:
            centre = brain_centre(data)
            for pose in poses(axes, angles, trans, args.seed):
                case = make_case(ds, data, pose_matrix(pose, centre), args.seed)
                for metric in [m for m in CAPTURE_METRICS if m in metrics]:
                    rec = {"dataset": ds, "metric": metric, **{k: pose[k] for k in ("axis", "angle_deg", "translation_mm")},
                           **run_one(case, mask, capture_config(metric, quick))}
                    out["capture"].append(rec)
                    print(f"(c) {ds:9s} {pose['axis']} {pose['angle_deg']:3.0f}deg {pose['translation_mm']:3.0f}mm {metric:5s} "
                          f"{C.fmt(rec['mean_mm'])} mm {rec['runtime_s']:6.1f} s", flush=True)
        C.write_json(out, args.json)
    # ------------------------------------------------------------------ tables
    if out["accuracy"]:
        rows = []
        for ds in datasets:
            recs = {r["metric"]: r for r in out["accuracy"] if r["dataset"] == ds}
            lc2 = recs.get("lc2", {}).get("runtime_s")
            for m, r in recs.items():
                speed = lc2 / r["runtime_s"] if lc2 and m.startswith("disa") else None
                rows.append([ds, m, C.fmt(r["mean_mm"]), C.fmt(r["runtime_s"], 1), C.fmt(speed, 1)])
        print("\n(a)/(b) known affine: mean target error and time\n" + C.table(["dataset", "metric", "error mm", "time s", "x faster than lc2"], rows))
    if out["capture"]:
        rows = []
        for ds in datasets:
            for m in CAPTURE_METRICS:
                recs = [r for r in out["capture"] if r["dataset"] == ds and r["metric"] == m]
                if recs:
                    ok = [r for r in recs if r["success"]]
                    per_angle = " ".join(f"{a}:{sum(r['success'] for r in recs if r['angle_deg'] == a)}/{sum(r['angle_deg'] == a for r in recs)}" for a in angles)
                    rows.append([ds, m, f"{100 * len(ok) / len(recs):.0f}%", C.fmt(sum(r["mean_mm"] for r in ok) / len(ok) if ok else None), per_angle])
        print("\n(c) capture range (rigid, no initialiser, no search)\n" + C.table(["dataset", "metric", "success", "error mm (ok)", "per angle"], rows))
        plot(out["capture"], list(angles), args.json.with_suffix(".png"))
    if out["correlation"]:
        print("\n(d) DISA vs exact LC2 on held-out pairs\n" + C.table(
            ["dataset", "pearson", "spearman", "n", "within-place pearson", "pred 0 / 4 / 16 mm", "lc2 0 / 4 / 16 mm"],
            [[r["dataset"], C.fmt(r["pearson"]), C.fmt(r["spearman"]), r["n"], C.fmt(r["offset_profile"]["within_pearson"]),
              " / ".join(C.fmt(r["offset_profile"]["pred_mean"][i]) for i in (0, 3, 5)),
              " / ".join(C.fmt(r["offset_profile"]["teacher_mean"][i]) for i in (0, 3, 5))] for r in out["correlation"]]))
    if out["limits"]:
        rows = []
        for r in out["limits"]:
            for name, opt in r["optimum"].items():
                prof = r["profile"][name]
                rows.append([r["dataset"], name, C.fmt(opt["mean_mm"]), f"{100 * prof['drop_2mm']:.1f}%", f"{100 * prof['drop_4mm']:.1f}%",
                             " / ".join(f"{s:+g}" for s in prof["best_shift_mm"])])
        print("\n(e) limits: optimum from the truth (L-BFGS, affine) and translation profile\n" + C.table(
            ["dataset", "objective", "optimum mm", "drop at 2 mm", "drop at 4 mm", "best shift R/A/S mm"], rows))
        print(C.table(["dataset", "fixed features s", "moving features s", "lc2 registration s", "speed-up bound"],
                      [[r["dataset"], C.fmt(r["feature_s"]["fixed"]), C.fmt(r["feature_s"]["moving"]), C.fmt(r["lc2_registration_s"], 1),
                        C.fmt(r["speedup_bound"], 1)] for r in out["limits"]]))
    print(f"\nwrote {C.write_json(out, args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
