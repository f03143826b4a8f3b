"""Jacobian matrix and determinant of a transform on a grid, in world units.

Convention:
    ``J[a, b](x) = dT_a / dx_b`` with ``x`` and ``T`` in world mm (RAS), at the voxel centres of
    ``grid``. Finite-difference scheme: ``T`` is evaluated on the grid
    (:meth:`Transform.transform_grid`) and differentiated along each tensor axis ``k`` with
    **central differences** ``(T[i+1] - T[i-1]) / 2`` inside and **first-order one-sided**
    differences at the first and last voxel (as ``numpy.gradient(edge_order=1)``:
    :func:`omnireg.core.differences.voxel_derivative`, border rule ``one-sided``); an axis of size 1
    uses central differences of ``T`` at ``x +- spacing_k * direction[:, k]``. The voxel derivatives
    are converted to world derivatives by the chain rule
    ``dT/dx = dT/dp @ dp/dx`` with ``dp/dx = diag(1 / spacing) @ direction^T``, so oblique and
    anisotropic grids are handled. For an affine ``T`` the result is exactly ``A`` (up to float error);
    for smooth fields the error is O(spacing^2) inside.

    The determinant ``det J`` (closed form, :func:`omnireg.core.differences.determinant`) is the local
    volume ratio (moving / fixed); ``det J <= 0`` marks folding.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.differences import determinant, voxel_derivative
from ..core.grid import Grid
from .base import Transform

__all__ = ["jacobian_matrix", "jacobian_determinant"]


def _shifted(grid: Grid, axis: int, sign: float) -> Grid:
    step = sign * grid.spacing[axis] * grid.direction[:, axis]
    return Grid(grid.shape, grid.spacing, tuple((np.asarray(grid.origin) + step).tolist()), grid.direction)


def jacobian_matrix(transform: Transform, grid: Grid, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """World Jacobian ``dT/dx`` of ``transform`` at the voxel centres of ``grid`` (scheme in the module docstring).

    Args:
        transform: fixed -> moving world transform (any kind).
        grid: the fixed grid to evaluate on (any spacing, origin and direction).
        dtype: dtype of the result (default: the transform's).

    Returns:
        ``(N, D, D, *S)`` with ``out[n, a, b] = dT_a / dx_b`` (world components, dimensionless).

    Raises:
        TypeError, ValueError: if ``transform`` or ``grid`` is malformed or their dimensions differ.
    """
    if not isinstance(transform, Transform):
        raise TypeError(f"transform: expected a Transform, got {type(transform).__name__}")
    if not isinstance(grid, Grid):
        raise TypeError(f"grid: expected a Grid, got {type(grid).__name__}")
    if grid.ndim != transform.ndim:
        raise ValueError(f"grid: expected a {transform.ndim}D grid for a {transform.ndim}D transform, got {grid.ndim}D")
    d = grid.ndim
    y = transform.transform_grid(grid, dtype=dtype)  # (N, *S, D)
    derivs = []
    for k in range(d):
        if grid.shape[k] > 1:
            dk = voxel_derivative(y, 1 + k)
        else:
            plus = transform.transform_grid(_shifted(grid, k, 1.0), dtype=y.dtype)
            minus = transform.transform_grid(_shifted(grid, k, -1.0), dtype=y.dtype)
            dk = (plus - minus) / 2
        derivs.append(dk)
    dtdp = torch.stack(derivs, dim=-1)  # (N, *S, D_out, D_voxel)
    m = grid.voxel_from_world()[:d, :d]  # dp/dx
    dpdx = torch.as_tensor(np.ascontiguousarray(m), dtype=dtdp.dtype, device=dtdp.device)
    jac = dtdp @ dpdx  # (N, *S, a, b)
    return jac.permute(0, d + 1, d + 2, *range(1, d + 1))


def jacobian_determinant(transform: Transform, grid: Grid, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``det(dT/dx)`` at the voxel centres of ``grid``: ``(N, 1, *S)`` (scheme in the module docstring).

    Equal to ``det(A)`` everywhere for an affine transform; ``<= 0`` where the deformation folds.

    Args:
        transform, grid, dtype: as :func:`jacobian_matrix`.
    """
    return determinant(jacobian_matrix(transform, grid, dtype=dtype)).unsqueeze(1)
