"""Finite-difference derivatives of displacement fields in world millimetres.

Convention:
    A displacement field ``u`` has shape ``(N, D, *S)``: ``u[:, i]`` is the component along **world**
    axis ``i`` (RAS, mm), sampled at the voxel centres of a grid; ``T(x) = x + u(x)``.
    The grid is either a :class:`~omnireg.core.grid.Grid` (any orientation) or a spacing tuple
    ``(s_0, ..., s_{D-1})`` in mm for an axis-aligned grid (direction = identity, world axis ``i`` =
    tensor axis ``i``). Write ``M = direction @ diag(spacing)`` for the linear part of
    ``world_from_voxel``, so that ``x = origin + M v`` for voxel index ``v``.

Scheme (stated because results depend on it, see ANTs #829):
    * first derivative along a voxel axis: central difference ``(f[k+1] - f[k-1]) / 2`` in the interior,
      one-sided ``f[1] - f[0]`` and ``f[S-1] - f[S-2]`` at the two borders, 0 on an axis of size 1;
    * pure second derivative: ``f[k+1] - 2 f[k] + f[k-1]`` in the interior, the value of the nearest
      interior voxel at the borders, 0 on an axis of size < 3;
    * mixed second derivative ``d2 f / dv_a dv_b`` (``a != b``): the first-derivative scheme applied
      along ``b`` then along ``a``.
    Voxel derivatives are mapped to world millimetres with the chain rule
    ``du/dx = (du/dv) M^-1`` and ``d2u/dx2 = M^-T (d2u/dv2) M^-1`` (per component). The first-derivative
    scheme is exact for polynomials of degree 2 in the interior and for affine fields everywhere; the
    second-derivative schemes are exact for quadratic fields everywhere.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

from ..core.grid import Grid

__all__ = [
    "GridLike",
    "displacement_jacobian",
    "displacement_hessian",
    "jacobian_determinant_from_displacement",
]

#: A :class:`Grid`, or a spacing tuple in mm for an axis-aligned grid.
GridLike = Union[Grid, Sequence[float]]


# ---------------------------------------------------------------------------- validation
def _check_displacement(u: object, name: str = "u") -> int:
    """Validate a displacement field ``(N, D, *S)`` and return ``D``."""
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(u).__name__}")
    if not u.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {u.dtype}")
    d = u.ndim - 2
    if d not in (1, 2, 3) or u.shape[1] != d:
        raise ValueError(
            f"{name}: expected a displacement field of shape (N, D, *S) with D = len(S) in 1..3, "
            f"got {tuple(u.shape)}"
        )
    return d


def _linear_part(grid: GridLike, spatial_shape: Sequence[int], name: str = "grid") -> np.ndarray:
    """``M = direction @ diag(spacing)`` as float64 ``(D, D)``, checked against ``spatial_shape``."""
    d = len(spatial_shape)
    if isinstance(grid, Grid):
        if tuple(grid.shape) != tuple(spatial_shape):
            raise ValueError(f"{name}: expected a grid of shape {tuple(spatial_shape)} (the field's), got {grid.shape}")
        return grid.world_from_voxel()[:d, :d]
    if isinstance(grid, (str, bytes)) or not isinstance(grid, (Sequence, np.ndarray, torch.Tensor)):
        raise TypeError(f"{name}: expected a Grid or a sequence of {d} spacings in mm, got {type(grid).__name__}")
    spacing = np.asarray(grid, dtype=np.float64).reshape(-1)
    if spacing.size != d:
        raise ValueError(f"{name}: expected {d} spacings in mm (one per spatial axis), got {spacing.size}")
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"{name}: expected positive finite spacings in mm, got {spacing.tolist()}")
    return np.diag(spacing)


def _voxel_from_world_linear(grid: GridLike, u: torch.Tensor) -> torch.Tensor:
    """``M^-1`` as a tensor ``(D, D)`` in the dtype and device of ``u``."""
    m = _linear_part(grid, tuple(u.shape[2:]))
    return torch.as_tensor(np.linalg.inv(m), dtype=u.dtype, device=u.device)


# ---------------------------------------------------------------------------- voxel differences
def _diff1(x: torch.Tensor, dim: int) -> torch.Tensor:
    """First derivative per voxel along tensor dimension ``dim`` (central inside, one-sided at borders)."""
    n = x.shape[dim]
    if n == 1:
        return torch.zeros_like(x)
    first = x.narrow(dim, 1, 1) - x.narrow(dim, 0, 1)
    last = x.narrow(dim, n - 1, 1) - x.narrow(dim, n - 2, 1)
    if n == 2:
        return torch.cat([first, last], dim=dim)
    inner = (x.narrow(dim, 2, n - 2) - x.narrow(dim, 0, n - 2)) / 2
    return torch.cat([first, inner, last], dim=dim)


def _diff2(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Pure second derivative per voxel^2 along ``dim`` (3-point stencil, border = nearest interior)."""
    n = x.shape[dim]
    if n < 3:
        return torch.zeros_like(x)
    inner = x.narrow(dim, 2, n - 2) - 2 * x.narrow(dim, 1, n - 2) + x.narrow(dim, 0, n - 2)
    return torch.cat([inner.narrow(dim, 0, 1), inner, inner.narrow(dim, n - 3, 1)], dim=dim)


# ---------------------------------------------------------------------------- public
def displacement_jacobian(u: torch.Tensor, grid: GridLike) -> torch.Tensor:
    """World Jacobian of a displacement field: ``J[:, i, j] = du_i / dx_j`` (mm per mm, dimensionless).

    ``J_u = (du / dv) @ M^-1`` with ``M = direction @ diag(spacing)``; finite differences as in the
    module docstring (central inside, one-sided at the borders).

    Args:
        u: displacement ``(N, D, *S)`` in world mm, components along world axes, on ``grid``.
        grid: the field's :class:`Grid` (shape ``S``), or ``D`` spacings in mm for an axis-aligned grid.

    Returns:
        ``(N, D, D, *S)`` tensor in the dtype and device of ``u``; ``J[n, i, j]`` is the derivative of
        world component ``i`` along world axis ``j``. The Jacobian of ``T(x) = x + u(x)`` is ``I + J``.

    Raises:
        TypeError: if ``u`` is not a floating tensor or ``grid`` is neither a Grid nor a sequence.
        ValueError: on a wrong shape of ``u`` or a grid that does not match it.

    Example:
        >>> u = torch.zeros(1, 2, 4, 5)
        >>> u[:, 0] = 0.5 * torch.arange(4.0)[:, None]  # u_0 = 0.5 * v_0 = 0.25 * x_0 (spacing 2)
        >>> displacement_jacobian(u, (2.0, 1.0))[0, :, :, 1, 1]
        tensor([[0.2500, 0.0000],
                [0.0000, 0.0000]])
    """
    d = _check_displacement(u)
    minv = _voxel_from_world_linear(grid, u)
    dv = torch.stack([_diff1(u, 2 + a) for a in range(d)], dim=2)  # (N, D_i, D_a, *S)
    return torch.einsum("nia...,aj->nij...", dv, minv)


def displacement_hessian(u: torch.Tensor, grid: GridLike) -> torch.Tensor:
    """World second derivatives: ``H[:, i, j, k] = d2 u_i / dx_j dx_k`` (1 / mm).

    ``H_i = M^-T (d2 u_i / dv2) M^-1`` per component; the voxel Hessian uses the 3-point stencil on
    the diagonal and the first-difference scheme twice off the diagonal (module docstring).

    Args:
        u: displacement ``(N, D, *S)`` in world mm on ``grid``.
        grid: the field's :class:`Grid`, or ``D`` spacings in mm for an axis-aligned grid.

    Returns:
        ``(N, D, D, D, *S)``, symmetric in the last two component axes (``j``, ``k``).

    Raises:
        TypeError, ValueError: as :func:`displacement_jacobian`.
    """
    d = _check_displacement(u)
    minv = _voxel_from_world_linear(grid, u)
    rows = []
    first = [_diff1(u, 2 + b) for b in range(d)]
    cache: dict[tuple[int, int], torch.Tensor] = {}
    for a in range(d):
        row = []
        for b in range(d):
            if a == b:
                row.append(_diff2(u, 2 + a))
            else:
                key = (min(a, b), max(a, b))
                if key not in cache:
                    cache[key] = _diff1(first[key[1]], 2 + key[0])
                row.append(cache[key])
        rows.append(torch.stack(row, dim=2))
    hv = torch.stack(rows, dim=2)  # (N, D_i, D_a, D_b, *S)
    return torch.einsum("aj,niab...,bk->nijk...", minv, hv, minv)


def jacobian_determinant_from_displacement(u: torch.Tensor, grid: GridLike) -> torch.Tensor:
    """Jacobian determinant of ``T(x) = x + u(x)``: ``det(I + J_u)`` at every voxel (world mm).

    Computed in closed form (no LU) from :func:`displacement_jacobian` (central differences inside,
    one-sided at the borders). Values ``<= 0`` mark folding; the value is independent of the grid's
    orientation and spacing for the same physical field.

    Args:
        u: displacement ``(N, D, *S)`` in world mm on ``grid``.
        grid: the field's :class:`Grid`, or ``D`` spacings in mm for an axis-aligned grid.

    Returns:
        ``(N, *S)`` in the dtype and device of ``u`` (1 for a zero or constant field).

    Raises:
        TypeError, ValueError: as :func:`displacement_jacobian`.

    Example:
        >>> u = torch.zeros(1, 2, 3, 3)
        >>> u[:, 0] = -2.0 * torch.arange(3.0)[:, None]  # T mirrors axis 0
        >>> jacobian_determinant_from_displacement(u, (1.0, 1.0))[0, 1, 1]
        tensor(-1.)
    """
    j = displacement_jacobian(u, grid)
    d = j.shape[1]
    a = j + torch.eye(d, dtype=j.dtype, device=j.device).view(1, d, d, *([1] * d))
    if d == 1:
        return a[:, 0, 0]
    if d == 2:
        return a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]
    return (
        a[:, 0, 0] * (a[:, 1, 1] * a[:, 2, 2] - a[:, 1, 2] * a[:, 2, 1])
        - a[:, 0, 1] * (a[:, 1, 0] * a[:, 2, 2] - a[:, 1, 2] * a[:, 2, 0])
        + a[:, 0, 2] * (a[:, 1, 0] * a[:, 2, 1] - a[:, 1, 1] * a[:, 2, 0])
    )
