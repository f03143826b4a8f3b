"""``omnireg train mad --images LIST --out model.pt``: train the MAD distance network.

``LIST`` is a text file with one image path per line (``#`` comments and blank lines ignored; relative
paths are relative to the file's folder) or comma-separated paths. Progress goes to stderr as a tqdm bar;
the model file, ``<stem>.validation.json`` and ``<stem>.validation.png`` are written next to ``--out``.
This module is also runnable on its own: ``python -m omnireg.cli.train_mad --images ... --out ...``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .common import command_line

__all__ = ["add_arguments", "run", "read_image_list"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``omnireg train mad`` to ``parser``."""
    from ..training.mad import MADTrainConfig

    d = MADTrainConfig()
    parser.add_argument("--images", required=True, help="training images: a text file (one path per line) or comma-separated paths")
    parser.add_argument("--out", "-o", required=True, help="model file to write (e.g. mad_3d.pt)")
    parser.add_argument("--validation-images", default=None, help="held-out single-modality images (same LIST format)")
    parser.add_argument("--validation-pairs", default=None, help="CSV of aligned multi-modal pairs 'fixed,moving' (held out)")
    parser.add_argument("--ndim", type=int, choices=(2, 3), default=3, help="2D or 3D images (default 3)")
    parser.add_argument("--steps", type=int, default=d.fit.steps, help=f"optimiser steps (default {d.fit.steps})")
    parser.add_argument("--batch-size", type=int, default=d.pairs_per_volume, help=f"patch pairs per step (default {d.pairs_per_volume})")
    parser.add_argument("--patch-size", type=int, default=None, help="patch side in voxels (default 16 in 3D, 24 in 2D)")
    parser.add_argument("--patch-spacing", type=float, default=None, help="patch spacing in mm (default 3 in 3D, 2 in 2D)")
    parser.add_argument("--max-distance", type=float, default=d.network.max_distance_mm, help=f"largest centre offset in mm (default {d.network.max_distance_mm:g})")
    parser.add_argument("--kernel-sizes", default="1,3", help="random-convolution kernel sizes, comma-separated odd (default 1,3)")
    parser.add_argument("--randconv-depth", type=int, default=d.randconv.depth, help=f"random-convolution layers (default {d.randconv.depth})")
    parser.add_argument("--appearance-reuse", type=int, default=d.appearance_reuse,
                        help="steps sharing one pair of random-convolution appearances (default 1; 4 amortises 3D cost)")
    parser.add_argument("--lr", type=float, default=d.fit.lr, help=f"learning rate (default {d.fit.lr:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation and of every batch (default 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT.ckpt if present")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def read_image_list(value: str, what: str) -> list[Path]:
    """Paths from a list file or a comma-separated string; every path must exist.

    Raises:
        FileNotFoundError: a missing file (the message names ``what``).
        ValueError: an empty list.
    """
    p = Path(value)
    if p.is_file() and p.suffix.lower() in (".txt", ".lst", ".list", ""):
        base = p.parent
        entries = [ln.strip() for ln in p.read_text().splitlines()]
        entries = [e for e in entries if e and not e.startswith("#")]
        paths = [Path(e) if Path(e).is_absolute() else base / e for e in entries]
    else:
        paths = [Path(e.strip()) for e in value.split(",") if e.strip()]
    if not paths:
        raise ValueError(f"{what}: no image paths in {value!r}")
    for q in paths:
        if not q.is_file():
            raise FileNotFoundError(f"{what}: no such file: {q}")
    return paths


def _config(args: argparse.Namespace):
    import dataclasses

    from ..networks.mad import MADConfig
    from ..training.mad import MADTrainConfig
    from ..training.randconv import RandConvConfig

    try:
        kernels = tuple(int(k) for k in str(args.kernel_sizes).split(","))
    except ValueError:
        raise ValueError(f"--kernel-sizes: expected comma-separated odd integers, got {args.kernel_sizes!r}") from None
    if args.steps < 1:
        raise ValueError(f"--steps: expected >= 1, got {args.steps}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size: expected >= 1, got {args.batch_size}")
    two = args.ndim == 2
    default = MADTrainConfig()
    return MADTrainConfig(
        network=MADConfig(
            ndim=args.ndim,
            patch_size=args.patch_size or (24 if two else 16),
            patch_spacing_mm=args.patch_spacing or (2.0 if two else 3.0),
            max_distance_mm=args.max_distance,
        ),
        randconv=RandConvConfig(kernel_sizes=kernels, depth=args.randconv_depth),
        pairs_per_volume=args.batch_size,
        appearance_reuse=args.appearance_reuse,
        fit=dataclasses.replace(default.fit, steps=args.steps, lr=args.lr, seed=args.seed),
    )


def run(args: argparse.Namespace) -> int:
    """Train and save the model; returns 0. User errors raise ValueError/FileNotFoundError (one line)."""
    import torch

    from ..training.mad import read_pairs_csv, train_mad

    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"--out: {out} exists; use --force to overwrite it")
    if not out.parent.exists():
        raise FileNotFoundError(f"--out: the folder {out.parent} does not exist")
    images = read_image_list(args.images, "--images")
    val_images = read_image_list(args.validation_images, "--validation-images") if args.validation_images else []
    val_pairs = read_pairs_csv(args.validation_pairs) if args.validation_pairs else []
    config = _config(args)
    if args.threads:
        torch.set_num_threads(int(args.threads))
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, desc="train mad", unit="step", file=sys.stderr, dynamic_ncols=True)

    def progress(event) -> None:
        if bar is None and (event.step % 100 == 0 or event.step == event.steps):
            log.info("step %d/%d loss %.2f lr %.1e (%.0f s)", event.step, event.steps, event.loss, event.lr, event.elapsed_s)
        if bar is not None:
            bar.n = event.step
            bar.set_postfix(loss=f"{event.loss:.2f}", lr=f"{event.lr:.1e}", refresh=False)
            bar.refresh()

    command = command_line(args)
    try:
        summary = train_mad(
            images, out, config=config, resume=args.resume, progress=progress,
            validation_images=val_images, validation_pairs=val_pairs,
            meta={"command": command},
        )
    finally:
        if bar is not None:
            bar.close()
    for kind in ("volumes", "pairs"):
        for name, s in summary.get(kind, {}).items():
            log.warning(
                "validation %s %s: identical %.2f mm, MAE %.2f mm, spearman %.3f",
                kind, name, s["identical_mean_mm"] or float("nan"), s["mae_mm"], s["spearman"],
            )
    print(f"wrote {out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m omnireg.cli.train_mad``): same options as ``omnireg train mad``."""
    parser = argparse.ArgumentParser(prog="omnireg train mad", description=__doc__.splitlines()[0])
    add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = ["train", "mad", *argv]  # recorded as the equivalent `omnireg train mad ...`
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return run(args)
    except (ValueError, FileNotFoundError, FileExistsError, TypeError) as exc:
        print(f"omnireg train mad: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
