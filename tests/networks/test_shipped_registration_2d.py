"""The shipped 2D registration networks (``voxelmorph_2d``, ``voxelmorph-diff_2d``, ``pyramid_2d``): they load offline
from the package, are small, were trained only on the training subjects with their command and log recorded, and
undo a known smooth deformation of a real T1 slice they never saw (the bundled sample, cut axially)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnireg.core import Image
from omnireg.evaluation import dice_score
from omnireg.io import load_image, save_image
from omnireg.networks.store import load_model, packaged_weights
from omnireg.transforms import StationaryVelocityField, resample

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py; axial_slice: tests/networks/conftest.py

#: shipped name -> (model kind, size limit of its issue in MiB)
SHIPPED = {"voxelmorph": ("voxelmorph", 5), "voxelmorph-diff": ("voxelmorph-diff", 5), "pyramid": ("pyramid", 10)}
#: the bundled sample's tissue classes (omnireg/data/sample/ATTRIBUTION.md)
SAMPLE_CORTEX, SAMPLE_WM = 2, 3


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_2d_network_loads_offline_is_small_and_records_how_it_was_made(name):
    kind, limit_mib = SHIPPED[name]
    path = packaged_weights(f"{name}_2d")
    assert path.stat().st_size < limit_mib * 2**20
    model, meta = load_model(path, kind=kind)
    assert model.config.ndim == 2
    assert meta["command"].startswith("omnireg train registration") and "--ndim 2" in meta["command"]
    assert not set(meta["data"]["train_subjects"]) & {"16", "17", "18", "19", "20"}
    assert meta["data"]["test_subjects_never_read"] == ["16", "17", "18", "19", "20"]
    val = meta["validation"]  # held-out subjects 13-15
    assert val["dice"] > val["dice_identity"] + 0.05
    assert path.with_suffix(".log.jsonl").is_file()


@pytest.fixture(scope="module")
def deformed_slice(axial_slice):
    """``(fixed, moving, psi, fixed classes, moving classes)``: ``moving(x) = fixed(psi(x))`` for a smooth diffeomorphism
    ``psi`` (an SVF, largest velocity 3 mm), so a right result ``T`` has ``psi(T(x)) = x``."""
    image, classes = axial_slice
    g = image.grid
    gen = torch.Generator().manual_seed(0)
    coarse = torch.randn(1, 2, 6, 6, generator=gen)
    v = torch.nn.functional.interpolate(coarse, size=g.shape, mode="bicubic", align_corners=True)
    psi = StationaryVelocityField(v / v.abs().max() * 3.0, g, learnable=False)
    moving = resample(image, psi, onto=g)
    lab = Image(torch.as_tensor(classes.astype(np.int16))[None], g)
    mlab = resample(lab, psi, onto=g, interp="nearest").data.numpy().reshape(g.shape)
    return image, moving, psi, classes, mlab


def _residual_mm(psi, transform, grid, inside) -> float:
    pts = torch.as_tensor(grid.points("world").reshape(1, -1, 2), dtype=torch.float32)
    with torch.no_grad():
        mapped = pts if transform is None else transform(pts)
        return float((psi(mapped) - pts)[0].norm(dim=-1).numpy()[inside.reshape(-1)].mean())


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_2d_network_undoes_a_known_deformation_of_a_real_t1_slice(name, deformed_slice):
    from omnireg.pipeline import register

    fixed, moving, psi, classes, mlab = deformed_slice
    g = fixed.grid
    res = register(fixed, moving, model=name, affine=False)
    start, end = _residual_mm(psi, None, g, classes > 0), _residual_mm(psi, res.transform, g, classes > 0)
    warped = resample(Image(torch.as_tensor(mlab.astype(np.int16))[None], g), res.transform, onto=g,
                      interp="nearest").data.numpy().reshape(g.shape)
    assert end < 0.75 * start  # start: 1.5 mm mean over the brain
    for c in (SAMPLE_WM, SAMPLE_CORTEX):
        assert dice_score(warped == c, classes == c) > dice_score(mlab == c, classes == c) + 0.02


def test_omnireg_register_resolves_a_shipped_name_for_2d_images(deformed_slice, tmp_path):
    from omnireg.cli.main import main

    fixed, moving, *_ = deformed_slice
    save_image(fixed, tmp_path / "f.nii.gz")
    save_image(moving, tmp_path / "m.nii.gz")
    assert main(["register", str(tmp_path / "f.nii.gz"), str(tmp_path / "m.nii.gz"), "--model", "voxelmorph-diff",
                 "--no-affine", "--out", str(tmp_path / "out")]) == 0
    warped = load_image(tmp_path / "out" / "warped.nii.gz")
    assert warped.grid.same_as(fixed.grid)
    err = lambda img: float((img.data.reshape(-1) - fixed.data.reshape(-1)).abs().mean())  # noqa: E731
    assert err(warped) < err(moving)
