"""File-system helpers of :mod:`omnireg.io`: input checks, extensions and atomic, non-clobbering output.

Every writer of omnireg writes through :func:`atomic_output`: the file (and any companion file a
format writes beside it, such as the ``.raw`` of a ``.mhd`` header) is first written under its final
name into a fresh temporary directory next to the destination, then moved into place with
:func:`os.replace`. A failed write leaves neither a partial file nor the temporary directory, and an
existing destination is untouched unless the write succeeded with ``force=True``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["as_path", "atomic_output", "check_input_file", "extension"]

logger = logging.getLogger(__name__)

# Multi-part extensions first so that ".nii.gz" wins over ".gz".
_MULTI_EXTENSIONS = (".nii.gz",)


def as_path(path: str | os.PathLike, name: str = "path") -> Path:
    """``path`` as a :class:`~pathlib.Path`, with a ``TypeError`` naming the argument otherwise."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a str or os.PathLike, got {type(path).__name__}")
    return Path(path).expanduser()


def extension(path: Path) -> str:
    """Lower-case extension of ``path``, including multi-part ones like ``".nii.gz"``."""
    name = path.name.lower()
    for ext in _MULTI_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def check_input_file(path: Path, what: str, *, allow_dir: bool = False) -> None:
    """Raise ``FileNotFoundError`` naming ``path`` when it does not exist (or is a folder unless allowed)."""
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.is_dir() and not allow_dir:
        raise ValueError(f"cannot read {what} {path}: it is a folder, expected a file")


@contextmanager
def atomic_output(path: Path, *, force: bool) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` to; move the result into place on success.

    Args:
        path: the destination file.
        force: replace an existing destination (and existing companion files).

    Raises:
        FileExistsError: ``path`` (or a companion file written beside it) exists and ``force`` is false.
        FileNotFoundError: the destination folder does not exist.
        ValueError: ``path`` is an existing folder.
    """
    if not isinstance(force, bool):
        raise TypeError(f"force: expected a bool, got {type(force).__name__}")
    if path.is_dir():
        raise ValueError(f"path: expected a file name, got the existing folder {path}")
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists; pass force=True to overwrite it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {parent}")
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".omnireg-tmp", dir=parent))
    try:
        target = tmpdir / path.name
        yield target
        if not target.exists():
            raise RuntimeError(f"the writer produced no file {path.name}")  # pragma: no cover - writer bug
        # companion files first, the named file last: readers never see a header without its data
        produced = sorted(tmpdir.iterdir(), key=lambda p: p.name == path.name)
        if not force:
            for p in produced:
                if (parent / p.name).exists():
                    raise FileExistsError(f"{parent / p.name} already exists; pass force=True to overwrite it")
        for p in produced:
            os.replace(p, parent / p.name)
        logger.debug("wrote %s", path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
