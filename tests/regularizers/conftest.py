"""Shared helpers for the regularizer tests: grids (axis-aligned and oblique) and analytic fields."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pytest
import torch

from omnireg.core.grid import Grid


def rotation(d: int) -> np.ndarray:
    """A fixed, non-trivial rotation (det +1) in 2D or 3D."""
    if d == 2:
        t = math.radians(30.0)
        return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    axis = np.array([1.0, 2.0, 2.0]) / 3.0
    t = math.radians(40.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * (k @ k)


def oblique_grid(shape: tuple[int, ...]) -> Grid:
    """Rotated grid with anisotropic spacing and world (0, ..., 0) at its centre."""
    d = len(shape)
    spacing = np.array([1.5, 0.75, 1.25][:d])
    direction = rotation(d)
    centre = (np.asarray(shape) - 1) / 2.0
    origin = -direction @ (spacing * centre)
    return Grid(shape, spacing, origin, direction)


def aligned_grid(shape: tuple[int, ...]) -> Grid:
    """Axis-aligned grid with anisotropic spacing and world (0, ..., 0) at its centre."""
    d = len(shape)
    spacing = np.array([1.5, 0.75, 1.25][:d])
    centre = (np.asarray(shape) - 1) / 2.0
    return Grid(shape, spacing, -(spacing * centre))


def field_on(grid: Grid, fn: Callable[[torch.Tensor], torch.Tensor], dtype=torch.float64) -> torch.Tensor:
    """Evaluate a physical field ``fn(x) -> u`` (world mm, ``(..., D) -> (..., D)``) on ``grid``: ``(1, D, *S)``."""
    x = grid.points("world", dtype=torch.float64)
    return fn(x).movedim(-1, 0).unsqueeze(0).to(dtype)


@pytest.fixture
def helpers():
    class H:
        pass

    h = H()
    h.rotation = rotation
    h.oblique_grid = oblique_grid
    h.aligned_grid = aligned_grid
    h.field_on = field_on
    return h
