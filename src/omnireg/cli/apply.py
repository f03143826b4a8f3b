"""``omnireg apply``: warp an image with saved transforms, in the order ``antsApplyTransforms -t`` uses."""

from __future__ import annotations

import argparse
import logging

from .common import input_path, load_image_arg, output_path, transform_chain_arg
from .errors import CliError

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "apply",
        help="warp a moving image onto a reference grid with saved transforms (ANTs order)",
        description=(
            "Warp MOVING onto the grid of REFERENCE with one or more transforms. The transforms are listed "
            "as in 'antsApplyTransforms -t T1 -t T2 ...': the LAST one acts on the reference-space (fixed) points "
            "first, so a transform list copied from an ANTs command gives the same image. Accepted: ITK "
            ".tfm/.txt/.mat linear transforms, .h5 composite transforms, and displacement fields "
            "(.nii/.nii.gz/.nrrd/.mha, world mm, LPS components, fixed -> moving). Write '[FILE,1]' (as in ANTs) "
            "to use the inverse of a linear transform. --inverse applies the inverse of the whole list (moving -> fixed "
            "points): 'omnireg apply -m FIXED -r MOVING -t DIR/transform.h5 --inverse' pulls the fixed image onto the "
            "moving grid."
        ),
    )
    p.add_argument("--moving", "-m", required=True, help="image to warp")
    p.add_argument("--reference", "-r", required=True, help="image whose grid (fixed space) the output takes")
    p.add_argument("--transform", "-t", nargs="+", required=True, action="extend", metavar="T", help="transform files, ANTs order")
    p.add_argument("--out", "-o", required=True, help="output image (.nii.gz, .nrrd, .mha ...)")
    p.add_argument(
        "--interp",
        choices=["nearest", "linear", "cubic"],
        default=None,
        help="interpolation (default: linear; nearest for integer label maps)",
    )
    p.add_argument(
        "--inverse",
        action="store_true",
        help="apply the inverse of the whole transform list: uses DIR/inverse.h5 for a DIR/transform.h5 written by "
             "'omnireg register --inverse', otherwise inverts each transform (exact for linear ones, fixed-point "
             "iteration for displacement fields, with the residual logged)",
    )
    p.add_argument("--padding", choices=["zeros", "border"], default="zeros", help="value outside the moving image")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..io import save_image
    from ..transforms import resample
    from ..transforms.files import INVERSE_WARNING_MM, inverse_residual, load_inverse_chain, parse_transform_spec

    out = output_path(args.out, "--out", force=args.force)
    moving = load_image_arg(args.moving, "--moving")
    reference = load_image_arg(args.reference, "--reference")
    if moving.ndim != reference.ndim:
        raise CliError(f"--moving: expected a {reference.ndim}D image like --reference, got {moving.ndim}D")
    if moving.data.is_floating_point() and not bool(torch.isfinite(moving.data).all()):
        raise CliError("--moving: the image contains NaN or infinite values; replace them (e.g. by 0) first")
    if args.inverse:
        for spec in args.transform:
            input_path(parse_transform_spec(spec)[0], "--transform")
        transform, forward, source = load_inverse_chain(args.transform, ndim=reference.ndim)
        log.info("inverse: %s", source)
        if forward is not None:
            res = inverse_residual(forward, transform, moving_grid=reference.grid, fixed_grid=moving.grid)
            log.log(logging.WARNING if res["max"] > INVERSE_WARNING_MM else logging.INFO,
                    "inverse residual |T(T^-1(y)) - y| over %d --reference points: max %.4g mm, mean %.4g mm",
                    res["points"], res["max"], res["mean"])
    else:
        transform = transform_chain_arg(args.transform, "--transform", ndim=reference.ndim)
    interp = args.interp or ("nearest" if moving.is_label else "linear")
    warped = resample(moving, transform, onto=reference.grid, interp=interp, padding=args.padding)
    save_image(warped, out, force=args.force)
    log.info("wrote %s", out)
    return 0
