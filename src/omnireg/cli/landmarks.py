"""``omnireg landmarks``: fit a transform to paired landmarks and write it as ITK files."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .common import landmarks_arg, load_image_arg, paired_landmarks
from .errors import CliError

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)

MODELS = ("rigid", "similarity", "affine", "tps")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "landmarks",
        help="fit a rigid, similarity, affine or thin-plate spline transform to paired landmarks",
        description=(
            "Fit T with T(fixed landmark) = moving landmark: the fixed -> moving transform that warps the MOVING "
            "image onto the FIXED grid (apply it with 'omnireg apply -m MOVING -r FIXED -t DIR/linear.mat' or "
            "antsApplyTransforms). Landmark files: .csv (header x,y[,z] or x_ras_mm,... / x_lps,...; names from "
            "a label, id or name column; RAS unless the columns or --lps say LPS), Slicer .fcsv and .mrk.json (their "
            "own coordinate system), elastix point files (.txt/.pts; LPS). Points are paired by "
            "label when both files have matching labels, else by order. Writes into DIR: linear.mat (rigid, "
            "similarity, affine) or deformation.nii.gz (tps: ITK displacement field of the whole spline, affine "
            "part included, on the --reference grid), and result.json with the residual TRE."
        ),
    )
    p.add_argument("--fixed", required=True, help="landmarks in the fixed image")
    p.add_argument("--moving", required=True, help="corresponding landmarks in the moving image")
    p.add_argument("--model", choices=MODELS, required=True, help="transform model")
    p.add_argument("--out", "-o", required=True, help="output folder (created if missing)")
    p.add_argument("--reference", "-r", default=None,
                   help="fixed image whose grid the tps displacement field takes (required for tps); also needed "
                        "for elastix 'index' landmark files")
    p.add_argument("--regularization", type=float, default=0.0,
                   help="tps smoothing (>= 0; 0 interpolates the landmarks exactly)")
    p.add_argument("--lps", action="store_true",
                   help="coordinates of files that do not state their system (CSV) are LPS (ITK, ANTs) instead of RAS")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(func=run)


def _tre_dict(res) -> dict:
    d = res.to_dict()
    d["tre_per_point_mm"] = [float(v) for v in res.distances_mm]
    return d


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..evaluation import target_registration_error
    from ..io import staged_outputs, write_displacement_field, write_json_atomic, write_linear_transform
    from ..landmarks import ThinPlateSpline, fit_linear
    from ..transforms import DisplacementField

    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"--out: {out_dir} exists and is not a folder")
    names = ["deformation.nii.gz" if args.model == "tps" else "linear.mat", "result.json"]
    if not args.force:
        for name in names:
            if (out_dir / name).exists():
                raise CliError(f"--out: {out_dir / name} exists; use --force to overwrite it")
    if args.model == "tps" and args.reference is None:
        raise CliError("--reference: required with --model tps (the grid of the displacement field)")
    if args.regularization < 0:
        raise CliError(f"--regularization: expected a value >= 0, got {args.regularization}")
    reference = load_image_arg(args.reference, "--reference") if args.reference else None
    system = "lps" if args.lps else None
    grid = reference.grid if reference is not None else None
    fixed = landmarks_arg(args.fixed, "--fixed", coordinate_system=system, reference=grid)
    moving = landmarks_arg(args.moving, "--moving", coordinate_system=system, reference=grid)
    p, q, point_names = paired_landmarks(fixed, moving, "--fixed", "--moving")
    if grid is not None and grid.ndim != p.shape[1]:
        raise CliError(f"--reference is {grid.ndim}D but the landmarks are {p.shape[1]}D")
    log.info("%d landmark pairs", p.shape[0])

    result: dict = {
        "model": args.model,
        "convention": "T maps fixed-image world points to moving-image world points (RAS mm in this file; "
                      "ITK files in LPS); it warps the moving image onto the fixed grid",
        "fixed_landmarks": str(args.fixed),
        "moving_landmarks": str(args.moving),
        "count": int(p.shape[0]),
        "names": list(point_names) if point_names else None,
        "initial": _tre_dict(target_registration_error(p, q)),
    }
    if args.model == "tps":
        tps = ThinPlateSpline(p, q, regularization=args.regularization)
        result["regularization"] = args.regularization
        result["affine_part_ras"] = tps.affine_matrix().tolist()
        result["residual"] = _tre_dict(target_registration_error(p, q, tps))
        with torch.no_grad():
            field = tps.displacement(grid, dtype=torch.float64)
        inside = grid.transform_points(p, "world", "voxel")
        outside = np.any((inside < -0.5) | (inside > np.asarray(grid.shape) - 0.5), axis=1)
        if outside.any():
            log.warning("%d fixed landmarks lie outside the --reference grid; the field is zero there", int(outside.sum()))
        dense = DisplacementField(field, grid, learnable=False)
        result["field_residual"] = _tre_dict(target_registration_error(p, q, dense))
        result["reference"] = str(args.reference)
    else:
        matrix = fit_linear(p, q, model=args.model)
        result["matrix_ras"] = matrix.tolist()
        result["residual"] = _tre_dict(target_registration_error(p, q, matrix))
    result["transforms"] = [names[0]]
    with staged_outputs(out_dir, force=args.force, last=names[1]) as stage:  # both files or neither
        if args.model == "tps":
            write_displacement_field(field[0], grid, stage / names[0])
        else:
            write_linear_transform(matrix, stage / names[0])
        write_json_atomic(stage / names[1], result)
    path = out_dir / names[1]
    res = result["residual"]
    print(
        f"{args.model}: {p.shape[0]} landmarks, TRE before {result['initial']['tre_mean_mm']:.4g} mm (mean), "
        f"after {res['tre_mean_mm']:.4g} mm (mean), {res['tre_max_mm']:.4g} mm (max)"
    )
    if "field_residual" in result:
        print(f"dense field on the reference grid: TRE {result['field_residual']['tre_mean_mm']:.4g} mm (mean)")
    print(f"wrote {out_dir / names[0]} and {path}")
    return 0
