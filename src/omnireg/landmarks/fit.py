"""Linear transforms fitted to paired landmarks (closed form, float64).

Convention (pull, as every omnireg transform): given landmarks ``p_i`` in the **fixed** image and
their partners ``q_i`` in the **moving** image (world RAS mm), the fitted ``T`` maps fixed to moving
points, ``T(p_i) ≈ q_i``, so it warps the moving image onto the fixed grid like a registration result.
Each fit returns the homogeneous ``(D+1, D+1)`` world matrix ``moving_from_fixed`` ``[[A, b], [0, 1]]``
minimising ``sum_i |A p_i + b - q_i|^2`` over its model:

* rigid: ``A = R``, a proper rotation (``det R = +1``), Kabsch/Umeyama;
* similarity: ``A = s R`` with a scale ``s > 0``, Umeyama (1991);
* affine: any ``A``, linear least squares.

Umeyama: with centroids ``p̄, q̄``, centred points ``p'_i, q'_i`` and the cross-covariance
``Σ = (1/P) sum_i q'_i p'_i^T = U diag(σ) V^T`` (SVD), ``S = diag(1, ..., 1, sign(det U det V))``,
``R = U S V^T``; ``s = trace(diag(σ) S) / ((1/P) sum_i |p'_i|^2)`` (similarity) or 1 (rigid);
``b = q̄ - s R p̄``.
"""

from __future__ import annotations

import logging
from enum import Enum

import numpy as np

from ..core.arrays import as_point_array
from ..core.enums import as_enum

__all__ = ["LinearModel", "fit_rigid", "fit_similarity", "fit_affine", "fit_linear"]

logger = logging.getLogger(__name__)


class LinearModel(str, Enum):
    """Linear landmark models (:func:`fit_linear`)."""

    RIGID = "rigid"
    SIMILARITY = "similarity"
    AFFINE = "affine"


def _check_pairs(fixed_points: object, moving_points: object) -> tuple[np.ndarray, np.ndarray]:
    p = as_point_array(fixed_points, "fixed_points")
    q = as_point_array(moving_points, "moving_points")
    if p.shape != q.shape:
        raise ValueError(f"moving_points: expected shape {p.shape} (that of fixed_points, paired points), got {q.shape}")
    return p, q


def _rank(centred: np.ndarray) -> int:
    s = np.linalg.svd(centred, compute_uv=False)
    if s.size == 0 or s[0] == 0:
        return 0
    return int(np.sum(s > 1e-9 * s[0]))


def _umeyama(p: np.ndarray, q: np.ndarray, with_scale: bool, what: str) -> np.ndarray:
    d = p.shape[1]
    pm, qm = p.mean(0), q.mean(0)
    pc, qc = p - pm, q - qm
    need = max(1, d - 1)
    if _rank(pc) < need:
        shape = "two distinct points" if d == 2 else "three non-collinear points"
        raise ValueError(f"fixed_points: a {what} fit needs at least {shape}, got {p.shape[0]} points spanning rank {_rank(pc)}")
    cov = qc.T @ pc / p.shape[0]
    u, sig, vt = np.linalg.svd(cov)
    s = np.ones(d)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[-1] = -1.0
    rot = u @ np.diag(s) @ vt
    scale = float((sig * s).sum() / (pc**2).sum(1).mean()) if with_scale else 1.0
    if with_scale and scale <= 0:
        raise ValueError("fixed_points: the similarity fit gave a non-positive scale (degenerate configuration)")
    m = np.eye(d + 1)
    m[:d, :d] = scale * rot
    m[:d, d] = qm - scale * rot @ pm
    return m


def fit_rigid(fixed_points: object, moving_points: object) -> np.ndarray:
    """Least-squares rotation and translation with ``T(p_i) ≈ q_i`` (Kabsch; module docstring).

    Args:
        fixed_points: ``(P, D)`` fixed-image landmarks ``p_i``, world RAS mm (D = 2 or 3).
        moving_points: ``(P, D)`` corresponding moving-image landmarks ``q_i``.

    Returns:
        ``(D+1, D+1)`` float64 matrix ``moving_from_fixed`` with a proper rotation (``det = +1``).

    Raises:
        ValueError: on malformed or unpaired points, or a degenerate configuration (fewer than two
            distinct points in 2D, collinear points in 3D).

    Example:
        >>> p = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
        >>> (np.round(fit_rigid(p, p + [5.0, -1.0]), 12) + 0.0).tolist()
        [[1.0, 0.0, 5.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]]
    """
    p, q = _check_pairs(fixed_points, moving_points)
    return _umeyama(p, q, with_scale=False, what="rigid")


def fit_similarity(fixed_points: object, moving_points: object) -> np.ndarray:
    """Least-squares isotropic scale, rotation and translation with ``T(p_i) ≈ q_i`` (Umeyama).

    Args and Raises as :func:`fit_rigid`.

    Returns:
        ``(D+1, D+1)`` float64 matrix ``[[s R, b], [0, 1]]``, ``s > 0``, ``det R = +1``.
    """
    p, q = _check_pairs(fixed_points, moving_points)
    return _umeyama(p, q, with_scale=True, what="similarity")


def fit_affine(fixed_points: object, moving_points: object) -> np.ndarray:
    """Least-squares affine map with ``T(p_i) ≈ q_i``: ``min_{A, b} sum_i |A p_i + b - q_i|^2``.

    Args:
        fixed_points, moving_points: as :func:`fit_rigid`.

    Returns:
        ``(D+1, D+1)`` float64 matrix ``[[A, b], [0, 1]]`` (exact for ``D + 1`` affinely independent points).

    Raises:
        ValueError: on malformed or unpaired points, or fewer than ``D + 1`` affinely independent points.
    """
    p, q = _check_pairs(fixed_points, moving_points)
    d = p.shape[1]
    if _rank(p - p.mean(0)) < d:
        raise ValueError(
            f"fixed_points: an affine fit needs at least {d + 1} affinely independent points "
            f"(not all on one {'line' if d == 2 else 'plane'}), got {p.shape[0]} points"
        )
    pm = p.mean(0)
    design = np.hstack([p - pm, np.ones((p.shape[0], 1))])  # centred for conditioning
    sol, *_ = np.linalg.lstsq(design, q, rcond=None)  # (D+1, D): rows A^T, then A p̄ + b
    m = np.eye(d + 1)
    m[:d, :d] = sol[:d].T
    m[:d, d] = sol[d] - m[:d, :d] @ pm
    return m


def fit_linear(fixed_points: object, moving_points: object, *, model: LinearModel | str) -> np.ndarray:
    """:func:`fit_rigid`, :func:`fit_similarity` or :func:`fit_affine`, chosen by ``model``.

    Raises:
        ValueError: on an unknown model (the message lists the valid ones), or as the fits.
    """
    model = as_enum(model, LinearModel, "model")
    fit = {LinearModel.RIGID: fit_rigid, LinearModel.SIMILARITY: fit_similarity, LinearModel.AFFINE: fit_affine}[model]
    return fit(fixed_points, moving_points)
