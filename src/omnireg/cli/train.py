"""``omnireg train disa|mad|registration|segmenter``: train the learned similarity measures, registration networks and the segmenter."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import DeferredParser, TrainProgress, command_line, input_path, output_path

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a learned similarity measure (disa, mad) or a registration network",
                       description="Train the learned similarity measures and registration networks on CPU or CUDA.")
    tsub = p.add_subparsers(dest="model", metavar="MODEL", parser_class=DeferredParser)
    tsub.required = True
    d = tsub.add_parser(
        "disa",
        help="DISA: CNN features whose dot product approximates LC2 (or MI/NMI/MIND) on patches",
        description=(
            "Train a DISA feature network from image pairs (no alignment needed). PAIRS.csv has a header with "
            "columns fixed,moving and optionally split (train/val; val rows are held out for the validation "
            "report). Writes OUT, OUT.ckpt (checkpoint, for --resume), OUT-stem.validation.json and .png "
            "(Pearson/Spearman correlation and scatter of predicted vs exact similarity on held-out pairs)."
        ),
    )
    d.add_argument("--pairs", required=True, help="CSV of image pairs (fixed,moving[,split])")
    d.add_argument("--out", "-o", required=True, help="output model file (.pt)")
    d.add_argument("--validation-pairs", default=None, help="CSV of held-out pairs (default: the split=val rows)")
    d.add_argument("--ndim", type=int, choices=[2, 3], default=3, help="2D or 3D network (2D patches may be cut from 3D volumes)")
    d.add_argument("--teacher", choices=["lc2", "mi", "nmi", "mind"], default="lc2", help="the exact patch similarity to learn")
    d.add_argument("--steps", type=int, default=1000, help="optimiser steps")
    d.add_argument("--batch-size", type=int, default=None, help="patch pairs per step (default 24 in 3D, 32 in 2D)")
    d.add_argument("--patch-size", type=int, default=None, help="patch size in voxels, 8 m + 1 (default 25 in 3D, 41 in 2D)")
    d.add_argument("--patch-spacing", type=float, default=2.0, help="patch voxel size in mm")
    d.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    d.add_argument("--group-size", type=int, default=1,
                   help="pairs per anchor patch (one centre, several offsets); must divide the batch size")
    d.add_argument("--relative-weight", type=float, default=0.0,
                   help="weight of the within-group loss (differences between a group's offsets; needs --group-size >= 2)")
    d.add_argument("--relative-norm", action="store_true",
                   help="divide each place's within-group error by the variance of its targets over the group "
                        "(small similarity changes under small shifts weigh as much as large ones)")
    d.add_argument("--crop-size", type=int, default=0,
                   help="train on whole crops of this size (4 m + 1 voxels): every interior feature node is a target "
                        "(default 0: one centre feature per patch, as published)")
    d.add_argument("--init", default=None, metavar="MODEL",
                   help="start from the weights of this DISA model file (same architecture) instead of random ones")
    d.add_argument("--seed", type=int, default=0, help="random seed (weights and batches)")
    d.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
    d.add_argument("--validation-patches", type=int, default=1000, help="held-out patch pairs in the report")
    d.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    d.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    d.add_argument("--force", action="store_true", help="overwrite an existing OUT")
    d.set_defaults(func=run)
    from . import train_mad

    m = tsub.add_parser(
        "mad",
        help="MAD: a modality-agnostic distance learned from single-modality images with random convolutions",
        description="Train a MAD distance network from single-modality images.",
        populate=train_mad.add_arguments,  # its defaults come from the training config (torch): added on use
    )
    m.set_defaults(func=train_mad.run)
    from . import train_registration

    r = tsub.add_parser(
        "registration",
        help="a registration network (voxelmorph, voxelmorph-diff, pyramid) on pairs synthesised from label maps",
        description=train_registration.__doc__.split("\n\n", 1)[1].strip(),
        populate=train_registration.add_arguments,
    )
    r.set_defaults(func=train_registration.run)
    from . import train_segmenter

    s = tsub.add_parser(
        "segmenter",
        help="the anatomy segmenter (DeepSim's features, 'omnireg segment') on images synthesised from label maps",
        description=train_segmenter.__doc__.split("\n\n", 1)[1].strip(),
    )
    train_segmenter.add_arguments(s)
    s.set_defaults(func=train_segmenter.run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..training.disa import DISATrainConfig, train_disa
    from ..training.loop import FitConfig

    pairs = input_path(args.pairs, "--pairs")
    val = input_path(args.validation_pairs, "--validation-pairs") if args.validation_pairs else None
    out = output_path(args.out, "--out", force=args.force or args.resume)
    init = input_path(args.init, "--init") if args.init else None
    if args.threads:
        torch.set_num_threads(int(args.threads))
    size = args.patch_size or (25 if args.ndim == 3 else 41)
    config = DISATrainConfig(
        ndim=args.ndim, patch_size=size, patch_spacing_mm=args.patch_spacing, batch_size=args.batch_size or (24 if args.ndim == 3 else 32),
        teacher=args.teacher, validation_patches=args.validation_patches,
        group_size=args.group_size, relative_weight=args.relative_weight, relative_norm=args.relative_norm,
        crop_size=args.crop_size,
        fit=FitConfig(steps=args.steps, lr=args.lr, seed=args.seed, checkpoint_every=args.checkpoint_every),
    )
    progress = TrainProgress(not getattr(args, "quiet", False), f"train disa {args.ndim}D")
    command = command_line(args)
    try:
        meta = train_disa(pairs, out, config=config, validation_pairs=val, resume=args.resume, progress=progress,
                          command=command, init=init)
    finally:
        progress.close()
    v = meta.get("validation") or {}
    line = f"wrote {Path(out)}: {meta['steps']} steps, loss {meta['loss_first_10pct']:.4f} -> {meta['loss_last_10pct']:.4f}"
    if v:
        line += f"; held-out Pearson {v['pearson']:.3f}, Spearman {v['spearman']:.3f} (n={v['n']})"
    print(line)
    return 0
