"""The README's Python quick start runs as written (on copies of the bundled 2D sample named as in the README)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start_block() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Quick start")
    blocks = re.findall(r"```python\n(.*?)```", text[start:], flags=re.S)
    assert blocks, "README: no Python block under '## Quick start'"
    return blocks[0]


def test_the_readme_python_quick_start_runs_and_saves_what_the_cli_writes(tmp_path, monkeypatch):
    if not README.is_file():
        pytest.skip("README.md is not beside the tests (installed package)")
    from omnireg.data import sample_path

    shutil.copy(sample_path("t1_2d"), tmp_path / "fixed.nii.gz")
    shutil.copy(sample_path("pd_2d"), tmp_path / "moving.nii.gz")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(quick_start_block(), "README.md (quick start)", "exec"), namespace)
    result = namespace["result"]
    for name in ("result.json", "transform.h5", "linear.mat", "warped.nii.gz", "report.html"):
        assert (tmp_path / "result" / name).is_file(), name
    points = namespace["points_in_moving"]
    assert isinstance(points, torch.Tensor) and points.shape == (1, 1, 2)
    # the saved transform maps the point as the in-memory one does
    from omnireg.transforms.files import load_transform

    saved = load_transform(tmp_path / "result" / "transform.h5")
    centre = torch.as_tensor(namespace["centre"], dtype=torch.float64)[None]
    torch.testing.assert_close(saved(centre), points.to(saved(centre).dtype), atol=1e-4, rtol=0)
    assert result.summary is not None and result.summary["method"]["name"] == "engine"
