"""Cubic B-spline FFD: control grid placement, exactness, ITK/scipy agreement, separable path, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnireg.core import Grid
from omnireg.transforms import BSplineTransform, DisplacementField, bspline_kernel, control_grid_for, warp

D64 = torch.float64


def _random_ffd(grid: Grid, spacing: float, seed: int = 0, scale: float = 1.0) -> BSplineTransform:
    ffd = BSplineTransform.from_grid(grid, spacing_mm=spacing, dtype=D64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ffd.coefficients.copy_(torch.randn(ffd.coefficients.shape, generator=g, dtype=D64) * scale)
    return ffd


def test_kernel_is_a_partition_of_unity_with_known_values():
    t = torch.linspace(0, 1, 11, dtype=D64)
    total = sum(bspline_kernel(t - k) for k in range(-2, 3))
    torch.testing.assert_close(total, torch.ones_like(t))
    torch.testing.assert_close(bspline_kernel(torch.tensor([0.0, 1.0, 2.0, 0.5], dtype=D64)),
                               torch.tensor([2 / 3, 1 / 6, 0.0, 23 / 48], dtype=D64))


def test_control_grid_covers_the_image_with_full_support(oblique_grid):
    cg = control_grid_for(oblique_grid, 5.0)
    assert cg.spacing == (5.0, 5.0, 5.0)
    np.testing.assert_allclose(cg.direction, oblique_grid.direction)
    vox = oblique_grid.transform_points(oblique_grid.points("world", dtype=D64), "world", "voxel")
    p = cg.transform_points(vox * 0 + oblique_grid.points("world", dtype=D64), "world", "voxel")
    upper = torch.tensor(cg.shape, dtype=D64) - 2
    assert (p >= 1 - 1e-9).all() and (p <= upper + 1e-9).all()
    # the image is centred in the mesh
    first = p.reshape(-1, 3).min(0).values
    last = p.reshape(-1, 3).max(0).values
    torch.testing.assert_close(first - 1, upper - last)


def test_zero_coefficients_give_the_identity(oblique_grid):
    ffd = BSplineTransform.from_grid(oblique_grid, spacing_mm=4.0)
    x = oblique_grid.points("world")[None]
    assert torch.equal(ffd.displacement(oblique_grid), torch.zeros(1, 3, *oblique_grid.shape))
    torch.testing.assert_close(ffd(x), x)


def test_constant_coefficients_give_an_exact_constant_displacement(oblique_grid):
    ffd = BSplineTransform.from_grid(oblique_grid, spacing_mm=7.0, dtype=D64)
    c = torch.tensor([1.5, -2.0, 0.25], dtype=D64)
    with torch.no_grad():
        ffd.coefficients.copy_(c.view(1, 3, 1, 1, 1).expand_as(ffd.coefficients))
    u = ffd.displacement(oblique_grid)
    torch.testing.assert_close(u, c.view(1, 3, 1, 1, 1).expand_as(u), rtol=0, atol=1e-12)
    x = oblique_grid.points("world", dtype=D64).reshape(1, -1, 3)
    torch.testing.assert_close(ffd(x) - x, c.expand_as(x), rtol=0, atol=1e-12)


def test_agrees_with_itk_bspline_transform(helpers, oblique_grid):
    sitk = pytest.importorskip("SimpleITK")
    ffd = _random_ffd(oblique_grid, 6.0)
    cg = ffd.control_grid
    f = helpers.lps_from_ras
    st = sitk.BSplineTransform(3, 3)
    st.SetFixedParameters(list(cg.shape) + (f @ np.asarray(cg.origin)).tolist() + list(cg.spacing)
                          + (f @ cg.direction).reshape(-1).tolist())
    c_lps = np.einsum("ab,b...->a...", f, ffd.coefficients[0].detach().numpy())
    st.SetParameters(np.concatenate([np.transpose(c_lps[a], (2, 1, 0)).reshape(-1) for a in range(3)]).tolist())
    g = torch.Generator().manual_seed(2)
    vox = torch.rand(60, 3, generator=g, dtype=D64) * (torch.tensor(oblique_grid.shape, dtype=D64) - 1)
    pts = oblique_grid.transform_points(vox, "voxel", "world")
    ours = ffd(pts[None])[0].detach().numpy()
    ref = np.array([f @ np.array(st.TransformPoint(tuple((f @ p).tolist()))) for p in pts.numpy()])
    np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_agrees_with_scipy_spline_of_zero_extended_coefficients():
    ndimage = pytest.importorskip("scipy.ndimage")
    grid = Grid((9, 11), spacing=(1.0, 1.0))
    ffd = _random_ffd(grid, 3.0, seed=4)
    cg = ffd.control_grid
    g = torch.Generator().manual_seed(5)
    pts_vox = torch.rand(40, 2, generator=g, dtype=D64) * (torch.tensor(cg.shape, dtype=D64) + 4) - 3  # also outside
    pts = cg.transform_points(pts_vox, "voxel", "world")
    ours = (ffd(pts[None])[0] - pts).detach().numpy()
    coef = ffd.coefficients[0].detach().numpy()
    for a in range(2):
        ref = ndimage.map_coordinates(coef[a], pts_vox.numpy().T, order=3, prefilter=False, mode="grid-constant", cval=0.0)
        np.testing.assert_allclose(ours[:, a], ref, atol=1e-12)


def test_separable_grid_evaluation_equals_pointwise_evaluation(oblique_grid):
    ffd = _random_ffd(oblique_grid, 5.0, seed=1)
    x = oblique_grid.points("world", dtype=D64)
    pointwise = (ffd(x.reshape(1, -1, 3)) - x.reshape(1, -1, 3)).reshape(1, *oblique_grid.shape, 3)
    torch.testing.assert_close(ffd.displacement(oblique_grid).movedim(1, -1), pointwise, rtol=0, atol=1e-12)
    finer = oblique_grid.with_spacing(1.0)  # same direction, other spacing and origin: still separable
    xf = finer.points("world", dtype=D64)
    pw = (ffd(xf.reshape(1, -1, 3)) - xf.reshape(1, -1, 3)).reshape(1, *finer.shape, 3)
    torch.testing.assert_close(ffd.displacement(finer).movedim(1, -1), pw, rtol=0, atol=1e-12)


def test_ffd_is_smooth_between_voxels():
    grid = Grid((12, 12), spacing=(1.0, 1.0))
    ffd = _random_ffd(grid, 4.0, seed=3)
    # second differences along a fine line are small and continuous (C2 spline)
    t = torch.linspace(2.0, 9.0, 701, dtype=D64)
    line = torch.stack([t, torch.full_like(t, 5.3)], -1)[None]
    u = (ffd(line) - line)[0, :, 0]
    d2 = u[2:] - 2 * u[1:-1] + u[:-2]
    assert d2.abs().max() < 1e-3
    assert (d2[1:] - d2[:-1]).abs().max() < 1e-5


def test_gradcheck_of_warp_wrt_coefficients():
    grid = Grid((6, 5), spacing=(1.0, 1.5), origin=(0.2, -0.1))
    ffd0 = BSplineTransform.from_grid(grid, spacing_mm=3.0, dtype=D64)
    g = torch.Generator().manual_seed(7)
    moving = torch.randn(1, 1, 6, 5, generator=g, dtype=D64)
    coef = (torch.randn(ffd0.coefficients.shape, generator=g, dtype=D64) * 0.3).requires_grad_()

    def f(c):
        return warp(moving, grid, BSplineTransform(c, ffd0.control_grid, learnable=False), grid)

    assert torch.autograd.gradcheck(f, (coef,))


def test_gradcheck_of_points_through_the_pointwise_path():
    grid = Grid((6, 6), spacing=(1.0, 1.0))
    ffd = _random_ffd(grid, 2.5, seed=8).detach()
    pts = (torch.rand(1, 5, 2, generator=torch.Generator().manual_seed(1), dtype=D64) * 4 + 0.7).requires_grad_()
    assert torch.autograd.gradcheck(ffd, (pts,))


def test_inverse_is_a_dense_field_that_round_trips():
    grid = Grid((20, 20), spacing=(1.0, 1.0), origin=(-10.0, -10.0))
    ffd = _random_ffd(grid, 5.0, seed=9, scale=0.8)
    inv = ffd.inverse(grid=grid, tol=1e-5, max_iter=100)
    assert isinstance(inv, DisplacementField)
    x = grid.points("world", dtype=D64)[3:-3, 3:-3].reshape(1, -1, 2)
    dense = DisplacementField.from_transform(ffd, grid)
    assert (dense(inv(x)) - x).norm(dim=-1).max() < 1e-4  # exact fixed point of the sampled field
    # against the spline itself, the linear interpolation of u between voxel centres adds ~1e-2 mm
    assert (ffd(inv(x)) - x).norm(dim=-1).max() < 5e-2


def test_validation():
    with pytest.raises(ValueError, match="spacing_mm"):
        BSplineTransform.from_grid(Grid((5, 5)), spacing_mm=0.0)
    with pytest.raises(ValueError, match="control_grid"):
        BSplineTransform(torch.zeros(1, 2, 3, 5), Grid((3, 5)))
    with pytest.raises(ValueError, match="coefficients"):
        BSplineTransform(torch.zeros(1, 3, 5, 5), Grid((5, 5)))
