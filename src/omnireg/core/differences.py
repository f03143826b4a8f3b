"""Finite differences of sampled fields in world millimetres, and the Jacobian determinant.

The one home of the first-derivative scheme and of the Jacobian determinant of a displacement field:
the regularizers (:mod:`omnireg.regularizers`), the transforms' Jacobian
(:func:`omnireg.transforms.jacobian_matrix`), the evaluation's statistics
(:func:`omnireg.evaluation.jacobian_determinant`) and the similarity measures' image gradients use it.

Convention:
    A displacement field ``u`` has shape ``(N, D, *S)``: ``u[:, i]`` is the component along **world**
    axis ``i`` (RAS, mm), sampled at the voxel centres of a grid; ``T(x) = x + u(x)``. The grid is a
    :class:`~omnireg.core.grid.Grid` (any orientation) or a spacing tuple ``(s_0, ..., s_{D-1})`` in mm
    for an axis-aligned grid (direction = identity). Write ``M = direction @ diag(spacing)`` for the
    linear part of ``world_from_voxel``; voxel derivatives become world derivatives by the chain rule
    ``du/dx = (du/dv) M^-1`` (``M^-1`` the exact matrix inverse).

Scheme (stated because results depend on it, see ANTs #829): central differences
``(f[k+1] - f[k-1]) / 2`` inside, 0 along an axis of size 1, and one of two border rules
(:class:`BorderRule`) on the first and last voxel of an axis:

* ``one-sided`` (default): ``f[1] - f[0]`` and ``f[S-1] - f[S-2]``, as ``numpy.gradient(edge_order=1)``.
  Exact for affine fields everywhere, so a penalty sees no border artefact; the regularizers and
  :func:`omnireg.transforms.jacobian_matrix` use it.
* ``clamped``: indices clamped to the grid, ``(f[1] - f[0]) / 2`` and ``(f[S-1] - f[S-2]) / 2``
  (zero-flux Neumann), exactly ITK's ``DisplacementFieldJacobianDeterminantFilter`` (behind ANTs'
  ``CreateJacobianDeterminantImage``) for a grid with identity direction; the evaluation uses it so
  that its numbers compare with ITK's and ANTs'. On an affine field it gives ``det A`` inside and a
  halved derivative on the outermost voxels.

The two rules agree everywhere except on the outermost voxels of each axis.
"""

from __future__ import annotations

from enum import Enum
from typing import Sequence, Union

import numpy as np
import torch

from .enums import as_enum
from .grid import Grid

__all__ = ["BorderRule", "GridLike", "check_displacement", "determinant", "displacement_jacobian",
           "jacobian_determinant_from_displacement", "voxel_derivative", "voxel_from_world_linear"]

#: A :class:`Grid`, or a spacing tuple in mm for an axis-aligned grid.
GridLike = Union[Grid, Sequence[float]]


class BorderRule(str, Enum):
    """Difference on the first and last voxel of an axis (module docstring)."""

    ONE_SIDED = "one-sided"
    CLAMPED = "clamped"


def check_displacement(u: object, name: str = "u") -> int:
    """Validate a displacement field ``(N, D, *S)`` with ``D = len(S)`` in 1..3 and return ``D``."""
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


def voxel_from_world_linear(grid: GridLike, u: torch.Tensor, name: str = "grid") -> torch.Tensor:
    """``M^-1`` ``(D, D)`` for the field ``u`` ``(N, D, *S)`` on ``grid``, in the dtype and device of ``u``.

    Raises:
        TypeError: ``grid`` is neither a Grid nor a sequence of spacings.
        ValueError: a grid of another shape than the field's, or not ``D`` positive finite spacings.
    """
    spatial = tuple(u.shape[2:])
    d = len(spatial)
    if isinstance(grid, Grid):
        if tuple(grid.shape) != spatial:
            raise ValueError(f"{name}: expected a grid of shape {spatial} (the field's), got {grid.shape}")
        m = grid.world_from_voxel()[:d, :d]
    else:
        if isinstance(grid, (str, bytes)) or not isinstance(grid, (Sequence, np.ndarray, torch.Tensor)):
            raise TypeError(f"{name}: expected a Grid or a sequence of {d} spacings in mm, got {type(grid).__name__}")
        spacing = np.asarray(grid, dtype=np.float64).reshape(-1)
        if spacing.size != d:
            raise ValueError(f"{name}: expected {d} spacings in mm (one per spatial axis), got {spacing.size}")
        if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise ValueError(f"{name}: expected positive finite spacings in mm, got {spacing.tolist()}")
        m = np.diag(spacing)
    return torch.as_tensor(np.linalg.inv(m), dtype=u.dtype, device=u.device)


def voxel_derivative(x: torch.Tensor, dim: int, *, border: BorderRule | str = BorderRule.ONE_SIDED) -> torch.Tensor:
    """First derivative per voxel of ``x`` along tensor dimension ``dim`` (scheme in the module docstring).

    Args:
        x: any floating tensor.
        dim: the dimension to differentiate along.
        border: the border rule (:class:`BorderRule`).

    Returns:
        A tensor of the shape, dtype and device of ``x``.

    Example:
        >>> f = torch.tensor([0.0, 1.0, 4.0, 9.0])
        >>> voxel_derivative(f, 0)
        tensor([1., 2., 4., 5.])
        >>> voxel_derivative(f, 0, border="clamped")
        tensor([0.5000, 2.0000, 4.0000, 2.5000])
    """
    border = as_enum(border, BorderRule, "border")
    n = x.shape[dim]
    if n == 1:
        return torch.zeros_like(x)
    first = x.narrow(dim, 1, 1) - x.narrow(dim, 0, 1)
    last = x.narrow(dim, n - 1, 1) - x.narrow(dim, n - 2, 1)
    if border is BorderRule.CLAMPED:
        first, last = first / 2, last / 2
    if n == 2:
        return torch.cat([first, last], dim=dim)
    inner = (x.narrow(dim, 2, n - 2) - x.narrow(dim, 0, n - 2)) / 2
    return torch.cat([first, inner, last], dim=dim)


def displacement_jacobian(u: torch.Tensor, grid: GridLike, *, border: BorderRule | str = BorderRule.ONE_SIDED) -> torch.Tensor:
    """World Jacobian of a displacement field: ``J[:, i, j] = du_i / dx_j`` (mm per mm, dimensionless).

    ``J_u = (du / dv) @ M^-1`` with ``M = direction @ diag(spacing)``; finite differences as in the
    module docstring. Each entry is a sum of products per voxel (no batched matrix product), so the
    value at a voxel does not depend on how much of the field is passed around it.

    Args:
        u: displacement ``(N, D, *S)`` in world mm, components along world axes, on ``grid``.
        grid: the field's :class:`Grid` (shape ``S``), or ``D`` spacings in mm for an axis-aligned grid.
        border: the border rule (:class:`BorderRule`).

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
    d = check_displacement(u)
    minv = voxel_from_world_linear(grid, u)
    nonzero = (minv != 0).tolist()
    dv = [voxel_derivative(u, 2 + a, border=border) for a in range(d)]  # dv[a][:, i] = du_i / dv_a
    rows = []
    for i in range(d):
        row = []
        for j in range(d):
            terms = [dv[a][:, i] * minv[a, j] for a in range(d) if nonzero[a][j]]
            entry = terms[0]
            for t in terms[1:]:
                entry = entry + t
            row.append(entry)
        rows.append(torch.stack(row, dim=1))
    return torch.stack(rows, dim=1)


def determinant(a: torch.Tensor) -> torch.Tensor:
    """Determinant of ``(N, D, D, *S)`` matrices (D in 1..3) in closed form: ``(N, *S)``, differentiable.

    Example:
        >>> determinant(torch.tensor([[[2.0, 1.0], [1.0, 3.0]]]))
        tensor([5.])
    """
    d = a.shape[1]
    if a.ndim < 3 or d not in (1, 2, 3) or a.shape[2] != d:
        raise ValueError(f"a: expected matrices of shape (N, D, D, *S) with D in 1..3, got {tuple(a.shape)}")
    if d == 1:
        return a[:, 0, 0]
    if d == 2:
        return a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]
    return (
        a[:, 0, 0] * (a[:, 1, 1] * a[:, 2, 2] - a[:, 1, 2] * a[:, 2, 1])
        - a[:, 0, 1] * (a[:, 1, 0] * a[:, 2, 2] - a[:, 1, 2] * a[:, 2, 0])
        + a[:, 0, 2] * (a[:, 1, 0] * a[:, 2, 1] - a[:, 1, 1] * a[:, 2, 0])
    )


def jacobian_determinant_from_displacement(
    u: torch.Tensor, grid: GridLike, *, border: BorderRule | str = BorderRule.ONE_SIDED
) -> torch.Tensor:
    """Jacobian determinant of ``T(x) = x + u(x)``: ``det(I + J_u)`` at every voxel (world mm).

    Computed in closed form (no LU) from :func:`displacement_jacobian`. Values ``<= 0`` mark folding;
    the value is independent of the grid's orientation and spacing for the same physical field.

    Args:
        u: displacement ``(N, D, *S)`` in world mm on ``grid``.
        grid: the field's :class:`Grid`, or ``D`` spacings in mm for an axis-aligned grid.
        border: the border rule (:class:`BorderRule`): ``one-sided`` for penalties, ``clamped`` as ITK.

    Returns:
        ``(N, *S)`` in the dtype and device of ``u`` (1 for a zero or constant field).

    Raises:
        TypeError, ValueError: as :func:`displacement_jacobian`.

    Example:
        >>> u = torch.zeros(1, 2, 3, 3)
        >>> u[:, 0] = -2.0 * torch.arange(3.0)[:, None]  # T mirrors axis 0
        >>> jacobian_determinant_from_displacement(u, (1.0, 1.0))[0, :, 1]
        tensor([-1., -1., -1.])
        >>> jacobian_determinant_from_displacement(u, (1.0, 1.0), border="clamped")[0, :, 1]
        tensor([ 0., -1.,  0.])
    """
    j = displacement_jacobian(u, grid, border=border)
    for i in range(j.shape[1]):
        j[:, i, i] += 1.0
    return determinant(j)
