"""``omnireg train segmenter``: train the anatomy segmenter used by DeepSim and ``omnireg segment``.

Images are synthesised from a prepared label-map folder (``--label-maps``, written by
``scripts/prepare_synthseg.py``: its ``train`` subjects train, its ``validation`` subjects give the
validation Dice per structure, its ``test`` subjects are never read), with a random contrast per image by
default (``--mode t1``: T1-like). Writes ``--out`` (the model file, rewritten at every checkpoint),
``OUT.ckpt`` (for ``--resume``) and ``<OUT stem>.log.jsonl`` (one JSON line per step and per validation).
Data parallel with ``torchrun --nproc-per-node N -m omnireg train segmenter ...`` (gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import argparse

from .common import (add_fit_arguments, add_run_arguments, command_line, fit_config_arg, json_dict_arg,
                     print_training_summary, train_with_progress)

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``omnireg train segmenter`` to ``parser``."""
    parser.add_argument("--label-maps", required=True, metavar="DIR", help="prepared label maps (folder with prepared.json)")
    parser.add_argument("--out", "-o", required=True, help="model file to write (.pt)")
    parser.add_argument("--ndim", type=int, choices=(2, 3), default=3, help="3D, or 2D slices of the 3D maps (default 3)")
    parser.add_argument("--mode", choices=("random", "t1"), default="random", help="synthesised contrasts (default random)")
    parser.add_argument("--ce-weight", type=float, default=1.0,
                        help="weight of a cross-entropy term added to the soft Dice loss (default 1; 0: Dice only, which let one class absorb the background in a 2D run)")
    parser.add_argument("--model-options", default="", help="JSON object of SegmenterConfig fields, e.g. '{\"enc_channels\": [16, 32, 64]}'")
    parser.add_argument("--synthesis-options", default="", help="JSON object of SynthesisConfig fields, e.g. '{\"strip_prob\": 0}'")
    add_fit_arguments(parser, items="images", lr=3e-3, val_every=100)
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Train and save the segmenter; returns 0. User errors raise ValueError/FileNotFoundError (one line)."""
    import torch

    from ..training.segmenter import SegmenterTrainConfig, segmenter_synthesis, train_segmenter
    from .common import input_path, output_path

    label_maps = input_path(args.label_maps, "--label-maps")
    out = output_path(args.out, "--out", force=args.force or args.resume)
    if args.threads:
        torch.set_num_threads(int(args.threads))
    config = SegmenterTrainConfig(
        ndim=args.ndim, model_options=json_dict_arg(args.model_options, "--model-options"),
        synthesis=segmenter_synthesis(args.mode, **json_dict_arg(args.synthesis_options, "--synthesis-options")),
        batch_size=args.batch_size, val_every=args.val_every, ce_weight=args.ce_weight,
        fit=fit_config_arg(args),
    )

    def train(device, dist, progress) -> dict:
        return train_segmenter(config, out, label_maps=label_maps, device=device, resume=args.resume,
                               max_minutes=args.max_minutes, progress=progress, dist=dist,
                               meta={"command": command_line(args)})

    def validation(v: dict) -> str:
        modes = ", ".join(f"{k[5:]} {val:.3f}" for k, val in v.items() if k.startswith("dice_") and k != "dice_worst_structure")
        return f"; validation Dice {v['dice']:.3f} ({modes}; worst structure {v['dice_worst_structure']:.3f})"

    dist, meta = train_with_progress(args, f"train segmenter {args.ndim}D", train)
    if dist.is_main:
        print_training_summary(out, meta, validation)
    return 0
