"""Helpers for the io tests: random oblique, anisotropic grids and the RAS <-> LPS flip."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from omnireg.core import Grid


def lps(points: np.ndarray) -> np.ndarray:
    """RAS -> LPS (and back) for points or vectors ``(..., D)``, D = 2 or 3."""
    p = np.asarray(points, dtype=np.float64)
    return p * np.array([-1.0, -1.0, 1.0][: p.shape[-1]])


def oblique_grid(seed: int, ndim: int, shape=None) -> Grid:
    """A grid with a random rotation (and a reflection for odd seeds), anisotropic spacing, offset origin."""
    rng = np.random.default_rng(seed)
    if ndim == 3:
        direction = Rotation.random(random_state=seed).as_matrix()
    else:
        a = rng.uniform(-np.pi, np.pi)
        direction = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    if seed % 2:
        direction = direction @ np.diag([1.0] * (ndim - 1) + [-1.0])
    shape = shape or tuple(int(s) for s in rng.integers(3, 7, size=ndim))
    spacing = rng.uniform(0.3, 2.5, size=ndim)
    origin = rng.uniform(-80, 80, size=ndim)
    return Grid(shape, spacing, origin, direction)


@pytest.fixture
def make_grid():
    """``make_grid(seed, ndim, shape=None)``: a random oblique, anisotropic grid."""
    return oblique_grid


@pytest.fixture
def to_lps():
    """``to_lps(points)``: RAS <-> LPS for points or vectors ``(..., D)``."""
    return lps
