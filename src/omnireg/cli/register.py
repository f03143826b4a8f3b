"""``omnireg register FIXED MOVING --out DIR``: optimisation-based registration with ITK outputs."""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path

from .common import input_path
from .main import CliError

__all__ = ["add_parser", "run", "build_config"]

log = logging.getLogger(__name__)

_TRANSFORM_STAGES = {
    "translation": ["translation"],
    "rigid": ["rigid"],
    "similarity": ["rigid", "similarity"],
    "affine": ["rigid", "affine"],
    "bspline": ["rigid", "affine", "bspline"],
    "svf": ["rigid", "affine", "svf"],
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..optim import PRESETS

    p = sub.add_parser(
        "register",
        help="register MOVING to FIXED (rigid, affine, deformable; mono- or multi-modal)",
        description=(
            "Register MOVING to FIXED and write into DIR: warped.nii.gz (MOVING on the FIXED grid), transform.h5 "
            "(one ITK composite transform holding the whole fixed -> moving mapping), linear.mat and, for deformable "
            "runs, deformation.nii.gz (ITK displacement field, world mm, LPS), result.json (metrics, runtimes, "
            "configuration, and the transform files in the order for 'antsApplyTransforms -t ... -t ...'). "
            "Giving only the two files works: the default preset is chosen so that the result is good."
        ),
    )
    p.add_argument("fixed", help="fixed (reference) image")
    p.add_argument("moving", help="moving image")
    p.add_argument("--out", "-o", required=True, help="output folder (created if missing)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="ready configuration (default: affine)")
    p.add_argument("--metric", default=None,
                   help="similarity of every stage: mse, ncc, lncc, mi, nmi, ngf, lc2, mind, or the learned disa, mad, deepsim "
                        "(mad: rigid/affine stages only)")
    p.add_argument("--weights", default=None,
                   help="model file (or packaged name) of the learned metric (default: the weights shipped with omnireg)")
    p.add_argument("--transform", choices=sorted(_TRANSFORM_STAGES), default=None,
                   help="final transform model; earlier linear stages are added (e.g. bspline = rigid, affine, bspline)")
    p.add_argument("--levels", type=int, default=None, help="number of pyramid levels (shrink factors 2^(L-1) ... 1)")
    p.add_argument("--iterations", type=int, default=None, help="iterations at the finest level (coarser levels get more)")
    p.add_argument("--init", choices=["none", "geometry", "com", "moments"], default=None, help="initial alignment")
    p.add_argument("--initial-transform", default=None, help="linear ITK transform (fixed -> moving) to start from")
    p.add_argument("--fixed-mask", default=None, help="mask on the fixed grid (non-zero = used)")
    p.add_argument("--moving-mask", default=None, help="mask on the moving grid")
    p.add_argument("--moving-labels", default=None, help="label map on the moving grid, warped with nearest neighbour")
    p.add_argument("--fixed-labels", default=None, help="label map on the fixed grid: Dice per label in result.json and the report")
    p.add_argument("--fixed-landmarks", default=None, help="landmarks of the fixed image (CSV RAS, .fcsv, .mrk.json, elastix): TRE")
    p.add_argument("--moving-landmarks", default=None, help="the corresponding landmarks of the moving image")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--config", default=None, help="YAML or TOML configuration file (flags override it)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0): same seed, same result")
    p.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs in DIR")
    p.set_defaults(func=run)


#: metrics whose measure is a trained network (``--weights`` applies to them)
LEARNED_METRICS = ("disa", "mad", "deepsim")


def _learned_levels(stage) -> tuple[list, list, None]:
    """Pyramid of a stage switched to a learned metric by ``--metric``.

    DISA resamples images to its model's 2 mm patch spacing and compares stride-4 feature maps, so a
    level finer than 2 mm adds nothing: two levels (2x, 1x). DeepSim computes its features at the
    segmenter's spacing whatever the level (a coarser level only blurs its input): the same two levels.
    MAD samples its patches at its own fixed physical spacing and needs no pyramid: one level.
    """
    if stage.metric == "mad":
        return [1], [int(stage.iterations[-1]) * 2], None
    return [2, 1], [int(stage.iterations[-1]) * 2, int(stage.iterations[-1])], None


def _read_config_file(path: Path) -> dict:
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            return tomllib.loads(text)
        import yaml

        data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - parse errors of either library
        raise CliError(f"--config: cannot parse {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise CliError(f"--config: {path} does not hold a mapping of options")
    return data


def build_config(args: argparse.Namespace):
    """The RegistrationConfig from preset, config file and flags (flags win)."""
    from ..optim import PRESETS, RegistrationConfig, StageConfig, mad_stages

    if args.config:
        data = _read_config_file(input_path(args.config, "--config"))
        if "preset" in data:
            base = copy.deepcopy(PRESETS[data.pop("preset")])
            base.update(data)
            data = base
    else:
        data = copy.deepcopy(PRESETS[args.preset or "affine"])
    if args.preset and args.config:
        raise CliError("--preset and --config: give one of them (a config file may name a preset)")
    cfg = RegistrationConfig.from_dict(data)
    if args.transform:
        kinds = _TRANSFORM_STAGES[args.transform]
        template = cfg.stages[-1]
        stages = []
        for i, kind in enumerate(kinds):
            match = next((s for s in cfg.stages if s.transform == kind), None)
            if match is None:
                base = {**template.__dict__}
                if kind in ("bspline", "svf"):
                    base.update(PRESETS["deformable"]["stages"][-1])
                    base["metric"] = template.metric if template.metric not in ("mi", "nmi") else "mind"
                    base["metric_options"] = {} if base["metric"] != "lncc" else {"window": 5, "window_unit": "voxel"}
                base["transform"] = kind
                match = StageConfig(**base)
            st = copy.deepcopy(match)
            st.global_search = st.global_search or (i == 0 and kind in ("rigid", "similarity", "affine"))
            stages.append(st)
        cfg.stages = stages
    for st in cfg.stages:
        if args.metric:
            st.metric = args.metric.lower()
            st.metric_options = {} if args.metric not in ("lncc",) else {"window": 5, "window_unit": "voxel"}
            if st.metric in LEARNED_METRICS and not args.levels:
                st.shrink, st.iterations, st.smoothing_mm = _learned_levels(st)
        if st.metric in LEARNED_METRICS and getattr(args, "weights", None):
            st.metric_options = {**st.metric_options, "weights": str(input_path(args.weights, "--weights"))
                                 if Path(args.weights).suffix else args.weights}
        if args.levels:
            if args.levels < 1:
                raise CliError(f"--levels: expected >= 1, got {args.levels}")
            st.shrink = [2 ** (args.levels - 1 - i) for i in range(args.levels)]
            fine = st.iterations[-1]
            st.iterations = [fine * 2 ** (args.levels - 1 - i) for i in range(args.levels)]
            st.smoothing_mm = None
        if args.iterations is not None:
            n = len(st.shrink)
            st.iterations = [args.iterations * 2 ** (n - 1 - i) for i in range(n)]
    if args.metric and args.metric.lower() == "mad" and not args.levels:
        cfg.stages = mad_stages(cfg.stages)
    if getattr(args, "weights", None) and not any(st.metric in LEARNED_METRICS for st in cfg.stages):
        raise CliError("--weights: no stage uses a learned metric (give --metric disa, mad or deepsim)")
    bad = [st.transform for st in cfg.stages if st.metric == "mad" and st.transform in ("bspline", "svf")]
    if bad:
        raise CliError(f"--metric: mad works for rigid and affine stages only, not {bad[0]} (use disa or mind)")
    if args.init:
        cfg.init = args.init
    if args.seed is not None:
        cfg.seed = args.seed
    if args.device:
        cfg.device = args.device
    return cfg.validate()


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        self.key = None

    def __call__(self, ev) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        key = (ev.stage, ev.level)
        if ev.phase == "optimize" and key != self.key:
            self.close()
            self.key = key
            self.bar = tqdm(total=ev.max_iterations, desc=f"stage {ev.stage + 1}/{ev.n_stages} level {ev.level + 1}/{ev.n_levels}",
                            leave=False, dynamic_ncols=True)
        if self.bar is not None and ev.phase == "optimize":
            self.bar.n = ev.iteration
            self.bar.set_postfix(loss=f"{ev.loss:.4g}", refresh=False)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..batch import run_registration
    from ..io import read_transform_file

    initial = None
    if args.initial_transform:
        items = read_transform_file(input_path(args.initial_transform, "--initial-transform"))
        if len(items) != 1 or items[0][0] != "linear":
            raise CliError("--initial-transform: expected one linear transform (.mat/.tfm/.txt)")
        initial = np.asarray(items[0][1])
    cfg = build_config(args)
    progress = _Progress(enabled=not args.no_progress and not args.quiet)
    try:
        summary = run_registration(
            args.fixed,
            args.moving,
            args.out,
            cfg,
            fixed_mask=args.fixed_mask,
            moving_mask=args.moving_mask,
            fixed_labels=args.fixed_labels,
            moving_labels=args.moving_labels,
            fixed_landmarks=args.fixed_landmarks,
            moving_landmarks=args.moving_landmarks,
            initial=initial,
            callbacks=[progress],
            force=args.force,
            report=not args.no_report,
            arg_names={
                "out_dir": "--out", "fixed": "FIXED", "moving": "MOVING", "fixed_mask": "--fixed-mask",
                "moving_mask": "--moving-mask", "fixed_labels": "--fixed-labels", "moving_labels": "--moving-labels",
                "fixed_landmarks": "--fixed-landmarks", "moving_landmarks": "--moving-landmarks",
                "initial": "--initial-transform",
            },
        )
    finally:
        progress.close()
    metric = next(iter(summary["metric_after"]))
    before, after = summary["metric_before"][metric], summary["metric_after"][metric]
    line = f"{metric}: {before:.4f} -> {after:.4f}  runtime {summary['runtime_s']:.1f} s  outputs in {args.out}"
    labels = (summary.get("evaluation") or {}).get("labels")
    if labels:
        line += f"  mean Dice {labels['dice_mean_before']:.3f} -> {labels['dice_mean']:.3f}"
    landmarks = (summary.get("evaluation") or {}).get("landmarks")
    if landmarks:
        line += f"  TRE {landmarks['before']['tre_mean_mm']:.2f} -> {landmarks['after']['tre_mean_mm']:.2f} mm"
    print(line)
    return 0
