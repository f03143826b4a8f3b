"""Jacobians in world units: affine exactness, analytic fields on oblique grids, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnireg.core import Grid
from omnireg.transforms import (
    Affine,
    BSplineTransform,
    DisplacementField,
    Rigid,
    jacobian_determinant,
    jacobian_matrix,
)

D64 = torch.float64


@pytest.mark.parametrize("shape", [(7, 6, 5), (6, 1, 5)])
def test_affine_jacobian_equals_its_matrix_everywhere(oblique_grid, shape):
    grid = Grid(shape, oblique_grid.spacing, oblique_grid.origin, oblique_grid.direction)
    a = torch.tensor([[1.1, 0.2, 0.0], [-0.1, 0.9, 0.3], [0.05, 0.1, 1.2]], dtype=D64)
    aff = Affine(3, linear=a, translation=[3.0, -1.0, 2.0], center=[1.0, 1.0, 1.0], dtype=D64)
    jac = jacobian_matrix(aff, grid)
    assert jac.shape == (1, 3, 3, *shape)
    torch.testing.assert_close(jac.permute(0, 3, 4, 5, 1, 2), a.expand(1, *shape, 3, 3), rtol=0, atol=1e-10)
    det = jacobian_determinant(aff, grid)
    assert det.shape == (1, 1, *shape)
    torch.testing.assert_close(det, torch.full_like(det, torch.linalg.det(a).item()), rtol=0, atol=1e-10)


def test_rigid_motion_preserves_volume():
    grid = Grid((6, 7), spacing=(0.8, 1.7))
    det = jacobian_determinant(Rigid(2, rotation=0.7, translation=[4.0, 1.0], dtype=D64), grid)
    torch.testing.assert_close(det, torch.ones_like(det), rtol=0, atol=1e-12)


def test_analytic_jacobian_of_a_smooth_field_on_an_oblique_grid(oblique_grid):
    # u(x) = (a sin(b x_A), a cos(b x_S), a sin(b x_R)) in world coordinates
    amp, freq = 0.8, 0.12
    x = oblique_grid.points("world", dtype=D64)
    r, an, s = x[..., 0], x[..., 1], x[..., 2]
    u = torch.stack([amp * torch.sin(freq * an), amp * torch.cos(freq * s), amp * torch.sin(freq * r)], 0)[None]
    jac = jacobian_matrix(DisplacementField(u, oblique_grid), oblique_grid)[0]
    expected = torch.zeros(3, 3, *oblique_grid.shape, dtype=D64)
    for a in range(3):
        expected[a, a] = 1.0
    expected[0, 1] = amp * freq * torch.cos(freq * an)
    expected[1, 2] = -amp * freq * torch.sin(freq * s)
    expected[2, 0] = amp * freq * torch.cos(freq * r)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1), slice(1, -1))
    err = (jac - expected)[inner].abs().max().item()
    # central differences: error ~ amp * freq^3 * h^2 / 6 with h <= 2.5 mm * sqrt(3)
    assert err < 2e-3
    det = jacobian_determinant(DisplacementField(u, oblique_grid), oblique_grid)[0, 0]
    exp_det = torch.linalg.det(expected.permute(2, 3, 4, 0, 1))
    assert (det - exp_det)[1:-1, 1:-1, 1:-1].abs().max() < 5e-3


def test_bspline_jacobian_matches_autograd():
    grid = Grid((16, 14), spacing=(0.5, 0.75), origin=(-4.0, -6.0))
    ffd = BSplineTransform.from_grid(grid, spacing_mm=5.0, dtype=D64)
    with torch.no_grad():
        ffd.coefficients.copy_(torch.randn(ffd.coefficients.shape, generator=torch.Generator().manual_seed(0), dtype=D64))
    ffd = ffd.detach()
    fd = jacobian_matrix(ffd, grid)[0]
    x = grid.points("world", dtype=D64)
    for i, j in ((4, 3), (9, 10), (0, 0)):
        auto = torch.autograd.functional.jacobian(lambda q: ffd(q.view(1, 1, 2))[0, 0], x[i, j])
        tol = 1e-2 if (i, j) != (0, 0) else 5e-2  # O(h^2) inside; one-sided first-order at the border
        np.testing.assert_allclose(fd[:, :, i, j].numpy(), auto.numpy(), atol=tol)


def test_gradcheck_of_jacobian_determinant_wrt_field():
    grid = Grid((4, 5), spacing=(1.0, 2.0))
    u = (torch.randn(1, 2, 4, 5, generator=torch.Generator().manual_seed(1), dtype=D64) * 0.2).requires_grad_()
    assert torch.autograd.gradcheck(lambda f: jacobian_determinant(DisplacementField(f, grid, learnable=False), grid), (u,))


def test_folding_gives_a_negative_determinant():
    grid = Grid((9, 3))
    u = torch.zeros(1, 2, 9, 3, dtype=D64)
    u[0, 0, 4] = 3.0  # the middle row jumps past its neighbour
    det = jacobian_determinant(DisplacementField(u, grid), grid)
    assert det[0, 0, 5].min() < 0


def test_validation():
    with pytest.raises(ValueError, match="grid"):
        jacobian_matrix(Rigid(3), Grid((4, 4)))
    with pytest.raises(TypeError, match="transform"):
        jacobian_determinant("rigid", Grid((4, 4)))
