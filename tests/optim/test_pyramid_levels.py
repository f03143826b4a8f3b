"""Pyramid levels at one physical resolution for both images (anisotropic images smoothed per axis)."""

import numpy as np
import torch

from omnireg.core import Grid
from omnireg.core.filters import gaussian_blur
from omnireg.optim.pyramid import pyramid_level


def test_a_thick_slice_axis_is_neither_coarsened_nor_smoothed_and_the_slice_plane_is_smoothed_to_the_level():
    grid = Grid((40, 40, 6), spacing=(1.0, 1.0, 8.0))
    data = torch.zeros(1, 1, 40, 40, 6)
    data[0, 0, 20, 20, :] = 1.0  # a line through the slices
    level = pyramid_level(data, grid, shrink=2, reference_mm=1.0)
    np.testing.assert_allclose(level.grid.spacing, (2.0, 2.0, 8.0), rtol=1e-6)
    assert level.grid.shape[2] == 6
    # smoothed by 0.5 * (2 - 1) = 0.5 mm in the slice plane, not at all across the slices
    expect = gaussian_blur(data, [0.5, 0.5, 0.0])
    pts = grid.transform_points(level.grid.points("world", dtype=torch.float64), "world", "voxel")
    from omnireg.core import sample

    want = sample(expect, pts.unsqueeze(0).float(), interp="linear", padding="border")
    torch.testing.assert_close(level.data, want, atol=1e-6, rtol=1e-5)
    # every slice keeps the same in-plane profile (no smoothing along the thick axis)
    torch.testing.assert_close(level.data[..., 0], level.data[..., 3])


def test_an_image_finer_than_the_reference_is_smoothed_to_it_at_full_resolution():
    grid = Grid((32, 32), spacing=(0.5, 0.5))
    data = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    level = pyramid_level(data, grid, shrink=1, reference_mm=2.0)
    np.testing.assert_allclose(level.grid.spacing, (2.0, 2.0))
    # sigma 0.5 * (2 - 0.5) = 0.75 mm = 1.5 voxels before resampling
    expect = gaussian_blur(data, [1.5, 1.5])
    pts = grid.transform_points(level.grid.points("world", dtype=torch.float64), "world", "voxel")
    from omnireg.core import sample

    torch.testing.assert_close(level.data, sample(expect, pts.unsqueeze(0).float(), interp="linear", padding="border"),
                               atol=1e-6, rtol=1e-5)


def test_isotropic_images_get_the_classic_pyramid():
    grid = Grid((24, 24, 24), spacing=(2.0, 2.0, 2.0))
    data = torch.rand(1, 1, 24, 24, 24, generator=torch.Generator().manual_seed(1))
    new = pyramid_level(data, grid, shrink=4, reference_mm=2.0)
    old = pyramid_level(data, grid, shrink=4)
    assert new.grid.same_as(old.grid)
    torch.testing.assert_close(new.data, old.data)
