"""Initial alignment: field-of-view centres, intensity centres of mass, principal axes (moments).

All functions return candidate ``(D+1, D+1)`` float64 matrices mapping fixed world points to moving
world points (the pull direction used everywhere in omnireg).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from ..core import Grid

__all__ = ["fov_center", "center_of_mass", "second_moments", "initial_candidates"]


def fov_center(grid: Grid) -> np.ndarray:
    """World position of the centre of the grid's field of view."""
    return grid.transform_points((np.asarray(grid.shape) - 1) / 2.0, "voxel", "world")


def _weights(data: torch.Tensor) -> np.ndarray:
    """Non-negative intensity weights of a (1, C, *S) batch: channel mean, minus its 2nd percentile, clipped."""
    x = data[0].float().mean(0).detach().cpu().numpy().astype(np.float64)
    lo = np.percentile(x, 2.0)
    w = np.clip(x - lo, 0, None)
    if w.sum() <= 0:
        w = np.ones_like(x)
    return w


def center_of_mass(data: torch.Tensor, grid: Grid) -> np.ndarray:
    """Intensity-weighted centre (world mm) of ``data`` ``(1, C, *S)``."""
    w = _weights(data)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in grid.shape], indexing="ij"), -1).reshape(-1, grid.ndim)
    c_vox = (idx * w.reshape(-1, 1)).sum(0) / w.sum()
    return grid.transform_points(c_vox, "voxel", "world")


def second_moments(data: torch.Tensor, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Centre of mass and world-space covariance matrix of the intensity distribution."""
    w = _weights(data).reshape(-1)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in grid.shape], indexing="ij"), -1).reshape(-1, grid.ndim)
    pts = grid.transform_points(idx.astype(np.float64), "voxel", "world")
    c = (pts * w[:, None]).sum(0) / w.sum()
    d = pts - c
    cov = (d * w[:, None]).T @ d / w.sum()
    return c, cov


def _translation(t: np.ndarray) -> np.ndarray:
    m = np.eye(len(t) + 1)
    m[:-1, -1] = t
    return m


def initial_candidates(
    fixed: torch.Tensor, fixed_grid: Grid, moving: torch.Tensor, moving_grid: Grid, method: str
) -> list[np.ndarray]:
    """Candidate initial matrices for ``method`` in ``none``, ``geometry``, ``com``, ``moments``.

    ``moments`` returns the centre-of-mass translation first, then every principal-axes rotation
    (eigenvector sign choices with determinant +1) about the centres; the caller picks the best by its
    metric.
    """
    d = fixed_grid.ndim
    if method == "none":
        return [np.eye(d + 1)]
    if method == "geometry":
        return [_translation(fov_center(moving_grid) - fov_center(fixed_grid))]
    if method == "com":
        return [_translation(center_of_mass(moving, moving_grid) - center_of_mass(fixed, fixed_grid))]
    if method != "moments":
        raise ValueError(f"init: expected one of none, geometry, com, moments, got {method!r}")
    cf, covf = second_moments(fixed, fixed_grid)
    cm, covm = second_moments(moving, moving_grid)
    out = [_translation(cm - cf)]
    _, ef = np.linalg.eigh(covf)
    _, em = np.linalg.eigh(covm)
    for signs in itertools.product([1.0, -1.0], repeat=d):
        r = em @ np.diag(signs) @ ef.T
        if np.linalg.det(r) < 0:
            continue
        if np.allclose(r, np.eye(d), atol=1e-6):
            continue
        m = np.eye(d + 1)
        m[:d, :d] = r
        m[:d, d] = cm - r @ cf  # x -> R (x - cf) + cm
        out.append(m)
    return out
