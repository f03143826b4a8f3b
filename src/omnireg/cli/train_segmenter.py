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
import sys

from .common import command_line

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``omnireg train segmenter`` to ``parser``."""
    parser.add_argument("--label-maps", required=True, metavar="DIR", help="prepared label maps (folder with prepared.json)")
    parser.add_argument("--out", "-o", required=True, help="model file to write (.pt)")
    parser.add_argument("--ndim", type=int, choices=(2, 3), default=3, help="3D, or 2D slices of the 3D maps (default 3)")
    parser.add_argument("--mode", choices=("random", "t1"), default="random", help="synthesised contrasts (default random)")
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps (default 2000)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint and a model file) after this time")
    parser.add_argument("--batch-size", type=int, default=1, help="images per step, all processes together (default 1)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (default 3e-3)")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")
    parser.add_argument("--warmup", type=int, default=20, help="linear warm-up steps (default 20)")
    parser.add_argument("--ce-weight", type=float, default=0.0, help="weight of a cross-entropy term added to the soft Dice loss (default 0)")
    parser.add_argument("--val-every", type=int, default=100, help="steps between validations (0: at the end)")
    parser.add_argument("--checkpoint-every", type=int, default=25, help="steps between checkpoints (default 25)")
    parser.add_argument("--model-options", default="", help="JSON object of SegmenterConfig fields, e.g. '{\"enc_channels\": [16, 32, 64]}'")
    parser.add_argument("--synthesis-options", default="", help="JSON object of SynthesisConfig fields, e.g. '{\"strip_prob\": 0}'")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and of every batch")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")


def run(args: argparse.Namespace) -> int:
    """Train and save the segmenter; returns 0. User errors raise ValueError/FileNotFoundError (one line)."""
    import torch

    from ..training.distributed import init_distributed, shutdown_distributed
    from ..training.loop import FitConfig
    from ..training.segmenter import SegmenterTrainConfig, segmenter_synthesis, train_segmenter
    from .common import input_path, output_path
    from .common import TrainProgress
    from .train_registration import _json_dict

    label_maps = input_path(args.label_maps, "--label-maps")
    out = output_path(args.out, "--out", force=args.force or args.resume)
    if args.threads:
        torch.set_num_threads(int(args.threads))
    config = SegmenterTrainConfig(
        ndim=args.ndim, model_options=_json_dict(args.model_options, "--model-options"),
        synthesis=segmenter_synthesis(args.mode, **_json_dict(args.synthesis_options, "--synthesis-options")),
        batch_size=args.batch_size, val_every=args.val_every, ce_weight=args.ce_weight,
        fit=FitConfig(steps=args.steps, lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup,
                      seed=args.seed, checkpoint_every=args.checkpoint_every),
    )
    dist, device = init_distributed(args.device)
    progress = TrainProgress(dist.is_main and not getattr(args, "quiet", False), f"train segmenter {args.ndim}D")
    try:
        meta = train_segmenter(config, out, label_maps=label_maps, device=device, resume=args.resume,
                               max_minutes=args.max_minutes, progress=progress, dist=dist,
                               meta={"command": command_line(args)})
    finally:
        progress.close()
        shutdown_distributed(dist)
    if dist.is_main:
        v = meta.get("validation") or {}
        line = f"wrote {out}: {meta['steps_done']} steps, last loss {meta['loss_last']:.4g}"
        if v:
            modes = ", ".join(f"{k[5:]} {val:.3f}" for k, val in v.items() if k.startswith("dice_") and k != "dice_worst_structure")
            line += f"; validation Dice {v['dice']:.3f} ({modes}; worst structure {v['dice_worst_structure']:.3f})"
        if meta.get("stopped_early"):
            line += " (stopped by --max-minutes; --resume continues)"
        print(line, file=sys.stderr)
    return 0
