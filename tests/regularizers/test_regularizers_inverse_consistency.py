"""Inverse consistency: zero for exact inverse pairs, analytic for wrong ones, world-to-voxel correct."""

from __future__ import annotations

import math

import pytest
import torch

from omnireg.regularizers import InverseConsistencyPenalty, inverse_consistency_penalty

SHAPES = [(6, 7), (4, 5, 6)]


def _constant(vec: list[float], shape: tuple[int, ...]) -> torch.Tensor:
    d = len(shape)
    return torch.tensor(vec[:d], dtype=torch.float64).view(1, d, *([1] * d)).expand(1, d, *shape).clone()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["aligned", "oblique"])
def test_translation_and_its_negative_are_consistent(helpers, shape, kind):
    grid = helpers.oblique_grid(shape) if kind == "oblique" else helpers.aligned_grid(shape)
    t = _constant([2.3, -1.7, 0.9], shape)
    value = inverse_consistency_penalty(t, -t, grid)
    assert value.shape == (1,)
    assert float(value) < 1e-24


@pytest.mark.parametrize("shape", SHAPES)
def test_translation_composed_with_itself_gives_twice_its_norm(shape):
    vec = [2.0, -1.0, 0.5][: len(shape)]
    t = _constant(vec, shape)
    expected = 4 * sum(v * v for v in vec)  # e = t + t
    for symmetric in (True, False):
        value = inverse_consistency_penalty(t, t, (1.0,) * len(shape), symmetric=symmetric)
        torch.testing.assert_close(value, torch.tensor([expected], dtype=torch.float64))


@pytest.mark.parametrize("shape", SHAPES)
def test_linear_contraction_and_its_inverse_on_oblique_grid(helpers, shape):
    # T_f(x) = 0.8 R x (R a small rotation), T_b = T_f^-1; forward points stay inside the grid, where
    # linear interpolation of the linear field u_b is exact
    d = len(shape)
    grid = helpers.oblique_grid(shape)
    c, s = math.cos(0.1), math.sin(0.1)
    r = torch.eye(d, dtype=torch.float64)
    r[:2, :2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    fwd = 0.8 * r
    bwd = torch.linalg.inv(fwd)
    eye = torch.eye(d, dtype=torch.float64)
    u_f = helpers.field_on(grid, lambda x: x @ (fwd - eye).T)
    u_b = helpers.field_on(grid, lambda x: x @ (bwd - eye).T)
    assert float(inverse_consistency_penalty(u_f, u_b, grid, symmetric=False)) < 1e-20
    # the naive "inverse" -u_f is not consistent, and neither is ignoring the grid's geometry
    assert float(inverse_consistency_penalty(u_f, -u_f, grid, symmetric=False)) > 1e-3
    assert float(inverse_consistency_penalty(u_f, u_b, (1.0,) * d, symmetric=False)) > 1e-3


def test_symmetric_is_the_mean_of_both_directions():
    g = torch.Generator().manual_seed(8)
    u_f = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64)
    u_b = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64)
    sp = (1.0, 0.5)
    one = inverse_consistency_penalty(u_f, u_b, sp, symmetric=False)
    other = inverse_consistency_penalty(u_b, u_f, sp, symmetric=False)
    both = inverse_consistency_penalty(u_f, u_b, sp, symmetric=True)
    assert both.shape == (2,)
    torch.testing.assert_close(both, 0.5 * (one + other))


def test_module_matches_function():
    g = torch.Generator().manual_seed(9)
    u_f = torch.randn(1, 2, 5, 5, generator=g)
    u_b = torch.randn(1, 2, 5, 5, generator=g)
    module = InverseConsistencyPenalty(symmetric=False, interp="cubic", padding="zeros")
    expected = inverse_consistency_penalty(u_f, u_b, (1.0, 1.0), symmetric=False, interp="cubic", padding="zeros")
    torch.testing.assert_close(module(u_f, u_b, (1.0, 1.0)), expected)
    assert "padding=zeros" in repr(module)


def test_invalid_inputs_raise():
    u = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match="u_backward"):
        inverse_consistency_penalty(u, torch.zeros(1, 2, 4, 5), (1.0, 1.0))
    with pytest.raises(TypeError, match="u_backward"):
        inverse_consistency_penalty(u, u.double(), (1.0, 1.0))
    with pytest.raises(ValueError, match="interp"):
        inverse_consistency_penalty(u, u, (1.0, 1.0), interp="quadratic")
    with pytest.raises(ValueError, match="u_forward"):
        inverse_consistency_penalty(torch.zeros(1, 3, 4, 4), u, (1.0, 1.0))


@pytest.mark.parametrize("shape", [(4, 5), (3, 3, 4)])
def test_gradcheck_float64(helpers, shape):
    d = len(shape)
    grid = helpers.oblique_grid(shape)
    g = torch.Generator().manual_seed(10)
    u_f = (0.7 * torch.randn(1, d, *shape, generator=g, dtype=torch.float64)).requires_grad_()
    u_b = (0.7 * torch.randn(1, d, *shape, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: inverse_consistency_penalty(a, b, grid), (u_f, u_b))
