"""Diffusion, elastic and bending penalties: identities, analytic values, spacing and orientation."""

from __future__ import annotations

import math

import pytest
import torch

from omnireg.core.grid import Grid
from omnireg.regularizers import (
    BendingEnergy,
    DiffusionPenalty,
    ElasticPenalty,
    bending_energy,
    diffusion_penalty,
    elastic_penalty,
)

SHAPES = [(5, 6), (4, 5, 6)]
PENALTIES = {
    "diffusion": diffusion_penalty,
    "elastic": lambda u, g: elastic_penalty(u, g, mu=0.7, lam=1.3),
    "bending": bending_energy,
}


def _linear(d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(d, d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)


def _elastic_formula(a: torch.Tensor, mu: float, lam: float) -> float:
    eps = 0.5 * (a + a.T)
    return float(mu * eps.square().sum() + 0.5 * lam * torch.trace(eps) ** 2)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(PENALTIES))
def test_zero_for_zero_and_constant_fields(name, shape):
    d = len(shape)
    fn = PENALTIES[name]
    zero = torch.zeros(2, d, *shape, dtype=torch.float64)
    const = zero + torch.tensor([3.0, -1.0, 2.5][:d], dtype=torch.float64).view(1, d, *([1] * d))
    for u in (zero, const):
        value = fn(u, (0.8, 1.2, 2.0)[:d])
        assert value.shape == (2,)
        assert torch.all(value == 0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["aligned", "oblique"])
def test_bending_energy_is_zero_for_affine_fields(helpers, shape, kind):
    grid = helpers.oblique_grid(shape) if kind == "oblique" else helpers.aligned_grid(shape)
    a, b = _linear(len(shape))
    u = helpers.field_on(grid, lambda x: x @ a.T + b)
    assert float(bending_energy(u, grid)) < 1e-24
    assert float(diffusion_penalty(u, grid)) > 0.1  # the field is not trivial


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["aligned", "oblique"])
def test_linear_field_gives_the_analytic_value_on_any_grid(helpers, shape, kind):
    grid = helpers.oblique_grid(shape) if kind == "oblique" else helpers.aligned_grid(shape)
    a, b = _linear(len(shape), seed=2)
    u = helpers.field_on(grid, lambda x: x @ a.T + b)
    torch.testing.assert_close(diffusion_penalty(u, grid), a.square().sum().view(1), rtol=1e-12, atol=0)
    for mu, lam in [(1.0, 0.0), (0.7, 1.3), (0.0, 2.0)]:
        expected = torch.tensor([_elastic_formula(a, mu, lam)], dtype=torch.float64)
        torch.testing.assert_close(elastic_penalty(u, grid, mu=mu, lam=lam), expected, rtol=1e-12, atol=1e-15)


def test_elastic_energy_distinguishes_rotation_from_strain():
    # u = W x with W skew (an infinitesimal rotation) has no strain; W symmetric has
    w = torch.tensor([[0.0, 0.2], [-0.2, 0.0]], dtype=torch.float64)
    grid = Grid((5, 5), spacing=(1.0, 1.0), origin=(-2.0, -2.0))
    x = grid.points("world", dtype=torch.float64)
    skew = (x @ w.T).movedim(-1, 0).unsqueeze(0)
    sym = (x @ w.abs().T).movedim(-1, 0).unsqueeze(0)
    assert float(elastic_penalty(skew, grid, mu=1.0, lam=1.0)) < 1e-28
    torch.testing.assert_close(elastic_penalty(sym, grid, mu=1.0, lam=1.0), torch.tensor([0.08], dtype=torch.float64))
    torch.testing.assert_close(diffusion_penalty(skew, grid), torch.tensor([0.08], dtype=torch.float64))


@pytest.mark.parametrize("kind", ["aligned", "oblique"])
def test_bending_energy_of_quadratic_field_is_analytic(helpers, kind):
    # u_0 = x_0 x_1 (H: two mixed entries 1), u_1 = 0.5 x_1^2 (H_11 = 1) -> sum of squares = 1 + 1 + 1 = 3
    grid = helpers.oblique_grid((5, 6)) if kind == "oblique" else helpers.aligned_grid((5, 6))
    u = helpers.field_on(grid, lambda x: torch.stack([x[..., 0] * x[..., 1], 0.5 * x[..., 1] ** 2], dim=-1))
    torch.testing.assert_close(bending_energy(u, grid), torch.tensor([3.0], dtype=torch.float64), rtol=1e-10, atol=0)


def test_bending_energy_of_quadratic_field_3d():
    # u_2 = x_0 x_2 + x_1^2: H_2 has (0,2),(2,0) = 1 and (1,1) = 2 -> 1 + 1 + 4 = 6
    grid = Grid((4, 5, 4), spacing=(0.5, 2.0, 1.0), origin=(-1.0, 3.0, 0.5))
    x = grid.points("world", dtype=torch.float64)
    u = torch.zeros(*x.shape, dtype=torch.float64)
    u[..., 2] = x[..., 0] * x[..., 2] + x[..., 1] ** 2
    u = u.movedim(-1, 0).unsqueeze(0)
    torch.testing.assert_close(bending_energy(u, grid), torch.tensor([6.0], dtype=torch.float64), rtol=1e-10, atol=0)


def test_diffusion_of_sinusoid_matches_analytic_value_within_fd_tolerance():
    # u_0 = A sin(w x_1), two full periods on 64 samples: mean (du_0/dx_1)^2 = A^2 w^2 / 2
    h, n, amp = 0.5, 64, 1.5
    w = 2 * math.pi / (32 * h)
    x1 = h * torch.arange(n, dtype=torch.float64)
    u = torch.zeros(1, 2, 3, n, dtype=torch.float64)
    u[:, 0] = amp * torch.sin(w * x1)
    value = float(diffusion_penalty(u, (2.0, h)))
    expected = amp**2 * w**2 / 2
    assert value == pytest.approx(expected, rel=0.03)
    assert value != pytest.approx(expected, rel=1e-6)  # finite differences are not exact here


@pytest.mark.parametrize("shape", SHAPES)
def test_doubling_the_spacing_scales_the_energies(shape):
    d = len(shape)
    g = torch.Generator().manual_seed(11)
    u = torch.randn(2, d, *shape, generator=g, dtype=torch.float64)
    spacing = (0.8, 1.1, 1.7)[:d]
    double = tuple(2 * s for s in spacing)
    torch.testing.assert_close(diffusion_penalty(u, double), diffusion_penalty(u, spacing) / 4)
    torch.testing.assert_close(elastic_penalty(u, double, lam=0.5), elastic_penalty(u, spacing, lam=0.5) / 4)
    torch.testing.assert_close(bending_energy(u, double), bending_energy(u, spacing) / 16)


def test_anisotropic_spacing_weights_each_axis():
    # u_0 = v_1 (one mm-step per voxel along axis 1): du_0/dx_1 = 1 / s_1
    u = torch.zeros(1, 2, 4, 5, dtype=torch.float64)
    u[:, 0] = torch.arange(5.0, dtype=torch.float64)
    torch.testing.assert_close(diffusion_penalty(u, (1.0, 4.0)), torch.tensor([1 / 16], dtype=torch.float64))
    torch.testing.assert_close(diffusion_penalty(u, (4.0, 1.0)), torch.tensor([1.0], dtype=torch.float64))


def test_modules_match_functions():
    g = torch.Generator().manual_seed(3)
    u = torch.randn(2, 2, 4, 5, generator=g)
    grid = Grid((4, 5), spacing=(1.0, 2.0))
    torch.testing.assert_close(DiffusionPenalty()(u, grid), diffusion_penalty(u, grid))
    torch.testing.assert_close(ElasticPenalty(mu=2.0, lam=3.0)(u, grid), elastic_penalty(u, grid, mu=2.0, lam=3.0))
    torch.testing.assert_close(BendingEnergy()(u, grid), bending_energy(u, grid))
    assert "mu=2" in repr(ElasticPenalty(mu=2.0, lam=3.0))


def test_outputs_follow_input_dtype():
    u = torch.zeros(1, 2, 4, 4, dtype=torch.float32)
    for fn in PENALTIES.values():
        assert fn(u, (1.0, 1.0)).dtype == torch.float32


@pytest.mark.parametrize("mu, lam, error", [(-1.0, 0.0, ValueError), (1.0, -0.5, ValueError), ("1", 0.0, TypeError)])
def test_invalid_lame_parameters_raise(mu, lam, error):
    u = torch.zeros(1, 2, 3, 3)
    with pytest.raises(error, match="mu|lam"):
        elastic_penalty(u, (1.0, 1.0), mu=mu, lam=lam)
    with pytest.raises(error, match="mu|lam"):
        ElasticPenalty(mu=mu, lam=lam)


@pytest.mark.parametrize("shape", [(3, 4), (3, 3, 4)])
@pytest.mark.parametrize("name", sorted(PENALTIES))
def test_gradcheck_float64(helpers, name, shape):
    d = len(shape)
    grid = helpers.oblique_grid(shape)
    g = torch.Generator().manual_seed(13)
    u = torch.randn(2, d, *shape, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: PENALTIES[name](t, grid), (u,))
