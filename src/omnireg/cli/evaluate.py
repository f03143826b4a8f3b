"""``omnireg evaluate``: label overlap, surface distances, landmark TRE and Jacobian statistics."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from types import SimpleNamespace

from .common import (
    input_path,
    label_map_arg,
    landmarks_arg,
    load_image_arg,
    output_path,
    paired_landmarks,
    transform_chain_arg,
)
from .errors import CliError

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a registration: Dice/IoU/HD95 per label, landmark TRE, Jacobian folding",
        description=(
            "Evaluate a registration in world mm and print tables. Labels: Dice, IoU, HD95 (95th percentile of the "
            "union of the two directed surface distance sets) and Hausdorff distance (as SimpleITK) per label of "
            "--fixed-labels and --warped-labels (the moving labels warped onto the fixed grid, e.g. with "
            "'omnireg apply'). Landmarks: TRE = |T(p) - q| for fixed landmarks p mapped through the transforms "
            "(ANTs order, as 'omnireg apply -t': the last one acts first) and moving landmarks q. Jacobian: "
            "det(I + du/dx) on the --reference grid with ITK's central differences; the fraction of det <= 0 "
            "(folding) and the standard deviation of log det."
        ),
    )
    g = p.add_argument_group("labels")
    g.add_argument("--fixed-labels", default=None, help="label map of the fixed image")
    g.add_argument("--warped-labels", default=None, help="moving label map warped onto the fixed grid")
    g.add_argument("--lut", default=None, help="label names: TSV/CSV 'id name' table or FreeSurfer LUT")
    g.add_argument("--labels", type=int, nargs="+", default=None, metavar="ID",
                   help="labels to evaluate (default: every non-zero label present)")
    g.add_argument("--no-distances", action="store_true", help="skip HD95 and Hausdorff (faster)")
    g = p.add_argument_group("landmarks")
    g.add_argument("--landmarks-fixed", default=None, help="landmarks in the fixed image (.csv, .fcsv, .mrk.json, elastix)")
    g.add_argument("--landmarks-moving", default=None, help="corresponding landmarks in the moving image")
    g.add_argument("--transform", "-t", nargs="+", action="extend", default=None, metavar="T",
                   help="fixed -> moving transform files, ANTs order ('[FILE,1]' for an inverse); "
                        "default: identity (the initial error)")
    g.add_argument("--lps", action="store_true", help="CSV landmark coordinates are LPS instead of RAS")
    g = p.add_argument_group("jacobian")
    g.add_argument("--jacobian-of", nargs="+", action="extend", default=None, metavar="T",
                   help="transform files (ANTs order) whose Jacobian determinant is evaluated")
    g.add_argument("--reference", "-r", default=None,
                   help="image whose grid the Jacobian is evaluated on (default: --fixed-labels)")
    g.add_argument("--mask", default=None, help="evaluate the Jacobian inside this mask (on the reference grid)")
    p.add_argument("--out", "-o", default=None, help="also write the results: FILE.json or FILE.csv")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=run)


def _read_inputs(args: argparse.Namespace, *, do_labels: bool, do_landmarks: bool, do_jacobian: bool) -> SimpleNamespace:
    """Every input of the evaluation, read and checked before anything is computed (errors name the flag)."""
    from ..evaluation import read_label_table

    got = SimpleNamespace(inputs={})
    fixed_labels = None
    if do_labels:
        fixed_labels = label_map_arg(args.fixed_labels, "--fixed-labels")
        warped_labels = label_map_arg(args.warped_labels, "--warped-labels")
        if not fixed_labels.grid.same_as(warped_labels.grid, atol=1e-4):
            raise CliError(
                f"--warped-labels: expected a label map on the grid of --fixed-labels {fixed_labels.grid!r}, got "
                f"{warped_labels.grid!r}; warp it onto the fixed grid first (omnireg apply -r FIXED_LABELS)"
            )
        got.labels = (fixed_labels, warped_labels, read_label_table(input_path(args.lut, "--lut")) if args.lut else None)
        got.inputs.update(fixed_labels=args.fixed_labels, warped_labels=args.warped_labels, lut=args.lut)
    if do_landmarks:
        system = "lps" if args.lps else None
        fixed = landmarks_arg(args.landmarks_fixed, "--landmarks-fixed", coordinate_system=system)
        moving = landmarks_arg(args.landmarks_moving, "--landmarks-moving", coordinate_system=system)
        p, q, _ = paired_landmarks(fixed, moving, "--landmarks-fixed", "--landmarks-moving")
        transform = transform_chain_arg(args.transform, "--transform", ndim=p.shape[1]) if args.transform else None
        got.landmarks = (p, q, transform)
        got.inputs.update(landmarks_fixed=args.landmarks_fixed, landmarks_moving=args.landmarks_moving,
                          transform=list(args.transform or []))
    if do_jacobian:
        if args.reference is not None:
            grid = load_image_arg(args.reference, "--reference").grid
        elif fixed_labels is not None:
            grid = fixed_labels.grid
        else:
            raise CliError("--reference: required with --jacobian-of (the grid to evaluate on) unless --fixed-labels is given")
        transform = transform_chain_arg(args.jacobian_of, "--jacobian-of", ndim=grid.ndim)
        mask = load_image_arg(args.mask, "--mask") if args.mask else None
        if mask is not None and not mask.grid.same_as(grid, atol=1e-4):
            raise CliError(f"--mask: expected a mask on the reference grid {grid!r}, got {mask.grid!r}")
        if mask is not None and not bool((mask.data != 0).any()):
            raise CliError("--mask: the mask is empty (all zero)")
        got.jacobian = (transform, grid, mask)
        got.inputs.update(jacobian_of=list(args.jacobian_of), reference=args.reference, mask=args.mask)
    return got


def run(args: argparse.Namespace) -> int:
    from ..evaluation import build_report, format_report, jacobian_statistics, label_metrics, target_registration_error
    from ..evaluation import write_report

    do_labels = args.fixed_labels is not None or args.warped_labels is not None
    do_landmarks = args.landmarks_fixed is not None or args.landmarks_moving is not None
    do_jacobian = args.jacobian_of is not None
    if not (do_labels or do_landmarks or do_jacobian):
        raise CliError("nothing to evaluate: give --fixed-labels/--warped-labels, --landmarks-fixed/--landmarks-moving "
                       "or --jacobian-of")
    if do_labels and (args.fixed_labels is None or args.warped_labels is None):
        raise CliError("--fixed-labels and --warped-labels: both are needed for label metrics")
    if do_landmarks and (args.landmarks_fixed is None or args.landmarks_moving is None):
        raise CliError("--landmarks-fixed and --landmarks-moving: both are needed for the TRE")
    if args.transform and not do_landmarks:
        raise CliError("--transform: used for the landmark TRE; give --landmarks-fixed and --landmarks-moving")
    if args.lut and not do_labels:
        raise CliError("--lut: names labels; give --fixed-labels and --warped-labels")
    out = None
    if args.out is not None:
        out = output_path(args.out, "--out", force=args.force)
        if Path(out).suffix.lower() not in (".json", ".csv"):
            raise CliError(f"--out: expected a file name ending in .json or .csv, got {out.name!r}")
    got = _read_inputs(args, do_labels=do_labels, do_landmarks=do_landmarks, do_jacobian=do_jacobian)

    sections: dict = {}
    if do_labels:
        fixed_labels, warped_labels, names = got.labels
        sections["labels"] = label_metrics(
            fixed_labels, warped_labels, labels=args.labels, names=names, distances=not args.no_distances
        )
    if do_landmarks:
        p, q, transform = got.landmarks
        set_name = Path(args.landmarks_fixed).name
        sections["landmarks"] = {set_name: target_registration_error(p, q, transform)}
        sections["initial_landmarks"] = {set_name: target_registration_error(p, q)}
    if do_jacobian:
        sections["jacobian"] = jacobian_statistics(*got.jacobian[:2], mask=got.jacobian[2])

    report = build_report(inputs=got.inputs, **sections)
    print(format_report(report))
    if out is not None:
        write_report(report, out, force=args.force)
        log.info("wrote %s", out)
    return 0
