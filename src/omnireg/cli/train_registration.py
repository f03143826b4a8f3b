"""``omnireg train registration``: train a registration network (VoxelMorph, VoxelMorph-diff, ...).

Training pairs are synthesised from a prepared label-map folder (``--label-maps``, written by
``scripts/prepare_synthseg.py``: its ``train`` subjects train, its ``validation`` subjects give the
validation Dice, its ``test`` subjects are never read) or taken from real images (``--images``).
Writes ``--out`` (the model file, rewritten at every checkpoint), ``OUT.ckpt`` (for ``--resume``) and
``<OUT stem>.log.jsonl`` (one JSON line per step and per validation). Data parallel with
``torchrun --nproc-per-node N -m omnireg train registration ...`` (gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .common import (add_fit_arguments, add_run_arguments, command_line, fit_config_arg, json_dict_arg,
                     print_training_summary, train_with_progress)

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``omnireg train registration`` to ``parser``."""
    from ..training.registration import available_registration_models

    parser.add_argument("--model", default="voxelmorph-diff", choices=available_registration_models(), help="network to train")
    parser.add_argument("--label-maps", default=None, metavar="DIR", help="prepared label maps (folder with prepared.json)")
    parser.add_argument("--images", default=None, metavar="LIST",
                        help="real training images on one grid (text file, one path a line, or comma-separated)")
    parser.add_argument("--out", "-o", required=True, help="model file to write (.pt)")
    parser.add_argument("--ndim", type=int, choices=(2, 3), default=3, help="3D, or 2D slices of the 3D maps (default 3)")
    parser.add_argument("--loss", default="lncc", help="weighted similarity terms, e.g. lncc, dice, 'mse:1,dice:1', 'deepsim:2,ncc:1'")
    parser.add_argument("--reg", default="diffusion:1", help="weighted regulariser terms on the field in mm, e.g. 'diffusion:1', 'none'")
    parser.add_argument("--reg-target", choices=("displacement", "velocity"), default="displacement",
                        help="field the regulariser acts on (velocity: diffeomorphic models)")
    parser.add_argument("--mode", choices=("random", "t1"), default="random", help="synthesised contrasts (default random)")
    parser.add_argument("--pairs", choices=("inter", "intra"), default="inter", help="two subjects, or one subject twice")
    parser.add_argument("--deep-supervision", type=float, default=0.0, help="weight of the coarser scales (pyramid models)")
    parser.add_argument("--symmetric", action="store_true", help="also train the inverse direction (diffeomorphic models)")
    parser.add_argument("--init-from", default=None, metavar="MODEL.pt",
                        help="start from the weights of this model file (same model and options; fine-tuning, "
                             "e.g. a --mode t1 run continued with --mode random)")
    parser.add_argument("--model-options", default="", help="JSON object of model config fields, e.g. '{\"enc_channels\": [8, 16]}'")
    parser.add_argument("--similarity-options", default="", help="JSON object per similarity, e.g. '{\"lncc\": {\"window\": 7}}'")
    parser.add_argument("--synthesis-options", default="", help="JSON object of SynthesisConfig fields, e.g. '{\"deform_std_max_vox\": 3}'")
    add_fit_arguments(parser, items="pairs", lr=1e-4, val_every=50)
    add_run_arguments(parser)


def _load_images(value: str):
    import torch

    from ..core.intensity import robust_normalize
    from ..io import load_image
    from .train_mad import read_image_list

    paths = read_image_list(value, "--images")
    images = [load_image(p) for p in paths]
    grid = images[0].grid
    for p, img in zip(paths, images):
        if not img.grid.same_as(grid, atol=1e-3) or img.channels != 1:
            raise ValueError(f"--images: {p} is not a one-channel image on the grid of {paths[0]}")
    data = torch.stack([robust_normalize(img.data[None].float())[0].clamp(0, 1) for img in images])
    return data, tuple(grid.spacing)


def run(args: argparse.Namespace) -> int:
    """Train and save the model; returns 0. User errors raise ValueError/FileNotFoundError (one line)."""
    import torch

    from ..training.registration import RegistrationTrainConfig, train_registration
    from ..training.synthesis import SynthesisConfig
    from .common import input_path, output_path

    if args.label_maps is None and args.images is None:
        raise ValueError("--label-maps: give prepared label maps, --images, or both")
    label_maps = input_path(args.label_maps, "--label-maps") if args.label_maps else None
    init_from = input_path(args.init_from, "--init-from") if args.init_from else None
    out = output_path(args.out, "--out", force=args.force or args.resume)
    if args.threads:
        torch.set_num_threads(int(args.threads))
    synthesis = SynthesisConfig(mode=args.mode, **json_dict_arg(args.synthesis_options, "--synthesis-options"))
    config = RegistrationTrainConfig(
        model=args.model, model_options=json_dict_arg(args.model_options, "--model-options"), ndim=args.ndim,
        loss=args.loss, reg=args.reg, reg_target=args.reg_target,
        similarity_options=json_dict_arg(args.similarity_options, "--similarity-options"),
        deep_supervision=args.deep_supervision, symmetric=args.symmetric, pairs=args.pairs, synthesis=synthesis,
        batch_size=args.batch_size, val_every=args.val_every,
        fit=fit_config_arg(args),
    )
    if init_from is not None:  # checked before any work: same model, same architecture options
        from ..training.registration import build_registration_model, load_initial_weights

        probe = build_registration_model(config.model, config.ndim, **config.model_options)
        load_initial_weights(probe, getattr(probe, "kind", config.model), init_from, name="--init-from")
    images, spacing = _load_images(args.images) if args.images else (None, None)

    def train(device, dist, progress) -> dict:
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest convolutions
        return train_registration(config, out, label_maps=label_maps, images=images, image_spacing=spacing, device=device,
                                  resume=args.resume, max_minutes=args.max_minutes, progress=progress, dist=dist,
                                  meta={"command": command_line(args)}, init_from=init_from)

    dist, meta = train_with_progress(args, f"train {args.model} {args.ndim}D", train)
    if dist.is_main:
        print_training_summary(out, meta, lambda v: f"; validation Dice {v['dice']:.3f} (affine only "
                                                    f"{v['dice_identity']:.3f}, {v['pairs']} pairs)")
    return 0
