"""A tiny cohort for the batch tests: 20^3 blobs with labels and landmarks, a 2-level rigid configuration."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from omnireg.core import Grid, Image
from omnireg.io import save_image
from omnireg.landmarks import write_landmarks

CONFIG = """\
init: geometry
stages:
  - transform: rigid
    metric: ncc
    shrink: [2, 1]
    iterations: [8, 4]
    optimizer: lbfgs
"""

SHIFTS_MM = [0.0, 1.0, 2.0, -1.5, 2.5, -2.0]


def blob(grid: Grid, shift_mm: float) -> torch.Tensor:
    """A smooth anisotropic blob, shifted by ``shift_mm`` along the first world axis."""
    x = torch.as_tensor(grid.transform_points(np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1)
                                              .reshape(-1, 3).astype(float), "voxel", "world")).reshape(*grid.shape, 3)
    d = (x[..., 0] - shift_mm) ** 2 / 60.0 + x[..., 1] ** 2 / 40.0 + (x[..., 2] + 0.3 * shift_mm) ** 2 / 30.0
    return torch.exp(-d).float()


def write_case(folder: Path, name: str, grid: Grid, shift_mm: float) -> dict:
    data = blob(grid, shift_mm)
    save_image(Image(data[None], grid), folder / f"{name}.nii.gz")
    labels = (data > 0.5).to(torch.int16) + (data > 0.8).to(torch.int16)
    save_image(Image(labels[None], grid), folder / f"{name}_labels.nii.gz")
    pts = np.array([[shift_mm, 0.0, -0.3 * shift_mm], [shift_mm + 4.0, 2.0, -0.3 * shift_mm], [shift_mm, -3.0, 3.0 - 0.3 * shift_mm]])
    write_landmarks(pts, folder / f"{name}_landmarks.csv")
    return {"image": f"{name}.nii.gz", "labels": f"{name}_labels.nii.gz", "landmarks": f"{name}_landmarks.csv"}


GRID = Grid((20, 20, 20), (2.0, 2.0, 2.0), origin=(-19.0, -19.0, -19.0))


@pytest.fixture
def kit() -> SimpleNamespace:
    """The helpers that build the cohort (the test folders are not packages, so they come as a fixture)."""
    return SimpleNamespace(grid=GRID, shifts_mm=SHIFTS_MM, blob=blob, write_case=write_case)


@pytest.fixture
def cohort(tmp_path) -> Path:
    """tmp/pairs.csv with 6 pairs (p0..p5) of one fixed image; p3's moving image is garbage bytes."""
    grid = GRID
    data = tmp_path / "data"
    data.mkdir()
    fixed = write_case(data, "fixed", grid, 0.0)
    lines = ["id,fixed,moving,fixed_labels,moving_labels,fixed_landmarks,moving_landmarks"]
    for i, s in enumerate(SHIFTS_MM):
        m = write_case(data, f"moving{i}", grid, s)
        lines.append(f"p{i},data/{fixed['image']},data/{m['image']},data/{fixed['labels']},data/{m['labels']},"
                     f"data/{fixed['landmarks']},data/{m['landmarks']}")
    (data / "moving3.nii.gz").write_bytes(b"\x00garbage, not a gzip stream\xff" * 10)
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "config.yaml").write_text(CONFIG)
    return tmp_path


@pytest.fixture
def batch_parser() -> argparse.ArgumentParser:
    """The ``omnireg`` parser with the batch command (built here: cli/main.py does not list it yet)."""
    from omnireg.cli import batch

    parser = argparse.ArgumentParser(prog="omnireg")
    batch.add_parser(parser.add_subparsers(dest="command"))
    return parser
