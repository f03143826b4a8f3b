"""Gaussian image pyramids in world space.

Each level smooths the image with a Gaussian of sigma given in **mm** (converted to voxels per axis
with the grid's spacing) and resamples it onto a coarser grid covering the same field of view
(:meth:`omnireg.core.Grid.with_spacing`), so every level lives in the same world coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..core import Grid, sample
from ..core.filters import gaussian_blur

__all__ = ["Level", "pyramid_level", "default_smoothing_mm"]


@dataclass
class Level:
    """One pyramid level: data ``(1, C, *S)`` and its grid."""

    data: torch.Tensor
    grid: Grid


def default_smoothing_mm(shrink: float, spacing: Sequence[float]) -> float:
    """Sigma in mm used when none is given: ``0.5 * (shrink - 1) * max(spacing)`` (0 at full resolution)."""
    return 0.5 * (float(shrink) - 1.0) * float(max(spacing))


def pyramid_level(
    data: torch.Tensor, grid: Grid, *, shrink: float, sigma_mm: float | None = None, min_size: int = 8
) -> Level:
    """Smooth ``data`` ``(1, C, *S)`` with sigma ``sigma_mm`` and resample it onto ``grid`` shrunk by ``shrink``.

    The coarse grid keeps at least ``min_size`` voxels per axis (or the original size if smaller).
    Integer data are not smoothed (nearest neighbour).
    """
    if sigma_mm is None:
        sigma_mm = default_smoothing_mm(shrink, grid.spacing)
    out = data
    if sigma_mm > 0 and data.dtype.is_floating_point:
        out = gaussian_blur(data, [sigma_mm / s for s in grid.spacing])
    if shrink == 1:
        return Level(out, grid)
    spacing = np.asarray(grid.spacing) * float(shrink)
    # keep a minimal number of voxels per axis
    max_spacing = np.asarray(grid.extent_mm()) / np.minimum(np.asarray(grid.shape), min_size)
    spacing = np.minimum(spacing, np.maximum(max_spacing, np.asarray(grid.spacing)))
    coarse = grid.with_spacing(spacing)
    pts = grid.transform_points(coarse.points("world", dtype=torch.float64, device=data.device), "world", "voxel")
    interp = "linear" if data.dtype.is_floating_point else "nearest"
    res = sample(out, pts.unsqueeze(0).to(out.dtype if out.dtype.is_floating_point else torch.float32), interp=interp, padding="border")
    return Level(res, coarse)
