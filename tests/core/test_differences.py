"""omnireg.core.differences: one difference scheme and one Jacobian determinant, two border rules.

The regularizers use the one-sided rule (exact for affine fields everywhere), the evaluation the
clamped rule (ITK's); both are the same function with an option, and the transforms' Jacobian uses
the same derivative.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import omnireg.evaluation as evaluation
import omnireg.regularizers as regularizers
from omnireg.core import Grid
from omnireg.core.differences import (
    BorderRule,
    determinant,
    displacement_jacobian,
    jacobian_determinant_from_displacement,
    voxel_derivative,
)
from omnireg.transforms import DisplacementField, jacobian_determinant as transform_jacobian_determinant

D64 = torch.float64


def _oblique_grid() -> Grid:
    c, s = np.cos(0.4), np.sin(0.4)
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return Grid((7, 6, 5), (1.2, 0.9, 2.0), origin=(3.0, -1.0, 2.0), direction=direction)


def _smooth_field(grid: Grid, amplitude: float) -> torch.Tensor:
    x = grid.points("world", dtype=D64)  # (*S, 3)
    u = torch.stack([torch.sin(0.3 * x[..., 1]) + 0.1 * x[..., 2], torch.cos(0.2 * x[..., 0]), 0.05 * x[..., 0] * x[..., 1]])
    return amplitude * u[None]


def test_voxel_derivative_matches_numpy_gradient_and_the_clamped_rule_halves_the_border():
    x = torch.rand(3, 6, 4, dtype=D64)
    for dim in range(3):
        expected = np.gradient(x.numpy(), axis=dim, edge_order=1)
        np.testing.assert_allclose(voxel_derivative(x, dim).numpy(), expected, rtol=0, atol=1e-15)
        clamped = voxel_derivative(x, dim, border="clamped")
        inner = [slice(None)] * 3
        inner[dim] = slice(1, -1)
        torch.testing.assert_close(clamped[tuple(inner)], torch.from_numpy(expected)[tuple(inner)], rtol=0, atol=1e-15)
        for edge in (0, -1):
            index = [slice(None)] * 3
            index[dim] = edge
            torch.testing.assert_close(clamped[tuple(index)], torch.from_numpy(expected)[tuple(index)] / 2, rtol=0, atol=0)
    assert voxel_derivative(torch.ones(2, 1, 3), 1).eq(0).all()


def test_the_two_border_rules_agree_everywhere_but_on_the_outermost_voxels():
    grid = _oblique_grid()
    u = _smooth_field(grid, 0.8)
    one_sided = jacobian_determinant_from_displacement(u, grid)[0]
    clamped = jacobian_determinant_from_displacement(u, grid, border=BorderRule.CLAMPED)[0]
    torch.testing.assert_close(one_sided[1:-1, 1:-1, 1:-1], clamped[1:-1, 1:-1, 1:-1], rtol=0, atol=1e-14)
    assert (one_sided - clamped).abs().max() > 1e-3  # the rules do differ on the border


def test_regularizers_and_evaluation_use_this_one_function():
    assert regularizers.jacobian_determinant_from_displacement is jacobian_determinant_from_displacement
    assert regularizers.displacement_jacobian is displacement_jacobian
    grid = _oblique_grid()
    u = _smooth_field(grid, 3.0)
    expected = jacobian_determinant_from_displacement(u, grid, border="clamped")[0].numpy()
    np.testing.assert_array_equal(evaluation.jacobian_determinant(u[0].numpy(), grid), expected)


def test_the_transforms_jacobian_of_a_field_on_its_own_grid_is_the_one_sided_determinant():
    grid = _oblique_grid()
    u = _smooth_field(grid, 0.5)
    det = transform_jacobian_determinant(DisplacementField(u, grid), grid)[:, 0]
    torch.testing.assert_close(det, jacobian_determinant_from_displacement(u, grid), rtol=0, atol=1e-12)


def test_affine_field_gives_det_a_everywhere_one_sided_and_inside_clamped():
    grid = _oblique_grid()
    a = torch.tensor([[0.2, 0.1, 0.0], [-0.05, 0.3, 0.1], [0.0, 0.02, -0.1]], dtype=D64)
    x = grid.points("world", dtype=D64)
    u = torch.einsum("ij,...j->i...", a, x)[None]
    expected = float(torch.linalg.det(torch.eye(3, dtype=D64) + a))
    det = jacobian_determinant_from_displacement(u, grid)
    torch.testing.assert_close(det, torch.full_like(det, expected), rtol=1e-12, atol=0)
    clamped = jacobian_determinant_from_displacement(u, grid, border="clamped")[0, 1:-1, 1:-1, 1:-1]
    torch.testing.assert_close(clamped, torch.full_like(clamped, expected), rtol=1e-12, atol=0)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_closed_form_determinant_equals_linalg_det(d):
    a = torch.randn(4, d, d, 3, 2, dtype=D64, generator=torch.Generator().manual_seed(d))
    expected = torch.linalg.det(a.permute(0, 3, 4, 1, 2))
    torch.testing.assert_close(determinant(a), expected, rtol=1e-12, atol=1e-12)


def test_gradcheck_of_both_rules_in_float64():
    u = (0.3 * torch.randn(1, 2, 5, 4, dtype=D64)).requires_grad_()
    for border in BorderRule:
        assert torch.autograd.gradcheck(lambda t: jacobian_determinant_from_displacement(t, (1.5, 0.7), border=border), (u,))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="border: expected one of 'one-sided', 'clamped'"):
        voxel_derivative(torch.zeros(3), 0, border="itk")
    with pytest.raises(ValueError, match=r"grid: expected a grid of shape \(4, 4\)"):
        displacement_jacobian(torch.zeros(1, 2, 4, 4), Grid((4, 5)))
    with pytest.raises(ValueError, match="a: expected matrices"):
        determinant(torch.zeros(2, 4, 4))
