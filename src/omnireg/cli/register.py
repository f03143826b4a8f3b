"""``omnireg register FIXED MOVING --out DIR``: registration (the engine, or a network with ``--model``) with ITK outputs."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .checks import checked_config, config_names, read_config_file, read_initial_transform
from .common import input_path, preset_choices, transform_choices
from .errors import CliError
from .progress import RegistrationProgress

__all__ = ["add_parser", "run", "build_config"]

log = logging.getLogger(__name__)

def add_parser(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--preset", choices=preset_choices(), metavar="NAME", default=None,
                   help="ready configuration: %(choices)s (default: affine)")
    p.add_argument("--metric", default=None,
                   help="similarity of every stage: mse, ncc, lncc, mi, nmi, ngf, lc2, mind, or the learned disa (DISA "
                        "stages then one exact LC2 stage), disa-only, mad (rigid/affine stages only), deepsim")
    p.add_argument("--weights", default=None,
                   help="model file (or packaged name) of the learned metric (default: the weights shipped with omnireg)")
    p.add_argument("--transform", choices=transform_choices(), metavar="KIND", default=None,
                   help="final transform model: %(choices)s; earlier linear stages are added (e.g. svf = rigid, affine, svf)")
    p.add_argument("--levels", type=int, default=None, help="number of pyramid levels (shrink factors 2^(L-1) ... 1)")
    p.add_argument("--iterations", type=int, default=None, help="iterations at the finest level (coarser levels get more)")
    p.add_argument("--init", choices=["auto", "none", "geometry", "com", "moments"], default=None,
                   help="initial alignment (default auto: chosen by how the two fields of view compare; the identity "
                        "start is always scored and kept unless another start is better)")
    p.add_argument("--global-search", action=argparse.BooleanOptionalAction, default=None,
                   help="multi-start search over rotations (at most 15 degrees for partial fields of view) in the first "
                        "linear stage (default: as the preset says)")
    p.add_argument("--initial-transform", default=None, help="linear ITK transform (fixed -> moving) to start from")
    p.add_argument("--fixed-mask", default=None, help="mask on the fixed grid (non-zero = used)")
    p.add_argument("--moving-mask", default=None, help="mask on the moving grid")
    p.add_argument("--moving-labels", default=None, help="label map on the moving grid, warped with nearest neighbour")
    p.add_argument("--fixed-labels", default=None, help="label map on the fixed grid: Dice per label in result.json and the report")
    p.add_argument("--fixed-landmarks", default=None, help="landmarks of the fixed image (CSV RAS, .fcsv, .mrk.json, elastix): TRE")
    p.add_argument("--moving-landmarks", default=None, help="the corresponding landmarks of the moving image")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--inverse", action="store_true",
                   help="also write inverse.h5 (moving -> fixed) and inverse_warped.nii.gz (FIXED on the MOVING grid)")
    p.add_argument("--model", default=None, metavar="NAME|PATH",
                   help="register with a registration network (a model file, or a shipped name such as voxelmorph-diff): "
                        "the configuration's linear stages, then the network's deformation; the outputs are the same")
    p.add_argument("--no-affine", action="store_true",
                   help="with --model: skip the affine stages (the images are already affinely aligned)")
    p.add_argument("--refine", type=int, default=None, metavar="N",
                   help="with --model: N iterations of one engine deformable stage that start from the network's field")
    p.add_argument("--config", default=None, help="YAML or TOML configuration file (flags override it)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0): same seed, same result")
    p.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs in DIR")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """The RegistrationConfig from preset or config file, edited by the flags (policy:
    :func:`omnireg.optim.configure`); errors name the flag."""
    from ..optim import configure

    if args.preset and args.config:
        raise CliError("--preset and --config: give one of them (a config file may name a preset)")
    data = read_config_file(input_path(args.config, "--config")) if args.config else None
    weights = getattr(args, "weights", None)
    if weights:
        weights = str(input_path(weights, "--weights")) if Path(weights).suffix else weights
    try:
        return configure(preset=args.preset, config=data, metric=args.metric, weights=weights, transform=args.transform,
                         levels=args.levels, iterations=args.iterations, init=args.init,
                         global_search=getattr(args, "global_search", None), seed=args.seed, device=args.device)
    except ValueError as exc:
        msg = str(exc).splitlines()[0]
        option, _, rest = msg.partition(": ")
        flag = {"metric": "--metric", "weights": "--weights", "transform": "--transform", "levels": "--levels",
                "preset": "--preset", "init": "--init", "device": "--device"}.get(option)
        if flag is None or (option == "preset" and args.config):
            raise
        raise CliError(f"{flag}: {rest}") from exc


def _check_network_flags(args: argparse.Namespace) -> None:
    model, refine = getattr(args, "model", None), getattr(args, "refine", None)
    if model is None:
        for flag, given in (("--no-affine", getattr(args, "no_affine", False)), ("--refine", refine is not None)):
            if given:
                raise CliError(f"{flag}: only with --model (a registration network)")
    if refine is not None and refine < 1:
        raise CliError(f"--refine: expected a number of iterations >= 1, got {refine}")


def build_method(args: argparse.Namespace, cfg):
    """The registration method of the command line: the engine with ``cfg``, or ``--model``'s network
    (:func:`omnireg.pipeline.method_for`); errors name the flag."""
    from ..pipeline import method_for

    names = config_names(args)
    return method_for(cfg, model=args.model, affine=not args.no_affine, refine=args.refine or 0,
                      name=lambda key: names.get(key, key), model_name="--model")


def run(args: argparse.Namespace) -> int:
    from ..pipeline import run_registration

    _check_network_flags(args)
    cfg = checked_config(args, build_config)
    method = build_method(args, cfg)
    initial = read_initial_transform(args.initial_transform) if args.initial_transform else None
    progress = RegistrationProgress(enabled=not args.no_progress and not args.quiet)
    try:
        summary = run_registration(
            args.fixed,
            args.moving,
            args.out,
            method=method,
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
            inverse=args.inverse,
            arg_names={
                "out_dir": "--out", "fixed": "FIXED", "moving": "MOVING", "fixed_mask": "--fixed-mask",
                "moving_mask": "--moving-mask", "fixed_labels": "--fixed-labels", "moving_labels": "--moving-labels",
                "fixed_landmarks": "--fixed-landmarks", "moving_landmarks": "--moving-landmarks",
                "initial": "--initial-transform", **config_names(args),
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
