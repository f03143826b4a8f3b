"""Composition and inversion: order, exact point composition, warp chains, linear products."""

from __future__ import annotations

import pytest
import torch

from omnireg.core import Grid, Image
from omnireg.transforms import (
    Affine,
    Composite,
    DisplacementField,
    Rigid,
    Similarity,
    Translation,
    compose,
    invert,
    resample,
)

D64 = torch.float64


def _field(grid: Grid, amp: float = 1.0) -> torch.Tensor:
    x = grid.points("world", dtype=D64)
    return torch.stack([amp * torch.cos(0.25 * x[..., (a + 1) % grid.ndim]) for a in range(grid.ndim)], 0)[None]


def test_compose_applies_the_last_transform_first_for_points_exactly():
    grid = Grid((10, 10), spacing=(1.5, 1.5), origin=(-7.0, -7.0))
    a = Rigid(2, rotation=0.3, translation=[1.0, 0.0], dtype=D64)
    b = DisplacementField(_field(grid), grid)
    x = torch.randn(1, 20, 2, dtype=D64) * 4
    torch.testing.assert_close(compose(a, b)(x), a(b(x)), rtol=0, atol=0)
    torch.testing.assert_close(compose(b, a)(x), b(a(x)), rtol=0, atol=0)
    c = Translation(2, translation=[0.0, 2.0], dtype=D64)
    torch.testing.assert_close(compose(a, b, c)(x), a(b(c(x))), rtol=0, atol=0)


def test_composing_linear_transforms_gives_an_affine_with_the_product_matrix():
    a = Rigid(3, rotation=[0.1, 0.2, 0.3], translation=[1.0, 2.0, 3.0], dtype=D64)
    b = Similarity(3, rotation=[0.0, -0.2, 0.1], scale=1.1, center=[5.0, 0.0, 0.0], dtype=D64)
    ab = compose(a, b)
    assert isinstance(ab, Affine)
    torch.testing.assert_close(ab.matrix(), a.matrix() @ b.matrix())
    torch.testing.assert_close(ab.center, b.center)
    x = torch.randn(1, 5, 3, dtype=D64)
    torch.testing.assert_close(ab(x), a(b(x)))


def test_composite_holds_the_modules_and_flattens_nesting():
    a, b, c = Translation(2), Rigid(2), Affine(2)
    comp = Composite([a, Composite([b, c])])
    assert len(comp) == 3 and comp[0] is a and comp[2] is c
    assert len(list(comp.parameters())) == 1 + 2 + 2
    assert comp.is_linear
    torch.testing.assert_close(comp.matrix(), a.matrix() @ b.matrix() @ c.matrix())


def test_warp_by_a_composition_equals_two_successive_warps():
    fixed = Grid((30, 28), spacing=(1.0, 1.0), origin=(-15.0, -14.0))
    big = Grid((64, 64), spacing=(1.0, 1.0), origin=(-32.0, -32.0))  # moving and intermediate space
    x = big.points("world", dtype=D64)
    moving = Image((torch.sin(0.2 * x[..., 0]) * torch.cos(0.15 * x[..., 1]))[None], big)
    a = Rigid(2, rotation=0.4, translation=[1.0, -0.5], dtype=D64)
    b = DisplacementField(_field(fixed, 1.5), fixed)
    once = resample(moving, compose(a, b), onto=fixed)
    # warp by a (onto the intermediate grid), then warp that result by b
    twice = resample(resample(moving, a, onto=big), b, onto=fixed)
    err = (once.data - twice.data).abs().max().item()
    assert err < 0.02  # one extra linear interpolation of a smooth image
    # the opposite order differs clearly
    other = resample(moving, compose(b, a), onto=fixed)
    assert (other.data - once.data).abs().max().item() > 10 * err


def test_composite_inverse_and_invert():
    grid = Grid((16, 16, 12), spacing=(1.5, 1.5, 2.0), origin=(-11.0, -11.0, -11.0))
    a = Rigid(3, rotation=[0.05, 0.0, 0.1], translation=[1.0, 0.0, -1.0], dtype=D64)
    b = DisplacementField(_field(grid, 0.7), grid)
    comp = compose(a, b)
    inv = invert(comp, max_iter=100, tol=1e-5)
    assert isinstance(inv, Composite)
    x = grid.points("world", dtype=D64)[4:-4, 4:-4, 3:-3].reshape(1, -1, 3)
    # a^-1(x) falls between voxel centres: the linearly interpolated dense inverse adds a few 1e-2 mm
    assert (comp(inv(x)) - x).norm(dim=-1).max() < 5e-2
    lin = invert(a)
    torch.testing.assert_close(lin(a(x)), x)


def test_compose_validates_its_inputs():
    with pytest.raises(ValueError, match="dimension"):
        compose(Rigid(2), Rigid(3))
    with pytest.raises(TypeError, match="transforms"):
        Composite([Rigid(2), "x"])
    with pytest.raises(ValueError, match="transforms"):
        Composite([])
    with pytest.raises(ValueError, match="batch"):
        compose(Translation(2, batch_size=2), Translation(2, batch_size=3))
