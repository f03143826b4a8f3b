"""Benchmark: capture range and accuracy of MAD against NMI and NGF (and DISA when available), rigid 3D.

Cases (known truth): fixed image A, moving image = a second contrast B of the same anatomy (aligned with A)
moved by a known rigid transform: a rotation of 0-60 degrees about one world axis through the brain's centre,
combined with a translation of 0-40 mm along a random (seeded) direction. The moving field of view is the
fixed one padded by 50 mm per side (``_cases.padded_grid``) so the anatomy never leaves it.

- ``synthetic``: the bundled T1 vs its synthetic T2w with a 20 % bias field and 2 % noise (``_cases``).
- ``spm-t2`` / ``spm-pd``: real multi-modal templates with an exact alignment: SPM12 ``avg152T1`` vs
  ``avg152T2`` / ``avg152PD`` (2 mm), read at run time from ``../shared/data/spm12_templates_2mm`` (GPL-2.0;
  never copied; skipped when absent). Errors over the voxels where the T1 exceeds 20 % of its range.

Registration: rigid, no initialiser (``init = none``) and no global search, so that the metric's own basin
of attraction is measured (``--search`` adds runs with ``moments`` + global search). NMI (32 bins) and NGF
use the rigid preset's pyramid (4-2-1, one stage); MAD (64 patches) runs ``omnireg register --metric mad``'s
schedule (``omnireg.optim.mad_stages``): a capture stage with patches at ``--mad-coarse`` (default 2) times
the model's spacing (``patch_scale``, see ``omnireg.similarity.mad``) on a 2x level smoothed by
``1.2 * patch_scale`` mm, the stage at the model's spacing, and a refinement with 256 patches at ``--mad-fine``
(default 0.5) times the model's spacing (``--mad-coarse 0 --mad-fine 0``: the model's spacing alone, the
paper's claim that no multi-resolution scheme is needed). Success: mean target error below 2 mm. Reported per
dataset and metric: success rate, mean/median error of the successful cases (accuracy at convergence),
successes per angle and per translation, and the median run time.

Usage::

    python benchmarks/mad.py --quick      # S axis; 0/30/60 deg; 0/40 mm; synthetic + spm-t2
    python benchmarks/mad.py --full       # R/A/S; 0-60 deg by 15; 0/20/40 mm; all datasets

Writes ``bench-results/mad.json`` (``--json``) after every case and ``bench-results/mad.png`` (success rate
against angle and translation per metric). Timings depend on the machine and on its load (recorded).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _common as C
from capture import poses  # noqa: F401 - the same seeded rigid poses as capture.py (also used by disa.py)

AXES = ("R", "A", "S")
DATASETS = ("synthetic", "spm-t2", "spm-pd")
METRIC_OPTIONS = {"nmi": {"bins": 32}, "mad": {"n_patches": 64}}
SUCCESS_MM = 2.0
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def available_metrics(requested) -> list[str]:
    from omnireg.similarity import available_similarities

    names = list(requested or ["mad", "nmi", "ngf", "disa"])
    out = []
    for m in names:
        if m == "disa":
            try:
                from omnireg.networks.store import packaged_weights

                packaged_weights("disa_3d")
                import omnireg.similarity.disa  # noqa: F401
            except Exception:  # noqa: BLE001 - DISA not (yet) available: skip it
                continue
        if m in available_similarities() or m == "disa":
            out.append(m)
    return out


def load_dataset(name: str):
    """``(fixed, moving_source, brain mask (*S) bool)`` of a dataset, or ``None`` when its files are absent."""
    import torch

    from omnireg.io import load_image

    if name == "synthetic":
        from _cases import brain_mask, sample_images

        t1, t2, _ = sample_images()
        return t1, t2, brain_mask()
    spm = SHARED / "spm12_templates_2mm"
    other = {"spm-t2": "canonical_avg152T2.nii.gz", "spm-pd": "canonical_avg152PD.nii.gz"}[name]
    if not (spm / other).is_file():
        return None
    t1 = load_image(spm / "canonical_avg152T1.nii.gz")
    b = load_image(spm / other)
    d = t1.data[0].float()
    mask = d > d.min() + 0.2 * (torch.quantile(d.reshape(-1)[::7], 0.99) - d.min())
    return t1, b, mask


def pose_matrix(pose: dict, centre):
    import numpy as np

    from omnireg.training.synthetic import affine_matrix

    rot = [0.0, 0.0, 0.0]
    rot[AXES.index(pose["axis"])] = pose["angle_deg"]
    return affine_matrix(ndim=3, rotation_deg=rot, translation_mm=pose["translation_mm"] * np.asarray(pose["direction"]),
                         center=centre)


def registration_config(metric: str, search: bool, quick: bool, mad_coarse: float = 2.0, mad_fine: float = 0.5):
    from omnireg.optim import mad_stages, preset

    rc = preset("rigid")
    st = rc.stages[0]
    st.metric = metric
    st.metric_options = dict(METRIC_OPTIONS.get(metric, {}))
    rc.init = "moments" if search else "none"
    st.global_search = bool(search)
    if metric == "mad":
        # omnireg register's MAD schedule (omnireg.optim.mad_stages): capture stage, this one, refinement
        st.shrink, st.iterations, st.smoothing_mm = [1], [80 if quick else 120], None
        rc.stages = mad_stages(rc.stages, coarse_scale=mad_coarse, fine_scale=mad_fine,
                               coarse_iterations=40 if quick else 60, fine_iterations=40)
    elif quick:
        st.shrink, st.iterations = [4, 2], [30, 15]
    return rc.validate()


def run_case(dataset, data, pose, metrics, search_modes, seed, quick, verbose, mad_coarse=2.0, mad_fine=0.5) -> list[dict]:
    import logging

    import numpy as np
    import torch

    from _cases import padded_grid
    from omnireg.optim import register
    from omnireg.training.synthetic import make_known_case

    logging.getLogger("omnireg").setLevel(logging.ERROR)
    fixed, source, mask = data
    idx = np.argwhere(mask.numpy()).astype(np.float64)
    centre = fixed.grid.transform_points(idx.mean(0), "voxel", "world")
    kw = dict(bias=0.2, noise=0.02) if dataset == "synthetic" else {}
    case = make_known_case(fixed, matrix=pose_matrix(pose, centre), moving_source=source,
                           moving_grid=padded_grid(fixed.grid), seed=seed, **kw)
    out = []
    for metric in metrics:
        for search in search_modes:
            rec = {"dataset": dataset, "metric": metric, "search": search, **{k: pose[k] for k in ("axis", "angle_deg", "translation_mm")}}
            t0 = time.perf_counter()
            try:
                res = register(case.fixed, case.moving, config=registration_config(metric, search, quick, mad_coarse, mad_fine))
                with torch.no_grad():
                    err = case.target_error(res.transform, mask=mask).numpy()
                rec.update(mean_mm=float(err.mean()), max_mm=float(err.max()), runtime_s=res.runtime_s)
                rec["success"] = rec["mean_mm"] < SUCCESS_MM
            except Exception as exc:  # noqa: BLE001 - a failed registration is a result
                rec.update(error=f"{type(exc).__name__}: {exc}", success=False, mean_mm=None, runtime_s=time.perf_counter() - t0)
            out.append(rec)
            if verbose:
                e = "error" if rec.get("error") else f"{rec['mean_mm']:.2f} mm"
                print(f"  {dataset:9s} {pose['axis']} {pose['angle_deg']:4.0f}deg {pose['translation_mm']:4.0f}mm "
                      f"{metric:5s} {'search' if search else 'local':6s} {e:>10s} {rec['runtime_s']:6.1f} s", flush=True)
    return out


def summarise(results, angles, translations):
    import numpy as np

    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["dataset"], r["metric"], r["search"]), []).append(r)
    header = ["dataset", "metric", "mode", "n", "success %", "mean err ok", "median err ok", "median s"]
    header += [f"ok@{a:g}deg" for a in angles] + [f"ok@{t:g}mm" for t in translations]
    rows = []
    for key in sorted(groups):
        rs = groups[key]
        ok = [r["mean_mm"] for r in rs if r["success"]]
        row = [key[0], key[1], "search" if key[2] else "local", len(rs), 100.0 * len(ok) / len(rs),
               float(np.mean(ok)) if ok else None, float(np.median(ok)) if ok else None,
               float(np.median([r["runtime_s"] for r in rs]))]
        for a in angles:
            sel = [r for r in rs if r["angle_deg"] == a]
            row.append(f"{sum(r['success'] for r in sel)}/{len(sel)}")
        for t in translations:
            sel = [r for r in rs if r["translation_mm"] == t]
            row.append(f"{sum(r['success'] for r in sel)}/{len(sel)}")
        rows.append(row)
    return header, rows


def plot(results, angles, translations, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 2, figsize=(10, 4))
    keys = sorted({(r["dataset"], r["metric"], r["search"]) for r in results})
    for key in keys:
        rs = [r for r in results if (r["dataset"], r["metric"], r["search"]) == key]
        label = f"{key[1]} / {key[0]}{' +search' if key[2] else ''}"
        axs[0].plot(angles, [100 * sum(r["success"] for r in rs if r["angle_deg"] == a) / max(1, sum(r["angle_deg"] == a for r in rs)) for a in angles], "o-", label=label)
        axs[1].plot(translations, [100 * sum(r["success"] for r in rs if r["translation_mm"] == t) / max(1, sum(r["translation_mm"] == t for r in rs)) for t in translations], "o-", label=label)
    axs[0].set_xlabel("initial rotation (deg)")
    axs[1].set_xlabel("initial translation (mm)")
    for ax in axs:
        ax.set_ylabel("success rate (%) (mean error < 2 mm)")
        ax.set_ylim(-5, 105)
    axs[1].legend(fontsize=7)
    fig.suptitle("Capture range: MAD vs classical measures (rigid, no initialisation)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="S axis, 0/30/60 deg, 0/40 mm, synthetic + spm-t2 (default)")
    mode.add_argument("--full", action="store_true", help="R/A/S, 0-60 deg by 15, 0/20/40 mm, all datasets")
    p.add_argument("--datasets", nargs="+", choices=DATASETS)
    p.add_argument("--metrics", nargs="+", help="default: mad nmi ngf (+ disa when its weights exist)")
    p.add_argument("--axes", nargs="+", choices=AXES)
    p.add_argument("--angles", nargs="+", type=float)
    p.add_argument("--translations", nargs="+", type=float)
    p.add_argument("--search", action="store_true", help="also run with moments + global search")
    p.add_argument("--mad-options", default=None,
                   help="JSON of MAD similarity options replacing the defaults, e.g. '{\"weights\": \"/tmp/m.pt\"}'")
    p.add_argument("--mad-coarse", type=float, default=2.0,
                   help="MAD: a coarse stage first with patches at this multiple of the model's spacing (default 2; 0: none)")
    p.add_argument("--mad-fine", type=float, default=0.5,
                   help="MAD: a last stage with patches at this multiple of the model's spacing (default 0.5; 0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=C.default_json("mad"))
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    full = bool(args.full)
    axes = args.axes or (list(AXES) if full else ["S"])
    angles = args.angles or ([0, 15, 30, 45, 60] if full else [0, 30, 60])
    translations = args.translations or ([0, 20, 40] if full else [0, 40])
    datasets = args.datasets or (list(DATASETS) if full else ["synthetic", "spm-t2"])
    if args.mad_options:
        import json

        METRIC_OPTIONS["mad"] = {**METRIC_OPTIONS["mad"], **json.loads(args.mad_options)}
    C.set_threads(args.threads)
    metrics = available_metrics(args.metrics)
    search_modes = [False, True] if args.search else [False]
    pose_list = poses(axes, angles, translations, args.seed)
    meta = {"benchmark": "mad", "mode": "full" if full else "quick", "success_threshold_mm": SUCCESS_MM,
            "datasets": datasets, "metrics": metrics, "axes": axes, "angles_deg": angles, "translations_mm": translations,
            "search": args.search, "seed": args.seed, "mad_coarse": args.mad_coarse, "mad_fine": args.mad_fine, "metric_options": METRIC_OPTIONS, "machine": C.machine_info(args.threads)}
    results: list[dict] = []
    t_all = time.perf_counter()
    print(f"mad benchmark: {len(datasets)} datasets x {len(pose_list)} poses x {len(metrics)} metrics x {len(search_modes)} mode(s)", flush=True)
    for ds in datasets:
        data = load_dataset(ds)
        if data is None:
            print(f"  {ds}: data not found under {SHARED}, skipped", flush=True)
            continue
        for pose in pose_list:
            results.extend(run_case(ds, data, pose, metrics, search_modes, args.seed, not full, not args.quiet, args.mad_coarse, args.mad_fine))
            C.write_json({**meta, "wall_s": time.perf_counter() - t_all, "results": results}, args.json)
    header, rows = summarise(results, angles, translations)
    print(f"\nSuccess: mean target error < {SUCCESS_MM} mm; 'err ok' over successful cases (accuracy at convergence)")
    print(C.table(header, rows))
    png = args.json.with_suffix(".png")
    plot(results, angles, translations, png)
    print(f"wrote {args.json} and {png} ({time.perf_counter() - t_all:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
