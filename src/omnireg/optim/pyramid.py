"""Gaussian image pyramids in world space.

Each level smooths the image with a Gaussian of sigma given in **mm** (converted to voxels per axis
with the grid's spacing) and resamples it onto a coarser grid covering the same field of view
(:meth:`omnireg.core.Grid.with_spacing`), so every level lives in the same world coordinates.

With a ``reference_mm`` (the registration engine passes the fixed image's finest spacing) a level is a
**physical resolution** ``shrink * reference_mm``, the same for both images: each axis of each image is
coarsened to that spacing (never refined: an axis already coarser, such as the 7.5 mm slices of an axial
stack, stays as it is) and smoothed by ``0.5 * (new - old)`` mm along that axis only. So a thick-slice image
is not blurred in-plane by its slice thickness, and a moving image finer than the fixed one is smoothed to the
fixed resolution before it is sampled at the fixed points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..core import Grid, sample
from ..core.filters import gaussian_blur

__all__ = ["Level", "pyramid_level", "default_smoothing_mm", "regrid"]


@dataclass
class Level:
    """One pyramid level: data ``(1, C, *S)`` and its grid."""

    data: torch.Tensor
    grid: Grid


def regrid(data: torch.Tensor, src: Grid, dst: Grid, interp: str = "linear", padding: str = "zeros") -> torch.Tensor:
    """``data`` ``(1, C, *S)`` on ``src`` sampled at the voxel centres of ``dst`` (``data`` itself when the grids are
    the same); computed in ``data``'s floating dtype (float32 for other dtypes) and returned in ``data``'s dtype."""
    if src.same_as(dst):
        return data
    work = data if data.is_floating_point() else data.float()
    pts = src.transform_points(dst.points("world", dtype=torch.float64, device=data.device), "world", "voxel")
    return sample(work, pts.unsqueeze(0).to(work.dtype), interp=interp, padding=padding).to(data.dtype)


def default_smoothing_mm(shrink: float, spacing: Sequence[float]) -> float:
    """Sigma in mm used when none is given: ``0.5 * (shrink - 1) * max(spacing)`` (0 at full resolution)."""
    return 0.5 * (float(shrink) - 1.0) * float(max(spacing))


def pyramid_level(
    data: torch.Tensor, grid: Grid, *, shrink: float, sigma_mm: float | None = None, min_size: int = 8,
    reference_mm: float | None = None,
) -> Level:
    """Smooth ``data`` ``(1, C, *S)`` and resample it onto a coarser grid (module docstring).

    Without ``reference_mm`` every axis is coarsened by ``shrink`` and smoothed by ``sigma_mm`` (default
    :func:`default_smoothing_mm`); with it, each axis goes to ``max(spacing, shrink * reference_mm)`` and is
    smoothed by ``sigma_mm`` or, by default, ``0.5 * (new - old)`` mm. The coarse grid keeps at least
    ``min_size`` voxels per axis (or the original size if smaller). Integer data are not smoothed (nearest
    neighbour).
    """
    old = np.asarray(grid.spacing, dtype=np.float64)
    if reference_mm is not None:
        target = np.maximum(old, float(shrink) * float(reference_mm))
        sigmas = 0.5 * (target - old) if sigma_mm is None else np.full_like(old, float(sigma_mm))
    else:
        target = old * float(shrink)
        sigmas = np.full_like(old, default_smoothing_mm(shrink, grid.spacing) if sigma_mm is None else float(sigma_mm))
    out = data
    if np.any(sigmas > 0) and data.dtype.is_floating_point:
        out = gaussian_blur(data, [float(s) / sp for s, sp in zip(sigmas, old)])
    if np.allclose(target, old):
        return Level(out, grid)
    spacing = target
    # keep a minimal number of voxels per axis
    max_spacing = np.asarray(grid.extent_mm()) / np.minimum(np.asarray(grid.shape), min_size)
    spacing = np.minimum(spacing, np.maximum(max_spacing, np.asarray(grid.spacing)))
    coarse = grid.with_spacing(spacing)
    pts = grid.transform_points(coarse.points("world", dtype=torch.float64, device=data.device), "world", "voxel")
    interp = "linear" if data.dtype.is_floating_point else "nearest"
    res = sample(out, pts.unsqueeze(0).to(out.dtype if out.dtype.is_floating_point else torch.float32), interp=interp, padding="border")
    return Level(res, coarse)
