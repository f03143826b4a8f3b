"""Shared test fixtures: small synthetic images and the path to ../shared/data (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

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
