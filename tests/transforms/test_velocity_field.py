"""Stationary velocity fields: identity, constant flow, steps, inverse consistency, gradients."""

from __future__ import annotations

import pytest
import torch

from omnireg.core import Grid
from omnireg.transforms import DisplacementField, StationaryVelocityField, compose, integrate_velocity, warp

D64 = torch.float64


def _velocity(grid: Grid, amp: float) -> torch.Tensor:
    x = grid.points("world", dtype=D64)
    return torch.stack([amp * torch.sin(0.2 * x[..., (a + 1) % grid.ndim] + 0.5 * a) for a in range(grid.ndim)], 0)[None]


def test_zero_velocity_is_the_identity(oblique_grid):
    svf = StationaryVelocityField(torch.zeros(1, 3, *oblique_grid.shape), oblique_grid)
    x = oblique_grid.points("world")[None]
    assert torch.equal(svf.transform_grid(oblique_grid), x)
    assert torch.equal(svf.displacement(oblique_grid), torch.zeros(1, 3, *oblique_grid.shape))


def test_zero_steps_returns_the_velocity_and_constant_velocity_is_a_translation(oblique_grid):
    v = _velocity(oblique_grid, 1.0)
    torch.testing.assert_close(integrate_velocity(v, oblique_grid, steps=0), v)
    const = torch.tensor([0.7, -0.4, 0.2], dtype=D64).view(1, 3, 1, 1, 1).expand(1, 3, *oblique_grid.shape)
    u = integrate_velocity(const, oblique_grid, steps=6)
    # exact wherever the squaring steps stay inside the field (the largest step is 0.5 * |v| < 1 voxel)
    torch.testing.assert_close(u[..., 1:-1, 1:-1, 1:-1], const[..., 1:-1, 1:-1, 1:-1], rtol=0, atol=1e-12)


def test_scaling_and_squaring_converges_with_more_steps():
    grid = Grid((20, 20), spacing=(1.0, 1.0), origin=(-10.0, -10.0))
    v = _velocity(grid, 2.0)
    u6 = integrate_velocity(v, grid, steps=6)
    u10 = integrate_velocity(v, grid, steps=10)
    assert (u6 - u10)[..., 3:-3, 3:-3].abs().max() < 0.05
    assert (u6 - v).abs().max() > 0.1  # the flow differs from the velocity itself


def test_inverse_consistency_of_exp_v_and_exp_minus_v():
    grid = Grid((24, 22), spacing=(1.0, 1.2), origin=(-12.0, -13.0))
    svf = StationaryVelocityField(_velocity(grid, 1.5), grid, steps=7)
    inv = svf.inverse()
    assert isinstance(inv, StationaryVelocityField) and inv.steps == 7
    torch.testing.assert_close(inv.velocity, -svf.velocity)
    x = grid.points("world", dtype=D64)[4:-4, 4:-4].reshape(1, -1, 2)
    assert (compose(svf, inv)(x) - x).norm(dim=-1).max() < 5e-2
    assert (compose(inv, svf)(x) - x).norm(dim=-1).max() < 5e-2


def test_displacement_field_is_linked_to_the_velocity():
    grid = Grid((6, 6))
    svf = StationaryVelocityField(torch.zeros(1, 2, 6, 6), grid, steps=3)
    df = svf.displacement_field()
    assert isinstance(df, DisplacementField)
    df.field.sum().backward()
    assert svf.velocity.grad is not None


def test_gradcheck_of_warp_wrt_velocity():
    grid = Grid((5, 6), spacing=(1.0, 1.3))
    g = torch.Generator().manual_seed(0)
    moving = torch.randn(1, 1, 5, 6, generator=g, dtype=D64)
    v0 = (torch.rand(1, 2, 5, 6, generator=g, dtype=D64) * 0.8 + 0.1).requires_grad_()

    def f(v):
        return warp(moving, grid, StationaryVelocityField(v, grid, steps=3, learnable=False), grid)

    assert torch.autograd.gradcheck(f, (v0,))


def test_steps_are_validated():
    grid = Grid((4, 4))
    with pytest.raises(ValueError, match="steps"):
        StationaryVelocityField(torch.zeros(1, 2, 4, 4), grid, steps=-1)
    with pytest.raises(ValueError, match="steps"):
        integrate_velocity(torch.zeros(1, 2, 4, 4), grid, steps=2.5)
    with pytest.raises(ValueError, match="velocity"):
        StationaryVelocityField(torch.zeros(1, 2, 4, 5), grid)
