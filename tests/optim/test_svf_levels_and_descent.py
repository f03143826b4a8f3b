"""Coarse-to-fine velocity grids of SVF stages, and the normalised steepest descent (``optimizer: gradient``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from omnireg.core import Grid
from omnireg.optim.config import Optimizer, StageConfig
from omnireg.optim.optimizers import gradient_descent
from omnireg.optim.params import velocity_grid
from omnireg.optim.pyramid import regrid
from omnireg.optim.result import LevelHistory


def _grid(shape=(40, 48, 36), spacing=(1.0, 1.0, 1.0)) -> Grid:
    return Grid(shape, spacing, (-10.0, 5.0, 3.0), np.eye(3))


def test_velocity_grid_is_twice_the_finest_level_and_a_coarser_level_keeps_its_own_spacing():
    g = _grid()
    st = StageConfig(transform="svf", metric="lncc")
    # finest level at full resolution: 2 mm (twice 1 mm, and at least 2 mm)
    assert velocity_grid(st, g, 1.0, 1.0).spacing == pytest.approx((2.0, 2.0, 2.0))
    # a 4x level holds its velocity at 4 mm, a 2x level at the final 2 mm
    assert velocity_grid(st, g, 4.0, 1.0).spacing == pytest.approx((4.0, 4.0, 4.0))
    assert velocity_grid(st, g, 2.0, 1.0).spacing == pytest.approx((2.0, 2.0, 2.0))
    # a finest level bounded to about 2 mm (max_level_voxels): 4 mm velocity on every level
    assert velocity_grid(st, g, 1.9, 1.9).spacing == pytest.approx((3.8, 3.8, 3.8), abs=0.2)
    # an explicit spacing is the final grid's
    st.svf_spacing_mm = 3.0
    assert velocity_grid(st, g, 1.0, 1.0).spacing == pytest.approx((3.0, 3.0, 3.0), abs=0.1)
    assert velocity_grid(st, g, 8.0, 1.0).spacing == pytest.approx((8.0, 8.0, 8.0), abs=0.5)
    # the grid covers the fixed image's extent (same world centre)
    v = velocity_grid(st, g, 4.0, 1.0)
    assert np.allclose(v.transform_points(np.array([(n - 1) / 2 for n in v.shape]), "voxel", "world"),
                       g.transform_points(np.array([(n - 1) / 2 for n in g.shape]), "voxel", "world"))


def test_a_linear_velocity_is_resampled_exactly_onto_a_finer_grid():
    coarse, fine = _grid((10, 12, 9), (4.0, 4.0, 4.0)), _grid((10, 12, 9), (4.0, 4.0, 4.0)).with_spacing(2.0)
    a = torch.tensor([[0.02, -0.01, 0.03], [0.0, 0.015, -0.02], [0.01, 0.0, 0.005]], dtype=torch.float64)
    b = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)

    def field(g: Grid) -> torch.Tensor:
        x = g.points("world", dtype=torch.float64)
        return (x @ a.T + b).movedim(-1, 0).unsqueeze(0)

    got = regrid(field(coarse), coarse, fine, "linear", "border")
    want = field(fine)
    # exact inside the coarse grid's voxel centres (border values beyond them)
    inside = (slice(None), slice(None), slice(1, -1), slice(1, -1), slice(1, -1))
    assert torch.allclose(got[inside], want[inside], atol=1e-9)


def _run(opt: Optimizer, loss_fn, z: torch.nn.Parameter, iters: int, lr: float) -> LevelHistory:
    holder = type("H", (), {"z": [z]})()
    stage = StageConfig(transform="svf", metric="lncc", optimizer=opt, learning_rate=lr, tolerance=0.0)
    hist = LevelHistory(0, 0, "svf", "lncc", 1.0)
    gradient_descent(holder, loss_fn, opt, iters, stage, hist, lambda **k: None, 0, 1, 0, 1)
    return hist


def test_normalised_descent_moves_the_largest_point_by_the_step_and_keeps_relative_sizes():
    # a linear loss: gradient w everywhere; one step of "gradient" is -step * w / max_x |w(x)|
    w = torch.zeros(1, 3, 4, 5, 6, dtype=torch.float64)
    w[0, 0, 1, 2, 3] = 2.0
    w[0, 1, 2, 2, 2] = 0.5
    w[0, 2, 3, 4, 5] = -0.01  # a weak gradient: a small step (Adam would make it a full one)
    z = torch.nn.Parameter(torch.zeros_like(w))
    _run(Optimizer.GRADIENT, lambda: (w * z).sum(), z, 1, 0.5)
    assert torch.allclose(z.detach(), -0.5 * w / 2.0)
    z_adam = torch.nn.Parameter(torch.zeros_like(w))
    _run(Optimizer.ADAM, lambda: (w * z_adam).sum(), z_adam, 1, 0.5)
    assert float(z_adam.detach()[0, 2, 3, 4, 5]) == pytest.approx(0.5, rel=1e-3)  # what the normalised descent avoids
    assert float(z.detach()[0, 2, 3, 4, 5]) == pytest.approx(0.0025)


def test_normalised_descent_halves_its_step_when_the_loss_goes_up_and_converges():
    target = torch.tensor([3.0, -1.5], dtype=torch.float64)
    z = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    hist = _run(Optimizer.GRADIENT, lambda: (z - target).square().sum(), z, 200, 1.0)
    assert torch.allclose(z.detach(), target, atol=1e-3)
    assert hist.losses[-1] < 1e-5 and math.isfinite(hist.losses[0])


@pytest.mark.parametrize("metric", ["mse", "ncc"])
def test_a_point_wise_measure_on_the_mask_points_equals_the_masked_whole_grid_in_value_and_gradient(metric):
    from omnireg.optim.problem import LevelProblem
    from omnireg.optim.pyramid import Level
    from omnireg.similarity import get_similarity

    g = torch.Generator().manual_seed(0)
    grid = _grid((12, 10, 9), (2.0, 2.0, 2.0))
    fixed = Level(torch.rand(1, 2, *grid.shape, generator=g, dtype=torch.float64), grid)
    moving = Level(torch.rand(1, 2, *grid.shape, generator=g, dtype=torch.float64), grid)
    mask = torch.zeros(1, 1, *grid.shape, dtype=torch.float64)
    mask[..., 2:9, 3:8, 1:7] = 1.0
    mask[..., 4, 4, 4] = 0.5  # a weight, not only a set
    sim = get_similarity(metric)
    whole = LevelProblem(fixed, moving, mask, None, sim, [])
    part = LevelProblem(fixed, moving, mask, None, sim, [], mask_points=True)
    assert whole.on_grid and not part.on_grid
    assert part.points.shape[1] == int((mask > 0).sum())
    u = (0.7 * torch.randn(1, *grid.shape, 3, generator=g, dtype=torch.float64)).requires_grad_(True)
    lw = whole.loss_from_points(whole.points + u)
    idx = (mask.reshape(-1) > 0).nonzero().reshape(-1)
    lp = part.loss_from_points(part.points + u.reshape(1, -1, 3)[:, idx].reshape(part.points.shape))
    assert torch.allclose(lw, lp, rtol=1e-10, atol=1e-12)
    (gw,) = torch.autograd.grad(lw.sum(), u)
    (gp,) = torch.autograd.grad(lp.sum(), u)
    assert torch.allclose(gw, gp, rtol=1e-8, atol=1e-12)
