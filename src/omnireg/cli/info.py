"""``omnireg info IMAGE``: geometry, orientation and intensity range of an image."""

from __future__ import annotations

import argparse
import json

from .common import load_image_arg

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="show an image's geometry (shape, spacing, origin, direction in RAS), orientation code and intensity range",
        description="Show an image's grid in world RAS mm, its orientation code and its intensity range.",
    )
    p.add_argument("image", help="NIfTI, NRRD, MHA/MHD, a DICOM series folder, or a 2D PNG/TIFF")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    return str(v)


def run(args: argparse.Namespace) -> int:
    from ..io import image_info

    image = load_image_arg(args.image, "IMAGE")
    info = image_info(image)
    info = {"file": str(args.image), **info}
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {_fmt(value)}")
    return 0
