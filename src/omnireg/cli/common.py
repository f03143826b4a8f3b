"""Helpers shared by the sub-commands: argument checks that give one clear line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Iterator

from .errors import CliError

__all__ = ["DeferredParser", "LazyChoices", "OneLineParser", "TrainProgress", "command_line", "input_path", "label_map_arg", "landmarks_arg",
           "load_image_arg", "output_path", "paired_landmarks", "preset_choices", "transform_chain_arg"]


class LazyChoices:
    """The ``choices`` of an argparse option, computed on first use (checking a value, formatting help).

    Building the parser must not import the numerical stack (``omnireg --help`` stays fast), yet the valid
    values of some options (presets) are defined there. Give the option a ``metavar`` so that argparse does
    not list the choices while the parser is built.
    """

    def __init__(self, names: Callable[[], list[str]]) -> None:
        self._names = names
        self._cache: list[str] | None = None

    def _values(self) -> list[str]:
        if self._cache is None:
            self._cache = sorted(self._names())
        return self._cache

    def __contains__(self, value: object) -> bool:
        return value in self._values()

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())

    def __len__(self) -> int:
        return len(self._values())


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line, ``omnireg COMMAND: error: ...``, exit code 2.

    argparse prints the whole usage block before the error; the line that names the flag is what matters,
    and ``omnireg COMMAND --help`` shows the usage. Sub-command parsers inherit the class.
    """

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message.splitlines()[0] if message else 'invalid arguments'} "
                     f"(see '{self.prog} --help')\n")


class DeferredParser(OneLineParser):
    """A sub-command parser whose arguments are added on first use (parsing its arguments or its help).

    For sub-commands whose options take their defaults from heavy modules (training configurations):
    ``omnireg --help`` lists them without importing those modules. Use it as the ``parser_class`` of
    ``add_subparsers`` and give ``add_parser(..., populate=fn)``, where ``fn(parser)`` adds the arguments.
    """

    def __init__(self, *args, populate: Callable[[argparse.ArgumentParser], None] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._populate = populate

    def _ensure_populated(self) -> None:
        if self._populate is not None:
            populate, self._populate = self._populate, None
            populate(self)

    def parse_known_args(self, args=None, namespace=None):
        self._ensure_populated()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._ensure_populated()
        return super().format_usage()

    def format_help(self) -> str:
        self._ensure_populated()
        return super().format_help()


def _preset_names() -> list[str]:
    from ..optim import PRESETS

    return list(PRESETS)


def preset_choices() -> LazyChoices:
    """The names of the registration presets (:data:`omnireg.optim.PRESETS`), loaded when first needed."""
    return LazyChoices(_preset_names)


def _transform_names() -> list[str]:
    from ..optim.presets import TRANSFORM_STAGES

    return list(TRANSFORM_STAGES)


def transform_choices() -> LazyChoices:
    """The ``--transform`` names (:data:`omnireg.optim.presets.TRANSFORM_STAGES`), loaded when first needed."""
    return LazyChoices(_transform_names)


def input_path(path: str | Path, what: str) -> Path:
    """An existing input file or folder, else a CliError naming the argument and the path."""
    p = Path(path)
    if not p.exists():
        raise CliError(f"{what}: no such file or directory: {p}")
    return p


def output_path(path: str | Path, what: str, *, force: bool) -> Path:
    """An output path whose folder exists; refuses an existing file unless ``force``."""
    p = Path(path)
    if p.exists() and not force:
        raise CliError(f"{what}: {p} exists; use --force to overwrite it")
    if not p.parent.exists():
        raise CliError(f"{what}: the folder {p.parent} does not exist")
    return p


def load_image_arg(path: str | Path, what: str):
    """Load an image given on the command line; errors name the argument."""
    from ..io import load_image

    p = input_path(path, what)
    try:
        return load_image(p)
    except (ValueError, OSError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "cannot read image" not in msg:  # io's own messages already name the file
            msg = f"cannot read image {p}: {msg}"
        raise CliError(f"{what}: {msg}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _without_name(message: str, names: tuple[str, ...]) -> str:
    """``message`` without a leading ``name: `` of a library argument (the flag is named instead)."""
    for n in names:
        if message.startswith(f"{n}: "):
            return message[len(n) + 2:]
    return message


def label_map_arg(path: str | Path, what: str):
    """A label map given on the command line (integer values, :func:`omnireg.pipeline.inputs.as_label_map`)."""
    from ..pipeline.inputs import as_label_map

    image = load_image_arg(path, what)
    try:
        return as_label_map(image, what)
    except ValueError as exc:
        raise CliError(_first_line(exc)) from exc


def transform_chain_arg(specs: list[str], what: str, *, ndim: int):
    """The transform of a list of transform files in ``antsApplyTransforms -t`` order; errors name ``what``."""
    from ..transforms.files import load_transform_chain, parse_transform_spec

    for spec in specs:
        try:
            path = parse_transform_spec(spec)[0]
        except ValueError as exc:
            raise CliError(f"{what}: {_without_name(_first_line(exc), ('spec', 'transform'))}") from exc
        input_path(path, what)
    try:
        return load_transform_chain(specs, ndim=ndim)
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        raise CliError(f"{what}: {_without_name(_first_line(exc), ('transform', 'specs'))}") from exc


def landmarks_arg(path: str | Path, what: str, **options):
    """A landmark file given on the command line (:func:`omnireg.landmarks.read_landmarks` options)."""
    from ..landmarks import read_landmarks

    p = input_path(path, what)
    try:
        return read_landmarks(p, **options)
    except (ValueError, OSError) as exc:
        raise CliError(f"{what}: {_without_name(_first_line(exc), ('path',))}") from exc


def paired_landmarks(fixed, moving, fixed_what: str, moving_what: str):
    """:func:`omnireg.landmarks.pair_landmarks` of two sets read from the flags ``fixed_what`` and ``moving_what``."""
    from ..landmarks import pair_landmarks

    if fixed.ndim != moving.ndim:
        raise CliError(f"{moving_what}: expected {fixed.ndim}D points like {fixed_what}, got {moving.ndim}D")
    try:
        return pair_landmarks(fixed, moving)
    except ValueError as exc:
        raise CliError(f"{moving_what}: {_without_name(_first_line(exc), ('moving', 'fixed'))}") from exc


def command_line(args) -> str:
    """The command as typed (``omnireg`` plus ``args.argv``, set by the entry point), for provenance records."""
    import shlex

    return "omnireg " + " ".join(shlex.quote(str(a)) for a in getattr(args, "argv", []))


def json_dict_arg(value: str, what: str) -> dict:
    """A JSON object option (``--model-options '{...}'``) as a dict; ``""`` gives ``{}``.

    Raises:
        ValueError: naming ``what`` if the value is not a JSON object.
    """
    if not value:
        return {}
    try:
        out = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what}: expected a JSON object, got {value!r} ({exc.msg})") from None
    if not isinstance(out, dict):
        raise ValueError(f"{what}: expected a JSON object, got {value!r}")
    return out


def add_fit_arguments(parser: argparse.ArgumentParser, *, items: str, lr: float, val_every: int) -> None:
    """The optimisation options of the ``omnireg train`` commands that run :func:`omnireg.training.loop.fit`.

    Adds ``--steps``, ``--max-minutes``, ``--batch-size``, ``--lr``, ``--weight-decay``, ``--warmup``,
    ``--val-every`` and ``--checkpoint-every``; read them back with :func:`fit_config_arg`.

    Args:
        parser: the command's parser.
        items: what one batch item is, for the help of ``--batch-size`` (e.g. ``"pairs"``).
        lr: the default learning rate.
        val_every: the default number of steps between validations.
    """
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps (default 2000)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint and a model file) after this time")
    parser.add_argument("--batch-size", type=int, default=1, help=f"{items} per step, all processes together (default 1)")
    lr_text = f"{lr:.0e}".replace("e-0", "e-")  # 1e-4, 3e-3
    parser.add_argument("--lr", type=float, default=lr, help=f"AdamW learning rate (default {lr_text})")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0: Adam)")
    parser.add_argument("--warmup", type=int, default=20, help="linear warm-up steps (default 20)")
    parser.add_argument("--val-every", type=int, default=val_every, help="steps between validations (0: at the end)")
    parser.add_argument("--checkpoint-every", type=int, default=25, help="steps between checkpoints (default 25)")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--seed``, ``--threads``, ``--resume`` and ``--force`` of the ``omnireg train`` commands."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and of every batch")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")


def fit_config_arg(args: argparse.Namespace):
    """The :class:`~omnireg.training.loop.FitConfig` of the options of :func:`add_fit_arguments` and ``--seed``."""
    from ..training.loop import FitConfig

    return FitConfig(steps=args.steps, lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup,
                     seed=args.seed, checkpoint_every=args.checkpoint_every)


def train_with_progress(args: argparse.Namespace, desc: str, train: Callable) -> tuple[object, dict]:
    """Run ``train(device, dist, progress)`` of an ``omnireg train`` command in its process group.

    Starts the data-parallel context of ``--device`` (torchrun aware), feeds a :class:`TrainProgress`
    bar (rank 0, unless ``--quiet``) and always closes the bar and the process group.

    Returns:
        ``(dist, meta)``: the :class:`~omnireg.training.distributed.DistContext` and what ``train`` returned
        (the model file's meta).
    """
    from ..training.distributed import init_distributed, shutdown_distributed

    dist, device = init_distributed(args.device)
    progress = TrainProgress(dist.is_main and not getattr(args, "quiet", False), desc)
    try:
        meta = train(device, dist, progress)
    finally:
        progress.close()
        shutdown_distributed(dist)
    return dist, meta


def print_training_summary(out: Path, meta: dict, validation: Callable[[dict], str]) -> None:
    """One line on stderr: the model file, steps, last loss, ``validation(meta["validation"])`` if any, early stop."""
    v = meta.get("validation") or {}
    line = f"wrote {out}: {meta['steps_done']} steps, last loss {meta['loss_last']:.4g}"
    if v:
        line += validation(v)
    if meta.get("stopped_early"):
        line += " (stopped by --max-minutes; --resume continues)"
    print(line, file=sys.stderr)


class TrainProgress:
    """A tqdm bar on stderr fed by :class:`omnireg.training.loop.TrainEvent` (disabled with ``--quiet``)."""

    def __init__(self, enabled: bool, desc: str) -> None:
        self.enabled = enabled
        self.desc = desc
        self.bar = None

    def __call__(self, ev) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=ev.steps, initial=ev.step - 1, desc=self.desc, dynamic_ncols=True)
        self.bar.n = ev.step
        if getattr(ev, "validation", None) and "dice" in ev.validation:
            self.val = f"{ev.validation['dice']:.3f}"
        extra = {"val_dice": self.val} if getattr(self, "val", None) else {}
        self.bar.set_postfix(loss=f"{ev.loss:.4g}", lr=f"{ev.lr:.2g}", **extra, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
