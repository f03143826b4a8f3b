"""Helpers shared by the sub-commands: argument checks that give one clear line."""

from __future__ import annotations

from pathlib import Path

from .main import CliError

__all__ = ["command_line", "input_path", "output_path", "load_image_arg"]


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


def command_line(args) -> str:
    """The command as typed (``omnireg`` plus ``args.argv``, set by the entry point), for provenance records."""
    import shlex

    return "omnireg " + " ".join(shlex.quote(str(a)) for a in getattr(args, "argv", []))
