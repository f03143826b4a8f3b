"""Finite-difference derivatives of displacement fields in world millimetres, for the regularizers.

The first derivatives, the Jacobian and its determinant are :mod:`omnireg.core.differences` (the one
home of that scheme, re-exported here); this module adds the second derivatives.

Convention:
    A displacement field ``u`` has shape ``(N, D, *S)``: ``u[:, i]`` is the component along **world**
    axis ``i`` (RAS, mm), sampled at the voxel centres of a grid; ``T(x) = x + u(x)``.
    The grid is either a :class:`~omnireg.core.grid.Grid` (any orientation) or a spacing tuple
    ``(s_0, ..., s_{D-1})`` in mm for an axis-aligned grid (direction = identity, world axis ``i`` =
    tensor axis ``i``). Write ``M = direction @ diag(spacing)`` for the linear part of
    ``world_from_voxel``, so that ``x = origin + M v`` for voxel index ``v``.

Scheme (stated because results depend on it, see ANTs #829):
    * first derivative along a voxel axis: central difference ``(f[k+1] - f[k-1]) / 2`` in the interior,
      one-sided ``f[1] - f[0]`` and ``f[S-1] - f[S-2]`` at the two borders, 0 on an axis of size 1
      (:func:`omnireg.core.differences.voxel_derivative`, border rule ``one-sided``);
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

import torch

from ..core.differences import (
    GridLike,
    check_displacement,
    displacement_jacobian,
    jacobian_determinant_from_displacement,
    voxel_derivative,
    voxel_from_world_linear,
)

__all__ = [
    "GridLike",
    "displacement_jacobian",
    "displacement_hessian",
    "jacobian_determinant_from_displacement",
]


# ---------------------------------------------------------------------------- voxel differences
def _diff2(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Pure second derivative per voxel^2 along ``dim`` (3-point stencil, border = nearest interior)."""
    n = x.shape[dim]
    if n < 3:
        return torch.zeros_like(x)
    inner = x.narrow(dim, 2, n - 2) - 2 * x.narrow(dim, 1, n - 2) + x.narrow(dim, 0, n - 2)
    return torch.cat([inner.narrow(dim, 0, 1), inner, inner.narrow(dim, n - 3, 1)], dim=dim)


# ---------------------------------------------------------------------------- public
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
    d = check_displacement(u)
    minv = voxel_from_world_linear(grid, u)
    rows = []
    first = [voxel_derivative(u, 2 + b) for b in range(d)]
    cache: dict[tuple[int, int], torch.Tensor] = {}
    for a in range(d):
        row = []
        for b in range(d):
            if a == b:
                row.append(_diff2(u, 2 + a))
            else:
                key = (min(a, b), max(a, b))
                if key not in cache:
                    cache[key] = voxel_derivative(first[key[1]], 2 + key[0])
                row.append(cache[key])
        rows.append(torch.stack(row, dim=2))
    hv = torch.stack(rows, dim=2)  # (N, D_i, D_a, D_b, *S)
    return torch.einsum("aj,niab...,bk->nijk...", minv, hv, minv)
