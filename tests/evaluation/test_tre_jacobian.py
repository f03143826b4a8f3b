"""TRE recovery, Jacobian determinant against SimpleITK and analytic fields, inverse consistency."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation

from omnireg.core import Grid
from omnireg.evaluation import (
    inverse_consistency_error,
    jacobian_determinant,
    jacobian_statistics,
    target_registration_error,
)
from omnireg.transforms import Affine, DisplacementField, Translation

F = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS


def _affine(seed=0) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(np.random.default_rng(seed).normal(size=3) * 0.3).as_matrix() * 1.1
    m[:3, 3] = [4.0, -2.0, 7.5]
    return m


# ------------------------------------------------------------------------------------------ TRE
def test_tre_is_zero_for_the_true_transform_as_module_and_matrix():
    m = _affine()
    p = np.random.default_rng(1).uniform(-50, 50, size=(12, 3))
    q = p @ m[:3, :3].T + m[:3, 3]
    for transform in (m, Affine.from_matrix(m, dtype=torch.float64)):
        res = target_registration_error(p, q, transform)
        assert res.max_mm < 1e-9 and res.count == 12


def test_tre_follows_the_pull_convention():
    """Fixed landmarks go through T (fixed -> moving); the inverse does not recover them."""
    m = _affine(2)
    p = np.random.default_rng(3).uniform(-30, 30, size=(6, 3))
    q = p @ m[:3, :3].T + m[:3, 3]
    assert target_registration_error(p, q, np.linalg.inv(m)).mean_mm > 1.0


def test_tre_of_a_translation_is_its_length():
    p = np.random.default_rng(4).normal(size=(7, 3))
    res = target_registration_error(p, p, Translation(3, translation=torch.tensor([[3.0, 4.0, 0.0]])))
    assert res.mean_mm == pytest.approx(5.0) and res.median_mm == pytest.approx(5.0)
    assert res.max_mm == pytest.approx(5.0) and res.std_mm == pytest.approx(0.0, abs=1e-6)
    init = target_registration_error(p, p + [0.0, 0.0, 2.0])
    assert init.mean_mm == pytest.approx(2.0)
    d = init.to_dict()
    assert d["tre_mean_mm"] == pytest.approx(2.0) and d["tre_max_mm"] == pytest.approx(2.0) and d["count"] == 7


def test_tre_statistics_are_exact():
    p = np.zeros((4, 2))
    q = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 6.0]])
    res = target_registration_error(p, q)
    assert res.mean_mm == 3.0 and res.median_mm == 2.5 and res.max_mm == 6.0
    assert res.std_mm == pytest.approx(np.std([1, 2, 3, 6]))


def test_tre_errors_name_the_argument():
    p = np.zeros((3, 3))
    with pytest.raises(ValueError, match="moving_points: expected 3 points"):
        target_registration_error(p, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"moving_points: expected shape \(P, 3\)"):
        target_registration_error(p, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="transform: expected a homogeneous"):
        target_registration_error(p, p, np.eye(3))
    with pytest.raises(TypeError, match="transform: expected a Transform"):
        target_registration_error(p, p, "T")


# ------------------------------------------------------------------------------------------ Jacobian
@pytest.mark.parametrize("amplitude", [2.0, 30.0])
def test_jacobian_determinant_agrees_with_sitk_filter(amplitude):
    """A smooth random field given to SimpleITK in LPS (identity LPS direction) and to omnireg in RAS."""
    shape, spacing, origin_lps = (9, 8, 7), (1.2, 0.8, 2.0), np.array([10.0, -4.0, 3.0])
    rng = np.random.default_rng(0)
    u_lps = np.stack([ndimage.gaussian_filter(rng.normal(size=shape), 1.5) for _ in range(3)]) * amplitude
    img = sitk.GetImageFromArray(np.ascontiguousarray(u_lps.transpose(3, 2, 1, 0)), isVector=True)
    img.SetSpacing(spacing)
    img.SetOrigin(tuple(origin_lps))
    expected = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(img)).transpose(2, 1, 0)
    grid = Grid(shape, spacing, origin=tuple(F @ origin_lps), direction=F)
    u_ras = np.einsum("ab,b...->a...", F, u_lps)
    det = jacobian_determinant(u_ras, grid)
    np.testing.assert_allclose(det, expected, atol=1e-10)
    if amplitude > 10:
        assert (det <= 0).any()  # the test covers folding
        stats = jacobian_statistics(torch.from_numpy(u_ras)[None], grid)
        assert stats.nonpositive_count == int((expected <= 0).sum())
        assert stats.min == pytest.approx(expected.min()) and stats.max == pytest.approx(expected.max())
        assert stats.log_std == pytest.approx(np.log(expected[expected > 0]).std())


def test_jacobian_of_an_affine_field_on_an_oblique_grid_is_det_a_inside():
    m = _affine(5)
    c, s = np.cos(0.5), np.sin(0.5)
    direction = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    grid = Grid((7, 6, 8), (1.5, 1.0, 0.7), origin=(3.0, 2.0, -1.0), direction=direction)
    det = jacobian_determinant(Affine.from_matrix(m, dtype=torch.float64), grid)
    np.testing.assert_allclose(det[1:-1, 1:-1, 1:-1], np.linalg.det(m[:3, :3]), rtol=1e-10)


def test_jacobian_statistics_pin_the_border_rule():
    """x -> diag(2, 1, 1) x: det 2 inside, 1.5 on the first and last slice along axis 0 (ITK's halved border difference)."""
    grid = Grid((6, 4, 5), (1.0, 2.0, 1.0))
    u = np.zeros((3, *grid.shape))
    u[0] = grid.points("world", dtype=torch.float64).numpy()[..., 0]
    det = jacobian_determinant(u, grid)
    np.testing.assert_allclose(det[1:-1], 2.0, rtol=1e-12)
    np.testing.assert_allclose(det[[0, -1]], 1.5, rtol=1e-12)
    stats = jacobian_statistics(u, grid)
    values = np.array([1.5] * 2 + [2.0] * 4)
    assert stats.min == pytest.approx(1.5) and stats.max == pytest.approx(2.0)
    assert stats.mean == pytest.approx(values.mean())
    assert stats.log_std == pytest.approx(np.log(values).std())
    assert stats.nonpositive_fraction == 0.0
    inside = np.zeros(grid.shape, bool)
    inside[1:-1] = True
    masked = jacobian_statistics(u, grid, mask=inside)
    assert masked.count == inside.sum() and masked.log_std == pytest.approx(0.0, abs=1e-12)


def test_jacobian_statistics_count_folding_of_a_mirror():
    grid = Grid((5, 5), (1.0, 1.0))
    u = np.zeros((2, 5, 5))
    u[0] = -2.0 * grid.points("world", dtype=torch.float64).numpy()[..., 0]
    stats = jacobian_statistics(u, grid)
    assert stats.nonpositive_fraction == 1.0 and stats.nonpositive_percent == 100.0
    assert math.isnan(stats.log_std) and stats.min == -1.0


def test_jacobian_chunks_give_the_same_result(monkeypatch):
    import omnireg.evaluation.jacobian as jac

    grid = Grid((9, 5, 4), (1.0, 1.5, 0.5))
    u = np.random.default_rng(0).normal(size=(3, *grid.shape)) * 0.2
    full = jacobian_determinant(u, grid)
    monkeypatch.setattr(jac, "_CHUNK_VOXELS", 40)  # two slices of 20 voxels per slab
    np.testing.assert_array_equal(jacobian_determinant(u, grid), full)


def test_jacobian_errors_name_the_argument():
    grid = Grid((4, 4, 4))
    with pytest.raises(ValueError, match=r"field: expected a displacement of shape \(3, 4, 4, 4\)"):
        jacobian_determinant(np.zeros((3, 4, 4, 5)), grid)
    with pytest.raises(TypeError, match="field: expected a Transform"):
        jacobian_determinant([0.0], grid)
    with pytest.raises(ValueError, match="mask: expected shape"):
        jacobian_statistics(np.zeros((3, 4, 4, 4)), grid, mask=np.ones((4, 4)))


# ------------------------------------------------------------------------------------------ inverse consistency
def test_inverse_consistency_of_an_affine_and_its_inverse_is_zero():
    a = Affine.from_matrix(_affine(6), dtype=torch.float64)
    grid = Grid((5, 6, 4), (2.0, 1.0, 3.0), origin=(-5.0, 0.0, 4.0))
    res = inverse_consistency_error(a, a.inverse(), grid)
    assert res.max_mm < 1e-9 and res.errors_mm.shape == grid.shape


def test_inverse_consistency_of_two_translations_is_their_sum():
    grid = Grid((4, 4))
    fwd = Translation(2, translation=torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    bwd = Translation(2, translation=torch.tensor([[2.0, 2.0]], dtype=torch.float64))
    res = inverse_consistency_error(fwd, bwd, grid)
    assert res.mean_mm == pytest.approx(5.0) and res.max_mm == pytest.approx(5.0)
    assert res.to_dict()["inverse_consistency_mean_mm"] == pytest.approx(5.0)


def test_inverse_consistency_of_a_field_and_its_fixed_point_inverse():
    grid = Grid((12, 12), (1.0, 1.0))
    rng = np.random.default_rng(0)
    u = np.stack([ndimage.gaussian_filter(rng.normal(size=grid.shape), 2.0) for _ in range(2)])
    field = DisplacementField(torch.from_numpy(u)[None], grid, learnable=False)
    inner = np.zeros(grid.shape, bool)
    inner[3:-3, 3:-3] = True
    inverse = field.inverse(tol=1e-8)
    # the inverse is solved so that T(T^-1(x)) = x at the voxel centres: zero up to the tolerance
    assert inverse_consistency_error(inverse, field, grid, mask=inner).max_mm < 1e-6
    # the other order interpolates the inverse between voxel centres: small, not zero
    assert 0 < inverse_consistency_error(field, inverse, grid, mask=inner).max_mm < 0.05
