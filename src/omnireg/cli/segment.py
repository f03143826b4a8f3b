"""``omnireg segment``: label an image's anatomy with a trained segmenter, on the image's own grid.

The image is scaled to its robust intensity range, resampled to the segmenter's frame and spacing (2 mm,
RAS axes for the shipped models) around its field of view, segmented, and the class probabilities are
interpolated back at the image's own voxel centres before the arg-max
(:func:`omnireg.networks.segmenter.predict_labels`). The output has the image's grid (shape, spacing,
origin, direction) and FreeSurfer label numbers as int16; it is written atomically. Users without
segmentations get labels for Dice in ``omnireg register --fixed-labels/--moving-labels``.
"""

from __future__ import annotations

import argparse
import sys

from .common import input_path, load_image_arg, output_path

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="label the anatomy of an image with a trained segmenter (FreeSurfer numbers)",
                       description=__doc__.split("\n\n", 1)[1].strip())
    p.add_argument("image", help="image to segment (2D or 3D, one channel)")
    p.add_argument("--model", default=None,
                   help="segmenter model file or packaged name (default: the shipped segmenter_2d / segmenter_3d)")
    p.add_argument("--out", "-o", required=True, help="label map to write (e.g. labels.nii.gz)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Segment and write; returns 0. User errors raise ValueError/FileNotFoundError (one line)."""
    import torch

    from ..core import Image
    from ..io import save_image
    from ..networks.segmenter import predict_labels
    from ..networks.store import load_model, resolve_weights

    out = output_path(args.out, "--out", force=args.force)
    image = load_image_arg(args.image, "image")
    if image.channels != 1:
        raise ValueError(f"image: expected one channel, {args.image} has {image.channels}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device: CUDA was requested but is not available")
    if args.model is not None and ("/" in args.model or args.model.endswith(".pt")):
        input_path(args.model, "--model")
    try:
        path = resolve_weights(args.model, "segmenter", image.ndim)
        model, _ = load_model(path, kind="segmenter", map_location=device)
    except ValueError as err:  # the store names its argument "weights"; here it is --model
        hint = " (no 3D segmenter is shipped yet: train one with 'omnireg train segmenter --ndim 3' and pass --model)" \
            if args.model is None and image.ndim == 3 else ""
        raise ValueError(f"--model: {str(err).removeprefix('weights: ')}{hint}") from err
    if model.config.ndim != image.ndim:
        raise ValueError(f"--model: {path} is a {model.config.ndim}D segmenter, {args.image} is {image.ndim}D")
    labels = predict_labels(model, image.batch().float(), image.grid)
    save_image(Image(labels[0], image.grid), out, force=args.force)
    found = sorted(set(labels.unique().tolist()) - {0})
    print(f"wrote {out}: {len(found)} structures on the grid of {args.image} ({'x'.join(map(str, image.grid.shape))})",
          file=sys.stderr)
    return 0
