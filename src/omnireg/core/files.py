"""File-system helpers (re-exported by :mod:`omnireg.io`): input checks, extensions, atomic non-clobbering output, JSON.

This is the one home of atomic writing in omnireg: every file omnireg writes (images, transforms,
``result.json``, summaries, reports, landmark files, model files) goes through :func:`atomic_output`
or one of the helpers built on it (:func:`write_bytes_atomic`, :func:`write_text_atomic`,
:func:`write_json_atomic`). The rule:

* the file (and any companion file a format writes beside it, such as the ``.raw`` of a ``.mhd``
  header) is first written under its final name into a fresh temporary folder next to the destination
  (same file system), flushed to disk (``fsync``), then moved into place with :func:`os.replace`;
* the file is created by an ordinary ``open``, so its mode follows the user's umask
  (``0o666 & ~umask``, e.g. ``0o644`` under umask ``022``) like any other file the user creates;
* an existing destination is refused unless ``force=True``, and is untouched unless the write succeeded;
* on any exception, ``KeyboardInterrupt`` (Ctrl-C) included, the temporary folder and everything in it
  are removed: an interrupted write leaves neither a partial file nor a temporary file.

A run that writes several files into one folder (``omnireg register``) writes them through
:func:`staged_outputs`: into a hidden staging folder inside the destination, moved into place together
at the end. An interruption before that leaves the destination as it was (files that existed before
are never replaced by half a run, files of the interrupted run never appear).

JSON written by omnireg is strict (no ``NaN``): :func:`json_ready` is the one conversion of values to
plain JSON (NaN and infinities become ``null``; NumPy and torch scalars and arrays, paths, enums and
dataclasses become plain values).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any, Iterator, Mapping

__all__ = [
    "as_path",
    "atomic_output",
    "check_input_file",
    "extension",
    "json_ready",
    "staged_outputs",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

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
        for p in produced:
            _fsync_file(p)
        if not force:
            for p in produced:
                if (parent / p.name).exists():
                    raise FileExistsError(f"{parent / p.name} already exists; pass force=True to overwrite it")
        for p in produced:
            os.replace(p, parent / p.name)
        _fsync_dir(parent)
        logger.debug("wrote %s", path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _fsync_file(path: Path) -> None:
    """Flush a written file's data to disk (a folder written by a format, e.g. DICOM, is left as it is)."""
    if path.is_file():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable where the platform allows it (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems without directory fsync
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, force: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (module docstring: temporary file, fsync, umask, no clobbering).

    Args:
        path: the destination file; its folder must exist.
        data: the bytes to write.
        force: replace an existing file.

    Returns:
        ``path`` as a Path.

    Raises:
        FileExistsError: ``path`` exists and ``force`` is false.
        FileNotFoundError: the folder of ``path`` does not exist.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data: expected bytes, got {type(data).__name__}")
    p = as_path(path)
    with atomic_output(p, force=force) as tmp:
        with open(tmp, "xb") as fh:
            fh.write(data)
    return p


def write_text_atomic(path: str | os.PathLike, text: str, *, force: bool = False) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically, as :func:`write_bytes_atomic`."""
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    return write_bytes_atomic(path, text.encode("utf-8"), force=force)


def json_ready(value: Any) -> Any:
    """``value`` as plain JSON values: what every JSON file of omnireg holds.

    NaN and infinities become ``None`` (strict JSON has no NaN; read them back as "not available");
    NumPy and torch scalars become Python numbers and their arrays nested lists; mappings get string
    keys; tuples and sets become lists; paths become strings; enums their value; dataclasses dicts;
    anything else its ``str``.
    """
    if isinstance(value, Enum):
        return json_ready(value.value)
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [json_ready(v) for v in items]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_ready(dataclasses.asdict(value))
    if callable(getattr(value, "tolist", None)):  # NumPy / torch scalars and arrays
        return json_ready(value.tolist())
    if callable(getattr(value, "item", None)) and getattr(value, "ndim", 1) == 0:
        return json_ready(value.item())
    return str(value)


def write_json_atomic(path: str | os.PathLike, data: Any, *, force: bool = False, indent: int | None = 2) -> Path:
    """Write ``data`` as strict JSON (through :func:`json_ready`: NaN as ``null``) to ``path`` atomically.

    Args:
        path: the destination file; its folder must exist.
        data: JSON-able data (paths, NumPy scalars, NaN ... are converted by :func:`json_ready`).
        force: replace an existing file.
        indent: indentation of the JSON text (``None``: one line).

    Returns:
        ``path`` as a Path.

    Raises:
        FileExistsError: ``path`` exists and ``force`` is false.
        FileNotFoundError: the folder of ``path`` does not exist.
    """
    text = json.dumps(json_ready(data), indent=indent, allow_nan=False) + "\n"
    return write_text_atomic(path, text, force=force)


_STAGING_PREFIX = ".omnireg-partial-"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _commit(stage: Path, out: Path, *, force: bool, last: str | None) -> list[str]:
    """Move every entry of ``stage`` into ``out`` (``last`` at the end); all or none of them (rolled back on error)."""
    entries = sorted((p for p in stage.iterdir() if p.name != ".old"), key=lambda p: (p.name == last, p.name))
    clash = [p.name for p in entries if (out / p.name).exists()]
    if clash and not force:
        raise FileExistsError(f"{out} already holds {', '.join(clash)}; pass force=True to overwrite")
    backup = stage / ".old"
    backup.mkdir()
    replaced: list[str] = []
    installed: list[str] = []
    try:
        for p in entries:
            if (out / p.name).exists():
                os.replace(out / p.name, backup / p.name)  # a folder (report_files/) is replaced as a whole
                replaced.append(p.name)
            os.replace(p, out / p.name)
            installed.append(p.name)
    except BaseException:
        for name in installed:
            _remove(out / name)
        for name in replaced:
            os.replace(backup / name, out / name)
        raise
    _fsync_dir(out)
    return installed


@contextmanager
def staged_outputs(out_dir: str | os.PathLike, *, force: bool, last: str | None = None) -> Iterator[Path]:
    """Yield a staging folder for the outputs of one run; move them into ``out_dir`` together on success.

    The staging folder is a hidden folder inside ``out_dir`` (created if missing), so the final moves are
    renames on one file system. On success every file and folder written into it is moved into
    ``out_dir`` (``last`` at the end, e.g. the ``result.json`` that marks a finished run), replacing
    existing ones only with ``force``; if a move fails, the moves already made are undone. On any
    exception, ``KeyboardInterrupt`` included, the staging folder is removed, ``out_dir`` keeps exactly
    what it held before, and ``out_dir`` itself is removed if this call created it and it is empty.

    Args:
        out_dir: the destination folder.
        force: replace outputs that already exist in ``out_dir``.
        last: the name of the entry moved last.

    Raises:
        FileExistsError: an output exists in ``out_dir`` and ``force`` is false (checked when committing).
        NotADirectoryError: ``out_dir`` exists and is not a folder.
    """
    if not isinstance(force, bool):
        raise TypeError(f"force: expected a bool, got {type(force).__name__}")
    out = as_path(out_dir, "out_dir")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder")
    created = [p for p in [out, *out.parents] if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out))
    try:
        yield stage
        _commit(stage, out, force=force, last=last)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in created:  # innermost first: only the folders this call made, and only if empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    shutil.rmtree(stage, ignore_errors=True)
