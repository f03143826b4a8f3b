"""The one home of atomic writing (``omnireg.core.files``): umask, no clobbering, nothing left on Ctrl-C, strict JSON."""

from __future__ import annotations

import ast
import json
import math
import os
import stat
from enum import Enum
from pathlib import Path

import numpy as np
import pytest
import torch

import omnireg
from omnireg.io import atomic_output, json_ready, write_bytes_atomic, write_json_atomic, write_text_atomic
from omnireg.core import files as _files

SRC = Path(omnireg.__file__).resolve().parent


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_files_get_the_mode_the_umask_gives(tmp_path, umask, mask, expected):
    umask(mask)
    paths = [write_json_atomic(tmp_path / "a.json", {"x": 1}), write_text_atomic(tmp_path / "b.txt", "b"),
             write_bytes_atomic(tmp_path / "c.bin", b"c")]
    with atomic_output(tmp_path / "d.pt", force=False) as tmp:
        torch.save({"w": torch.zeros(2)}, tmp)
    paths.append(tmp_path / "d.pt")
    assert {p.name: oct(_mode(p)) for p in paths} == {p.name: oct(expected) for p in paths}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.txt", "c.bin", "d.pt"]


def test_an_existing_file_is_replaced_only_with_force(tmp_path):
    p = write_text_atomic(tmp_path / "a.txt", "first")
    with pytest.raises(FileExistsError, match="a.txt"):
        write_text_atomic(p, "second")
    with pytest.raises(FileExistsError):
        write_json_atomic(p, {"b": 2})
    assert p.read_text() == "first"
    write_json_atomic(p, {"b": 2}, force=True)
    assert json.loads(p.read_text()) == {"b": 2}
    assert [q.name for q in tmp_path.iterdir()] == ["a.txt"]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_write_leaves_neither_file_nor_temporary_file(tmp_path, exc):
    with pytest.raises(exc):
        with atomic_output(tmp_path / "out.nii.gz", force=False) as tmp:
            tmp.write_bytes(b"half of the data")
            raise exc()
    assert list(tmp_path.iterdir()) == []
    # an existing destination is untouched by an interrupted forced write
    keep = write_text_atomic(tmp_path / "keep.json", "{}\n")
    with pytest.raises(exc):
        with atomic_output(keep, force=True) as tmp:
            tmp.write_text('{"partial": ')
            raise exc()
    assert keep.read_text() == "{}\n" and [p.name for p in tmp_path.iterdir()] == ["keep.json"]


def test_ctrl_c_between_writing_and_moving_into_place_leaves_nothing(tmp_path, monkeypatch):
    """The data is written, then Ctrl-C arrives while it is flushed to disk: no file, no temporary file."""
    def interrupted_fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(_files.os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(tmp_path / "result.json", {"metric": 1.0})
    assert list(tmp_path.iterdir()) == []


class _Colour(str, Enum):
    RED = "red"


def test_json_ready_gives_strict_json():
    value = {
        "nan": float("nan"), "inf": -math.inf, "f32": np.float32(0.5), "i64": np.int64(3), "b": np.bool_(True),
        "t": torch.tensor(2.5), "arr": np.array([[1, 2], [3, 4]]), "tarr": torch.tensor([1.0, float("nan")]),
        "path": Path("/a/b.nii.gz"), "tuple": (1, (2, 3)), "enum": _Colour.RED, 7: "int key", "none": None,
    }
    out = json_ready(value)
    assert out == {
        "nan": None, "inf": None, "f32": 0.5, "i64": 3, "b": True, "t": 2.5, "arr": [[1, 2], [3, 4]],
        "tarr": [1.0, None], "path": "/a/b.nii.gz", "tuple": [1, [2, 3]], "enum": "red", "7": "int key", "none": None,
    }
    assert type(out["i64"]) is int and type(out["f32"]) is float
    json.dumps(out, allow_nan=False)  # strict: raises on NaN


def _definitions_and_calls(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            yield "def", node.name, node.lineno
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield "call", f"{owner}.{name}" if owner else name, node.lineno


def test_atomic_writing_and_json_conversion_have_one_home():
    """No module but ``core/files.py`` makes temporary files, renames them into place or converts values for JSON."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "core" / "files.py":
            continue
        for kind, name, line in _definitions_and_calls(path):
            bad = (kind == "call" and name in ("tempfile.mkstemp", "os.replace", "tempfile.NamedTemporaryFile")) or \
                  (kind == "def" and ("json_ready" in name or "write_atomic" in name or name == "write_json_atomic"))
            if bad:
                offenders.append(f"{path.relative_to(SRC)}:{line} {kind} {name}")
    assert offenders == []


def test_staged_outputs_appear_together_or_not_at_all(tmp_path):
    from omnireg.io import staged_outputs

    out = tmp_path / "new" / "out"
    with pytest.raises(KeyboardInterrupt):
        with staged_outputs(out, force=False) as stage:
            write_text_atomic(stage / "a.txt", "a")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []  # the folders this call created are gone too
    with staged_outputs(out, force=False, last="result.json") as stage:
        write_text_atomic(stage / "result.json", "{}")
        (stage / "pictures").mkdir()
        write_bytes_atomic(stage / "pictures" / "p.png", b"png")
        assert not (out / "result.json").exists()  # nothing is visible before the end
    assert sorted(p.name for p in out.iterdir()) == ["pictures", "result.json"]
    # a rerun without force is refused when it would replace outputs, and leaves them
    with pytest.raises(FileExistsError, match="result.json"):
        with staged_outputs(out, force=False) as stage:
            write_text_atomic(stage / "result.json", "{\"new\": 1}")
    assert (out / "result.json").read_text() == "{}" and sorted(p.name for p in out.iterdir()) == ["pictures", "result.json"]
    with staged_outputs(out, force=True) as stage:
        write_text_atomic(stage / "result.json", "{\"new\": 1}")
        (stage / "pictures").mkdir()
    assert (out / "result.json").read_text() == "{\"new\": 1}" and list((out / "pictures").iterdir()) == []


def test_a_failed_commit_restores_what_was_there(tmp_path, monkeypatch):
    from omnireg.io import staged_outputs

    out = tmp_path / "out"
    out.mkdir()
    write_text_atomic(out / "a.txt", "old a")
    write_text_atomic(out / "b.txt", "old b")
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append(Path(dst).name)
        if Path(dst).name == "b.txt" and Path(src).parent.name != ".old" and Path(dst).parent == out:
            raise KeyboardInterrupt  # Ctrl-C between the moves: the moves already made are undone
        return real_replace(src, dst)

    with pytest.raises(KeyboardInterrupt):
        with staged_outputs(out, force=True) as stage:
            write_text_atomic(stage / "a.txt", "new a")
            write_text_atomic(stage / "b.txt", "new b")
            monkeypatch.setattr(_files.os, "replace", replace)
    monkeypatch.setattr(_files.os, "replace", real_replace)
    assert {p.name: p.read_text() for p in out.iterdir()} == {"a.txt": "old a", "b.txt": "old b"}
