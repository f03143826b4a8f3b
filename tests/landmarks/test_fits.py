"""Landmark fits: exact recovery of known transforms, the TPS against SciPy's RBF interpolator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.interpolate import RBFInterpolator
from scipy.spatial.transform import Rotation

from omnireg.core import Grid
from omnireg.landmarks import ThinPlateSpline, fit_affine, fit_linear, fit_rigid, fit_similarity
from omnireg.transforms import Transform


def _rotation(d: int, seed: int) -> np.ndarray:
    if d == 3:
        return Rotation.random(random_state=seed).as_matrix()
    a = np.random.default_rng(seed).uniform(-np.pi, np.pi)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def _apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    d = p.shape[1]
    return p @ m[:d, :d].T + m[:d, d]


def _points(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-80.0, 80.0, size=(n, d))


# ------------------------------------------------------------------------------------------ linear fits
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("model", ["rigid", "similarity", "affine"])
def test_fit_recovers_a_known_transform(d, model):
    rng = np.random.default_rng(d)
    m = np.eye(d + 1)
    if model == "affine":
        m[:d, :d] = rng.normal(size=(d, d)) + 2 * np.eye(d)
    else:
        m[:d, :d] = _rotation(d, 7) * (1.37 if model == "similarity" else 1.0)
    m[:d, d] = rng.uniform(-30, 30, size=d)
    p = _points(10, d)
    est = fit_linear(p, _apply(m, p), model=model)
    np.testing.assert_allclose(est, m, atol=1e-9)
    assert est.dtype == np.float64 and est.shape == (d + 1, d + 1)


def test_minimal_point_sets_are_exact():
    m = np.eye(4)
    m[:3, :3] = _rotation(3, 3)
    m[:3, 3] = [1.0, 2.0, 3.0]
    p = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    np.testing.assert_allclose(fit_rigid(p, _apply(m, p)), m, atol=1e-9)
    p4 = np.vstack([p, [[0.0, 0.0, 7.0]]])
    np.testing.assert_allclose(fit_affine(p4, _apply(m, p4)), m, atol=1e-9)


def test_rigid_fit_of_mirrored_points_is_a_proper_rotation():
    p = _points(8, 3, 1)
    q = p * [-1.0, 1.0, 1.0]  # a reflection is not rigid
    m = fit_rigid(p, q)
    assert np.linalg.det(m[:3, :3]) == pytest.approx(1.0)
    np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-12)
    s = fit_similarity(p, q)
    assert np.linalg.det(s[:3, :3]) > 0


def test_least_squares_residual_is_minimal_for_noisy_points():
    rng = np.random.default_rng(5)
    p = _points(30, 3, 2)
    q = p + [5.0, 0.0, -3.0] + rng.normal(scale=0.5, size=p.shape)
    m = fit_affine(p, q)
    res = np.sum((_apply(m, p) - q) ** 2)
    for _ in range(5):  # any perturbation of the solution increases the residual
        pert = m.copy()
        pert[:3] += rng.normal(scale=1e-3, size=(3, 4))
        assert np.sum((_apply(pert, p) - q) ** 2) > res


def test_degenerate_configurations_are_refused():
    line = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    with pytest.raises(ValueError, match="fixed_points: a rigid fit needs at least three non-collinear points"):
        fit_rigid(line, line)
    plane = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match="fixed_points: an affine fit needs at least 4 affinely independent points"):
        fit_affine(plane, plane)
    with pytest.raises(ValueError, match=r"moving_points: expected shape \(4, 3\)"):
        fit_affine(plane, plane[:3])
    with pytest.raises(ValueError, match="model: expected one of 'rigid', 'similarity', 'affine'"):
        fit_linear(plane, plane, model="tps")


# ------------------------------------------------------------------------------------------ thin-plate spline
@pytest.mark.parametrize("d", [2, 3])
def test_tps_interpolates_its_landmarks(d):
    p = _points(12, d, 3)
    q = p + np.random.default_rng(4).normal(scale=5.0, size=p.shape)
    tps = ThinPlateSpline(p, q)
    assert isinstance(tps, Transform) and tps.ndim == d and tps.batch_size == 1
    out = tps(torch.as_tensor(p)[None])[0].numpy()
    assert np.abs(out - q).max() < 1e-6


@pytest.mark.parametrize("d", [2, 3])
def test_tps_of_affinely_related_points_is_the_affine_map(d):
    rng = np.random.default_rng(d + 10)
    m = np.eye(d + 1)
    m[:d, :d] = rng.normal(size=(d, d)) * 0.3 + np.eye(d)
    m[:d, d] = rng.normal(size=d) * 10
    p = _points(9, d, 5)
    for lam in (0.0, 10.0):
        tps = ThinPlateSpline(p, _apply(m, p), regularization=lam)
        x = _points(50, d, 6) * 1.5
        np.testing.assert_allclose(tps(torch.as_tensor(x)[None])[0].numpy(), _apply(m, x), atol=1e-8)
        np.testing.assert_allclose(tps.affine_matrix(), m, atol=1e-9)
        assert np.abs(tps.weights.numpy()).max() < 1e-10


@pytest.mark.parametrize("d,kernel", [(2, "thin_plate_spline"), (3, "linear")])
@pytest.mark.parametrize("lam", [0.0, 25.0])
def test_tps_agrees_with_scipy_rbf_interpolator(d, kernel, lam):
    """SciPy's 'linear' kernel is -r and 'thin_plate_spline' r^2 log r, with the same smoothing term."""
    p = _points(15, d, 8)
    q = p + np.random.default_rng(9).normal(scale=4.0, size=p.shape)
    x = _points(40, d, 10)
    ref = RBFInterpolator(p, q, kernel=kernel, degree=1, smoothing=lam)(x)
    ours = ThinPlateSpline(p, q, regularization=lam)(torch.as_tensor(x)[None])[0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-7)


def test_strong_regularization_tends_to_the_affine_fit():
    p = _points(20, 3, 11)
    q = p + np.random.default_rng(12).normal(scale=3.0, size=p.shape)
    tps = ThinPlateSpline(p, q, regularization=1e9)
    np.testing.assert_allclose(tps.affine_matrix(), fit_affine(p, q), atol=1e-4)


def test_tps_displacement_field_on_a_grid(monkeypatch):
    import omnireg.landmarks.tps as tps_module

    p = _points(6, 3, 13) / 8
    q = p + np.random.default_rng(14).normal(size=p.shape)
    tps = ThinPlateSpline(p, q)
    grid = Grid((5, 4, 3), (2.0, 3.0, 4.0), origin=(-4.0, -4.0, -4.0))
    u = tps.displacement(grid)
    assert u.shape == (1, 3, 5, 4, 3) and u.dtype == torch.float64
    x = grid.points("world", dtype=torch.float64)
    np.testing.assert_allclose(u[0].movedim(0, -1).numpy(), (tps(x[None])[0] - x).numpy(), atol=1e-12)
    monkeypatch.setattr(tps_module, "_CHUNK_ENTRIES", 7)  # one point per chunk gives the same field
    np.testing.assert_allclose(tps.displacement(grid).numpy(), u.numpy(), atol=1e-12)


def test_tps_errors():
    p = _points(5, 3)
    with pytest.raises(ValueError, match="fixed_points: landmarks 0 and 5 coincide"):
        ThinPlateSpline(np.vstack([p, p[:1]]), np.vstack([p, p[:1] + 1]))
    ThinPlateSpline(np.vstack([p, p[:1]]), np.vstack([p, p[:1] + 1]), regularization=1.0)  # smoothing copes
    with pytest.raises(ValueError, match="at least 4 affinely independent landmarks"):
        ThinPlateSpline(p[:3], p[:3])
    with pytest.raises(ValueError, match="regularization: expected a finite number >= 0"):
        ThinPlateSpline(p, p, regularization=-1.0)
    with pytest.raises(ValueError, match=r"moving_points: expected shape \(5, 3\)"):
        ThinPlateSpline(p, p[:4])
