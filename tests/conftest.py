"""Shared test fixtures: small synthetic images, a tiny cohort of registration pairs (pipeline and batch
tests), and the path to ../shared/data (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """Path of ../shared/data; the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """One intra-op torch thread for the test (tiny convolutions: two threads on a busy 2-core machine wait on each
    other at every operation); use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def write_tiny_label_maps(folder: Path, shape: tuple[int, int, int] = (16, 20, 16), subjects: int = 5) -> Path:
    """A prepared label-map folder (``prepared.json``) of phantom heads: nested boxes with FreeSurfer labels
    (head 507, CSF 24, cortex 3, white matter 2, ventricle 4), shifted and resized per subject. Subjects
    ``s0 .. s{n-3}`` train, the last two validate; the test subject's file does not exist (it must never be read).
    """
    import numpy as np

    from omnireg.core import Grid, Image
    from omnireg.io import save_image
    from omnireg.training.labelmaps import write_prepared_index

    folder.mkdir(parents=True, exist_ok=True)
    grid = Grid(shape, spacing=(2.0, 2.0, 2.0), origin=(-16.0, -20.0, -16.0))
    names, entries = [], {}
    for k in range(subjects):
        a = np.zeros(shape, dtype=np.int16)
        s = k % 3 - 1
        for value, m in ((507, 1), (24, 2), (3, 3), (2, 5 + (k % 2)), (4, 7)):
            lo = [m, m + s, m]
            hi = [n - m for n in shape]
            hi[1] += s
            a[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = value
        name = f"s{k}"
        save_image(Image(torch.from_numpy(a)[None], grid), folder / f"{name}.nii.gz", force=True)
        names.append(name)
        entries[name] = {"file": f"{name}.nii.gz"}
    entries["t0"] = {"file": "missing_test_subject.nii.gz"}
    split = {"train": names[:-2], "validation": names[-2:], "test": ["t0"]}
    write_prepared_index(folder, {"grid": grid.to_dict(), "split": split, "subjects": entries})
    return folder


@pytest.fixture
def tiny_label_maps(tmp_path) -> Path:
    """Path of a tiny prepared label-map folder (see :func:`write_tiny_label_maps`)."""
    return write_tiny_label_maps(tmp_path / "maps")


# ------------------------------------------------------------------ a tiny cohort: 20^3 blobs, labels, landmarks
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


def blob(grid, shift_mm: float) -> torch.Tensor:
    """A smooth anisotropic blob, shifted by ``shift_mm`` along the first world axis."""
    x = torch.as_tensor(grid.transform_points(np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1)
                                              .reshape(-1, 3).astype(float), "voxel", "world")).reshape(*grid.shape, 3)
    d = (x[..., 0] - shift_mm) ** 2 / 60.0 + x[..., 1] ** 2 / 40.0 + (x[..., 2] + 0.3 * shift_mm) ** 2 / 30.0
    return torch.exp(-d).float()


def write_case(folder: Path, name: str, grid, shift_mm: float) -> dict:
    from omnireg.core import Image
    from omnireg.io import save_image
    from omnireg.landmarks import write_landmarks

    data = blob(grid, shift_mm)
    save_image(Image(data[None], grid), folder / f"{name}.nii.gz")
    labels = (data > 0.5).to(torch.int16) + (data > 0.8).to(torch.int16)
    save_image(Image(labels[None], grid), folder / f"{name}_labels.nii.gz")
    pts = np.array([[shift_mm, 0.0, -0.3 * shift_mm], [shift_mm + 4.0, 2.0, -0.3 * shift_mm], [shift_mm, -3.0, 3.0 - 0.3 * shift_mm]])
    write_landmarks(pts, folder / f"{name}_landmarks.csv")
    return {"image": f"{name}.nii.gz", "labels": f"{name}_labels.nii.gz", "landmarks": f"{name}_landmarks.csv"}


def cohort_grid():
    """The grid of the cohort's images: 20^3 voxels of 2 mm centred on the origin."""
    from omnireg.core import Grid

    return Grid((20, 20, 20), (2.0, 2.0, 2.0), origin=(-19.0, -19.0, -19.0))


@pytest.fixture
def kit() -> SimpleNamespace:
    """The helpers that build the cohort (the test folders are not packages, so they come as a fixture)."""
    return SimpleNamespace(grid=cohort_grid(), shifts_mm=SHIFTS_MM, blob=blob, write_case=write_case)


@pytest.fixture
def cohort(tmp_path) -> Path:
    """tmp/pairs.csv with 6 pairs (p0..p5) of one fixed image; p3's moving image is garbage bytes;
    ``config.yaml``: a fast 2-level rigid configuration."""
    grid = cohort_grid()
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
