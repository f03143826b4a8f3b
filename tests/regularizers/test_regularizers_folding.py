"""Folding penalty: zero for smooth small fields, the analytic hinge value for folded ones."""

from __future__ import annotations

import math

import pytest
import torch

from omnireg.regularizers import FoldingPenalty, folding_penalty, jacobian_determinant_from_displacement

SHAPES = [(6, 7), (4, 5, 6)]


@pytest.mark.parametrize("shape", SHAPES)
def test_zero_for_smooth_small_field(helpers, shape):
    grid = helpers.oblique_grid(shape)
    d = len(shape)
    # amplitude 0.5 mm, wavelength ~ 12 mm: |du/dx| < 0.3, det(I + J) > 0.3
    u = helpers.field_on(grid, lambda x: 0.5 * torch.sin(x[..., list(range(1, d)) + [0]] / 2.0 + 0.3))
    assert float(jacobian_determinant_from_displacement(u, grid).min()) > 0.3
    value = folding_penalty(u, grid)
    assert value.shape == (1,)
    assert float(value) == 0.0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps", [0.0, 0.01, 0.2])
def test_mirror_field_gives_the_hinge_value(helpers, shape, eps):
    # T mirrors world axis 0: u_0 = -2 x_0, det(I + J) = -1 everywhere -> (eps + 1)^2
    grid = helpers.oblique_grid(shape)
    u = helpers.field_on(grid, lambda x: torch.cat([-2.0 * x[..., :1], torch.zeros_like(x[..., 1:])], dim=-1))
    expected = torch.tensor([(1.0 + eps) ** 2], dtype=torch.float64)
    torch.testing.assert_close(folding_penalty(u, grid, eps=eps), expected, rtol=1e-12, atol=0)


def test_local_fold_is_penalised_and_matches_the_determinant():
    # a Gaussian bump u_0 = a exp(-r^2 / 2 s^2): du_0/dx_0 < -1 on one flank when a / s > e^0.5
    n = 15
    x = torch.arange(n, dtype=torch.float64) - 7
    r2 = x[:, None] ** 2 + x[None, :] ** 2
    u = torch.zeros(1, 2, n, n, dtype=torch.float64)
    u[:, 0] = 6.0 * torch.exp(-r2 / (2 * 2.0**2))
    det = jacobian_determinant_from_displacement(u, (1.0, 1.0))
    assert float(det.min()) < 0 < float(det.max())
    value = folding_penalty(u, (1.0, 1.0), eps=0.05)
    assert float(value) > 0
    expected = torch.relu(0.05 - det).square().mean()
    torch.testing.assert_close(value, expected.view(1))
    # a smaller bump of the same width does not fold and is not penalised
    assert float(folding_penalty(u / 10, (1.0, 1.0), eps=0.05)) == 0.0


def test_module_matches_function_and_validates_eps():
    g = torch.Generator().manual_seed(2)
    u = 2 * torch.randn(1, 2, 5, 5, generator=g)
    torch.testing.assert_close(FoldingPenalty(eps=0.1)(u, (1.0, 2.0)), folding_penalty(u, (1.0, 2.0), eps=0.1))
    assert "eps=0.1" in repr(FoldingPenalty(eps=0.1))
    with pytest.raises(ValueError, match="eps"):
        folding_penalty(u, (1.0, 1.0), eps=-0.1)
    with pytest.raises(ValueError, match="eps"):
        FoldingPenalty(eps=math.nan)
    with pytest.raises(TypeError, match="eps"):
        FoldingPenalty(eps="0.1")


@pytest.mark.parametrize("shape", [(4, 4), (3, 3, 4)])
def test_gradcheck_float64(helpers, shape):
    d = len(shape)
    grid = helpers.oblique_grid(shape)
    g = torch.Generator().manual_seed(4)
    u = torch.randn(2, d, *shape, generator=g, dtype=torch.float64, requires_grad=True)
    det = jacobian_determinant_from_displacement(u.detach(), grid)
    assert float(det.min()) < 0.5 < float(det.max())  # both branches of the hinge are exercised
    assert torch.autograd.gradcheck(lambda t: folding_penalty(t, grid, eps=0.5), (u,))
