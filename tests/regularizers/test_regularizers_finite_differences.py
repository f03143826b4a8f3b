"""World-mm derivatives of displacement fields: exact on affine/quadratic fields, orientation-aware."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnireg.core.grid import Grid
from omnireg.regularizers import (
    displacement_hessian,
    displacement_jacobian,
    jacobian_determinant_from_displacement,
)

SHAPES = [(5, 6), (4, 5, 6)]


def _affine(d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = 0.3 * torch.randn(d, d, generator=g, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    return a, b


def _quadratic(d: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.05 * torch.randn(d, d, d, generator=g, dtype=torch.float64)  # u_i = sum_jk Q[i,j,k] x_j x_k


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["aligned", "oblique"])
def test_jacobian_of_affine_field_is_exact_everywhere(helpers, shape, kind):
    grid = helpers.oblique_grid(shape) if kind == "oblique" else helpers.aligned_grid(shape)
    a, b = _affine(len(shape))
    u = helpers.field_on(grid, lambda x: x @ a.T + b)
    j = displacement_jacobian(u, grid)
    assert j.shape == (1, len(shape), len(shape), *shape)
    expected = a.view(1, *a.shape, *([1] * len(shape))).expand_as(j)
    torch.testing.assert_close(j, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_jacobian_of_quadratic_field_is_exact_inside_oblique_grid(helpers, shape):
    grid = helpers.oblique_grid(shape)
    d = len(shape)
    q = _quadratic(d)
    u = helpers.field_on(grid, lambda x: torch.einsum("ijk,...j,...k->...i", q, x, x))
    j = displacement_jacobian(u, grid)
    x = grid.points("world", dtype=torch.float64)
    expected = torch.einsum("ijk,...k->ij...", q + q.transpose(1, 2), x).unsqueeze(0)
    inner = (slice(None), slice(None), slice(None)) + (slice(1, -1),) * d
    torch.testing.assert_close(j[inner], expected[inner], rtol=0, atol=1e-12)
    # one-sided differences at the border are only first-order accurate, but not wildly off
    assert (j - expected).abs().max() < 0.5


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["aligned", "oblique"])
def test_hessian_of_quadratic_field_is_exact_everywhere(helpers, shape, kind):
    grid = helpers.oblique_grid(shape) if kind == "oblique" else helpers.aligned_grid(shape)
    d = len(shape)
    q = _quadratic(d)
    u = helpers.field_on(grid, lambda x: torch.einsum("ijk,...j,...k->...i", q, x, x))
    h = displacement_hessian(u, grid)
    assert h.shape == (1, d, d, d, *shape)
    expected = (q + q.transpose(1, 2)).view(1, d, d, d, *([1] * d)).expand_as(h)
    torch.testing.assert_close(h, expected, rtol=0, atol=1e-11)


def test_hessian_of_affine_field_is_zero(helpers):
    grid = helpers.oblique_grid((4, 5, 6))
    a, b = _affine(3)
    u = helpers.field_on(grid, lambda x: x @ a.T + b)
    assert displacement_hessian(u, grid).abs().max() < 1e-12


@pytest.mark.parametrize("shape", SHAPES)
def test_determinant_is_one_for_zero_and_constant_fields(shape):
    d = len(shape)
    zero = torch.zeros(2, d, *shape, dtype=torch.float64)
    const = zero + torch.arange(1.0, d + 1, dtype=torch.float64).view(1, d, *([1] * d))
    for u in (zero, const):
        det = jacobian_determinant_from_displacement(u, (1.0,) * d)
        assert det.shape == (2, *shape)
        torch.testing.assert_close(det, torch.ones_like(det), rtol=0, atol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_determinant_of_linear_field_is_independent_of_grid_orientation(helpers, shape):
    d = len(shape)
    a, b = _affine(d, seed=3)
    expected = float(torch.linalg.det(torch.eye(d, dtype=torch.float64) + a))
    for grid in (helpers.aligned_grid(shape), helpers.oblique_grid(shape)):
        u = helpers.field_on(grid, lambda x: x @ a.T + b)
        det = jacobian_determinant_from_displacement(u, grid)
        torch.testing.assert_close(det, torch.full_like(det, expected), rtol=0, atol=1e-12)


def test_determinant_of_mirror_is_minus_one():
    u = torch.zeros(1, 3, 3, 4, 5, dtype=torch.float64)
    u[:, 1] = -2.0 * 0.5 * torch.arange(4.0, dtype=torch.float64)[:, None]  # spacing 0.5 on axis 1
    det = jacobian_determinant_from_displacement(u, (1.0, 0.5, 2.0))
    torch.testing.assert_close(det, -torch.ones_like(det))


def test_spacing_tuple_equals_axis_aligned_grid():
    g = torch.Generator().manual_seed(5)
    u = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64)
    grid = Grid((5, 6), spacing=(0.7, 1.9), origin=(3.0, -4.0))
    torch.testing.assert_close(displacement_jacobian(u, grid), displacement_jacobian(u, (0.7, 1.9)))
    torch.testing.assert_close(displacement_hessian(u, grid), displacement_hessian(u, (0.7, 1.9)))


def test_one_dimensional_field_uses_the_same_scheme():
    u = (torch.arange(6.0, dtype=torch.float64) ** 2).view(1, 1, 6)  # u = v^2, spacing 2: u = x^2 / 4
    j = displacement_jacobian(u, (2.0,))[0, 0, 0]
    torch.testing.assert_close(j[1:-1], torch.arange(1.0, 5.0, dtype=torch.float64))  # du/dx = x/2 = v
    torch.testing.assert_close(j[[0, -1]], torch.tensor([0.5, 4.5], dtype=torch.float64))  # one-sided
    torch.testing.assert_close(displacement_hessian(u, (2.0,)), torch.full((1, 1, 1, 1, 6), 0.5, dtype=torch.float64))


def test_outputs_follow_input_dtype():
    u = torch.zeros(1, 2, 4, 4, dtype=torch.float32)
    assert displacement_jacobian(u, (1.0, 1.0)).dtype == torch.float32
    assert jacobian_determinant_from_displacement(u.double(), (1.0, 1.0)).dtype == torch.float64


@pytest.mark.parametrize(
    "u, grid, error, match",
    [
        (np.zeros((1, 2, 4, 4)), (1.0, 1.0), TypeError, "u: expected a torch.Tensor"),
        (torch.zeros(1, 2, 4, 4, dtype=torch.int64), (1.0, 1.0), TypeError, "floating-point"),
        (torch.zeros(1, 3, 4, 4), (1.0, 1.0), ValueError, r"u: expected .*\(N, D, \*S\)"),
        (torch.zeros(2, 4, 4), (1.0, 1.0), ValueError, "u: expected"),
        (torch.zeros(1, 2, 4, 4), (1.0, 1.0, 1.0), ValueError, "grid: expected 2 spacings"),
        (torch.zeros(1, 2, 4, 4), (1.0, -1.0), ValueError, "positive finite"),
        (torch.zeros(1, 2, 4, 4), "1,1", TypeError, "grid: expected a Grid"),
        (torch.zeros(1, 2, 4, 4), Grid((4, 5)), ValueError, r"grid: expected a grid of shape \(4, 4\)"),
    ],
)
def test_invalid_inputs_raise_with_the_argument_name(u, grid, error, match):
    with pytest.raises(error, match=match):
        displacement_jacobian(u, grid)


@pytest.mark.parametrize("shape", [(3, 4), (3, 3, 4)])
def test_gradcheck_determinant_and_hessian(helpers, shape):
    d = len(shape)
    grid = helpers.oblique_grid(shape)
    g = torch.Generator().manual_seed(7)
    u = (0.3 * torch.randn(1, d, *shape, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: jacobian_determinant_from_displacement(t, grid), (u,))
    assert torch.autograd.gradcheck(lambda t: displacement_hessian(t, grid), (u,))
