"""Ctrl-C while outputs are written: the interrupted run's outputs are removed, earlier files are kept, exit 130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import omnireg.io
from omnireg.cli.main import main
from omnireg.core import Grid, Image
from omnireg.io import save_image

GRID = Grid((16, 16, 16), (2.0, 2.0, 2.0), origin=(-15.0, -15.0, -15.0))
FAST = "init: geometry\nstages:\n  - transform: rigid\n    metric: ncc\n    shrink: [1]\n    iterations: [3]\n"
SRC = Path(omnireg.__file__).resolve().parents[1]


@pytest.fixture
def case(tmp_path) -> Path:
    x = torch.zeros(1, *GRID.shape)
    x[0, 4:12, 5:11, 6:10] = 1.0
    x = x + 0.1 * torch.linspace(0, 1, 16)[None, :, None, None]
    save_image(Image(x, GRID), tmp_path / "f.nii.gz")
    save_image(Image(x.roll(1, 1), GRID), tmp_path / "m.nii.gz")
    save_image(Image((x > 0.5).to(torch.int16), GRID), tmp_path / "labels.nii.gz")
    (tmp_path / "fast.yaml").write_text(FAST)
    return tmp_path


def _argv(d: Path, out: Path, *extra: str) -> list[str]:
    return ["register", str(d / "f.nii.gz"), str(d / "m.nii.gz"), "--out", str(out), "--config", str(d / "fast.yaml"),
            "--no-progress", "--moving-labels", str(d / "labels.nii.gz"), *extra]


def _interrupt_on_second_image(monkeypatch) -> list[Path]:
    """``save_image`` writes the first image, then Ctrl-C arrives while the second one is written."""
    written: list[Path] = []
    original = omnireg.io.save_image

    def save(image, path, **kwargs):
        if written:
            Path(path).write_bytes(b"half an image")
            raise KeyboardInterrupt
        written.append(Path(path))
        return original(image, path, **kwargs)

    monkeypatch.setattr(omnireg.io, "save_image", save)
    return written


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ctrl_c_while_writing_removes_the_outputs_and_exits_130(case, monkeypatch, capsys):
    written = _interrupt_on_second_image(monkeypatch)
    out = case / "out"
    assert main(_argv(case, out, "--no-report")) == 130
    err = capsys.readouterr().err.strip()
    assert err == "omnireg register: interrupted; the outputs of the interrupted run were removed"
    assert written, "the first image was written before the interruption"
    assert not out.exists()  # the run created the folder: nothing is left, no temporary folder either
    assert sorted(p.name for p in case.iterdir()) == ["f.nii.gz", "fast.yaml", "labels.nii.gz", "m.nii.gz"]


def test_ctrl_c_during_a_forced_rerun_keeps_the_previous_outputs_untouched(case, monkeypatch, capsys):
    out = case / "out"
    assert main(_argv(case, out)) == 0
    (out / "notes.txt").write_text("the user's own file")
    before = _snapshot(out)
    assert "result.json" in before and "report.html" in before
    _interrupt_on_second_image(monkeypatch)
    assert main(_argv(case, out, "--force")) == 130
    assert _snapshot(out) == before  # no file replaced, none added, none removed: never a half-updated folder
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_real_sigint_while_writing_exits_130_even_when_started_with_sigint_ignored(case):
    """A script started in the background inherits an ignored SIGINT; ``kill -INT`` must still stop omnireg."""
    out = case / "out"
    code = (
        "import os, signal, sys\n"
        "import omnireg.io\n"
        "from omnireg.cli.main import main\n"
        "original = omnireg.io.save_image\n"
        "def save(image, path, **kw):\n"
        "    original(image, path, **kw)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "omnireg.io.save_image = save\n"
        f"sys.exit(main({_argv(case, out, '--no-report')!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.strip().endswith("interrupted; the outputs of the interrupted run were removed")
    assert not out.exists()


def test_ctrl_c_in_a_batch_keeps_finished_pairs_and_removes_the_interrupted_one(case, monkeypatch, capsys):
    (case / "pairs.csv").write_text("id,fixed,moving\na,f.nii.gz,m.nii.gz\nb,f.nii.gz,m.nii.gz\nc,f.nii.gz,m.nii.gz\n")
    import omnireg.report

    calls = []
    original = omnireg.report.write_report

    def write_report(out_dir, **kwargs):
        calls.append(out_dir)
        if len(calls) == 2:  # the second pair is interrupted while its report is written
            (Path(out_dir) / "report.html").write_text("<html>half")
            raise KeyboardInterrupt
        return original(out_dir, **kwargs)

    monkeypatch.setattr(omnireg.report, "write_report", write_report)
    out = case / "cohort"
    rc = main(["batch", str(case / "pairs.csv"), "--out", str(out), "--config", str(case / "fast.yaml"), "--no-dask",
               "--no-progress"])
    assert rc == 130
    assert "interrupted" in capsys.readouterr().err
    assert (out / "a" / "result.json").is_file()
    assert not (out / "b").exists() and not (out / "c").exists()
    assert sorted(p.name for p in out.iterdir()) == ["a", "summary.csv", "summary.json"]  # no staging leftovers
    import json

    statuses = [p["status"] for p in json.loads((out / "summary.json").read_text())["pairs"]]
    assert statuses == ["done", "pending", "pending"]
