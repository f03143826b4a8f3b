"""Benchmark: capture range of rigid registration on the bundled 2 mm brain (known-truth cases).

Cases: fixed = the bundled T1; moving = the same anatomy moved by a known rigid transform: a rotation of
0, 15, 30, 45 or 60 degrees about one world axis (R, A or S) through the brain's centre, combined with a
translation of 0, 20 or 40 mm along a random direction (seeded per case). ``mono``: the moving image is the
T1; ``multi``: the synthetic T2w with a 20 % bias field and 2 % noise. The moving field of view is the
fixed one padded by 50 mm per side (see ``_cases.py``), so the brain never leaves it.

Registration: the ``rigid`` preset (one rigid stage, pyramid 4-2-1), with the stage's metric, the
initialiser (``config.init``: none, geometry, com, moments) and ``global_search`` varied:

* sweep ``inits``: every initialiser x global search on/off, with the modality's default metric (ncc for
  mono, mi for multi);
* sweep ``metrics``: every metric of the modality (mono: ncc; multi: mi, nmi, lc2, mind) with two
  initialisations: ``moments`` + global search (the preset) and ``none`` without search (the metric's own
  basin of attraction);
* ``cross``: every metric x every initialiser x search on/off (expensive).

The default is ``inits`` and ``metrics`` together. A registration succeeds when its mean target error over
the brain voxels (``labels > 0``) is below 2 mm. Reported per configuration: success rate, mean and median
of the per-case mean errors, success per rotation angle, and the median run time.

Usage::

    python benchmarks/capture.py --quick                 # axis S, 0/30/60 deg, 20 mm, short pyramid
    python benchmarks/capture.py --full                  # axes R, A, S; 0-60 deg; 0/20/40 mm
    python benchmarks/capture.py --full --jobs 4         # 4 worker processes x --threads each
    python benchmarks/capture.py --full --resume         # skip results already in the JSON

Writes ``bench-results/capture.json`` (``--json PATH``) after every case, so a long run can be resumed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _common as C

AXES = ("R", "A", "S")
MODALITIES = ("mono", "multi")
METRICS = {"mono": ("ncc",), "multi": ("mi", "nmi", "lc2", "mind")}
DEFAULT_METRIC = {"mono": "ncc", "multi": "mi"}
METRIC_OPTIONS = {"mi": {"bins": 32}, "nmi": {"bins": 32}}
INITS = ("none", "geometry", "com", "moments")


# ---------------------------------------------------------------------------------------------- design
def configurations(modalities, sweep: str, metrics=None, inits=None) -> list[dict]:
    """The (modality, metric, init, global_search) combinations of a sweep, without duplicates."""
    out, seen = [], set()

    def add(mod, metric, init, search):
        key = (mod, metric, init, search)
        if key not in seen:
            seen.add(key)
            out.append({"modality": mod, "metric": metric, "init": init, "global_search": search})

    for mod in modalities:
        mets = list(metrics) if metrics else list(METRICS[mod])
        ins = list(inits or INITS)
        if sweep in ("inits", "default"):
            base = DEFAULT_METRIC[mod] if not metrics else mets[0]
            for init in ins:
                for search in (False, True):
                    add(mod, base, init, search)
        if sweep in ("metrics", "default"):
            for metric in mets:
                add(mod, metric, "moments", True)
                add(mod, metric, "none", False)
        if sweep == "cross":
            for metric in mets:
                for init in ins:
                    for search in (False, True):
                        add(mod, metric, init, search)
    return out


def poses(axes, angles, translations, seed: int) -> list[dict]:
    """Rigid poses: rotation about a world axis through the brain centre, then a translation (random direction)."""
    import numpy as np

    out = []
    for axis in axes:
        for angle in angles:
            for t in translations:
                rng = np.random.default_rng([seed, AXES.index(axis), int(round(angle * 10)), int(round(t * 10))])
                v = rng.standard_normal(3)
                v /= np.linalg.norm(v)
                out.append({"axis": axis, "angle_deg": float(angle), "translation_mm": float(t), "direction": v.tolist()})
    return out


def pose_matrix(pose: dict):
    import numpy as np

    from _cases import brain_centre
    from omnireg.training.synthetic import affine_matrix

    rot = [0.0, 0.0, 0.0]
    rot[AXES.index(pose["axis"])] = pose["angle_deg"]
    t = pose["translation_mm"] * np.asarray(pose["direction"])
    return affine_matrix(ndim=3, rotation_deg=rot, translation_mm=t, center=brain_centre())


def case_key(modality: str, pose: dict) -> str:
    return f"{modality}/{pose['axis']}/{pose['angle_deg']:g}deg/{pose['translation_mm']:g}mm"


def config_key(cfg: dict) -> str:
    return f"{cfg['modality']}/{cfg['metric']}/{cfg['init']}/{'search' if cfg['global_search'] else 'nosearch'}"


def registration_config(cfg: dict, shrink, iterations):
    from omnireg.optim import preset

    rc = preset("rigid")
    rc.init = cfg["init"]
    st = rc.stages[0]
    st.metric = cfg["metric"]
    st.metric_options = dict(METRIC_OPTIONS.get(cfg["metric"], {}))
    st.global_search = bool(cfg["global_search"])
    if shrink is not None:
        st.shrink = list(shrink)
    if iterations is not None:
        st.iterations = list(iterations)
    return rc.validate()


# ---------------------------------------------------------------------------------------------- work
_INITIALISED = False


def _init_worker(threads: int) -> None:
    global _INITIALISED
    if not _INITIALISED:
        C.set_threads(threads)
        _INITIALISED = True


def run_task(task: dict) -> list[dict]:
    """Build one case and register it with every configuration of its modality (skipping ``done`` keys)."""
    _init_worker(task["threads"])
    import logging

    from _cases import SUCCESS_MM, build_case, error_stats
    from omnireg.optim import register

    logging.getLogger("omnireg").setLevel(logging.ERROR)
    mod, pose = task["modality"], task["pose"]
    case = build_case(mod, pose_matrix(pose), seed=task["seed"])
    out = []
    for cfg in task["configs"]:
        rec = {"case": case_key(mod, pose), "config": config_key(cfg), **cfg}
        rec.update({k: pose[k] for k in ("axis", "angle_deg", "translation_mm")})
        t0 = time.perf_counter()
        try:
            rc = registration_config(cfg, task["shrink"], task["iterations"])
            res = register(case.fixed, case.moving, config=rc)
            rec.update(error_stats(case, res.transform))
            rec["success"] = rec["mean_mm"] < SUCCESS_MM
            rec["runtime_s"] = res.runtime_s
        except Exception as exc:  # a failed registration is a result, not a crash of the benchmark
            rec.update({"error": f"{type(exc).__name__}: {exc}", "success": False, "mean_mm": None})
            rec["runtime_s"] = time.perf_counter() - t0
        out.append(rec)
        if task.get("verbose"):
            err = "error" if rec.get("error") else f"{rec['mean_mm']:.2f} mm"
            print(f"  {rec['case']:28s} {rec['config']:30s} {err:>10s} {rec['runtime_s']:6.1f} s", flush=True)
    return out


# ---------------------------------------------------------------------------------------------- report
def summarise(results: list[dict], angles) -> tuple[list[str], list[list]]:
    import numpy as np

    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["config"], []).append(r)
    header = ["modality", "metric", "init", "search", "n", "success %", "mean err", "median err", "median s"]
    header += [f"ok@{a:g}deg" for a in angles]
    rows = []
    for key in sorted(by, key=lambda k: tuple(k.split("/"))):
        rs = by[key]
        errs = [r["mean_mm"] for r in rs if r.get("mean_mm") is not None]
        n_ok = sum(bool(r["success"]) for r in rs)
        row = [rs[0]["modality"], rs[0]["metric"], rs[0]["init"], "on" if rs[0]["global_search"] else "off", len(rs),
               100.0 * n_ok / len(rs), float(np.mean(errs)) if errs else None, float(np.median(errs)) if errs else None,
               float(np.median([r["runtime_s"] for r in rs]))]
        for a in angles:
            sel = [r for r in rs if r["angle_deg"] == a]
            row.append(f"{sum(bool(r['success']) for r in sel)}/{len(sel)}" if sel else "-")
        rows.append(row)
    return header, rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="axis S, 0/30/60 deg, 20 mm, pyramid 4-2 with 30/15 iterations (default)")
    mode.add_argument("--full", action="store_true", help="axes R/A/S, 0-60 deg in 15 deg steps, 0/20/40 mm, the rigid preset")
    p.add_argument("--modalities", nargs="+", default=list(MODALITIES), choices=MODALITIES)
    p.add_argument("--sweep", default="default", choices=("default", "inits", "metrics", "cross"))
    p.add_argument("--metrics", nargs="+", help="override the metrics (e.g. mi nmi)")
    p.add_argument("--inits", nargs="+", choices=INITS, help="override the initialisers")
    p.add_argument("--axes", nargs="+", choices=AXES)
    p.add_argument("--angles", nargs="+", type=float)
    p.add_argument("--translations", nargs="+", type=float)
    p.add_argument("--shrink", nargs="+", type=float, help="pyramid shrink factors (default: preset, or 4 2 in --quick)")
    p.add_argument("--iterations", nargs="+", type=int, help="iterations per level (default: preset, or 30 15 in --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="threads per registration (default 2)")
    p.add_argument("--jobs", type=int, default=1, help="cases run in parallel processes (default 1)")
    p.add_argument("--resume", action="store_true", help="keep the results already in --json and skip them")
    p.add_argument("--json", type=Path, default=C.default_json("capture"))
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    full = bool(args.full)
    axes = args.axes or (list(AXES) if full else ["S"])
    angles = args.angles or ([0, 15, 30, 45, 60] if full else [0, 30, 60])
    translations = args.translations or ([0, 20, 40] if full else [20])
    shrink = args.shrink or (None if full else [4, 2])
    iterations = args.iterations or (None if full else [30, 15])
    if shrink is not None and iterations is None:
        iterations = [30] * len(shrink)

    C.set_threads(args.threads)
    configs = configurations(args.modalities, args.sweep, args.metrics, args.inits)
    pose_list = poses(axes, angles, translations, args.seed)
    results: list[dict] = []
    if args.resume and args.json.exists():
        import json

        results = json.loads(args.json.read_text()).get("results", [])
    done = {(r["case"], r["config"]) for r in results}
    tasks = []
    for mod in args.modalities:
        for pose in pose_list:
            todo = [c for c in configs if c["modality"] == mod and (case_key(mod, pose), config_key(c)) not in done]
            if todo:
                tasks.append({"modality": mod, "pose": pose, "configs": todo, "threads": args.threads, "seed": args.seed,
                              "shrink": shrink, "iterations": iterations, "verbose": not args.quiet})
    n_reg = sum(len(t["configs"]) for t in tasks)
    print(f"capture: {len(configs)} configurations, {len(pose_list)} poses per modality, {n_reg} registrations to run"
          f" ({args.jobs} job(s) x {args.threads} threads)", flush=True)
    meta = {
        "benchmark": "capture",
        "mode": "full" if full else "quick",
        "success_threshold_mm": 2.0,
        "axes": axes, "angles_deg": angles, "translations_mm": translations,
        "shrink": shrink or "preset", "iterations": iterations or "preset",
        "sweep": args.sweep, "seed": args.seed, "jobs": args.jobs,
        "configurations": configs,
        "machine": C.machine_info(args.threads),
    }
    t_all = time.perf_counter()

    def save():
        C.write_json({**meta, "wall_s": time.perf_counter() - t_all, "results": results}, args.json)

    if args.jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=C.set_thread_env, initargs=(args.threads,)) as ex:
            futures = [ex.submit(run_task, t) for t in tasks]
            for fut in as_completed(futures):
                results.extend(fut.result())
                save()
    else:
        for t in tasks:
            results.extend(run_task(t))
            save()
    save()
    header, rows = summarise(results, angles)
    print(f"\nCapture range (success: mean brain error < 2 mm), {len(pose_list)} poses per configuration")
    print(C.table(header, rows))
    failures = [r for r in results if r.get("error")]
    if failures:
        first = failures[0]
        print(f"\n{len(failures)} registration(s) raised an exception, e.g. {first['config']} on {first['case']}: {first['error']}")
    print(f"wrote {args.json} ({time.perf_counter() - t_all:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
