"""Cubic B-spline free-form deformation (FFD) on a control-point grid in world space.

Convention:
    The transform is ``T(x) = x + u(x)`` with

        u(x) = sum_c  B(p_0 - c_0) ... B(p_{D-1} - c_{D-1})  coef[:, :, c]

    where ``p`` is the continuous voxel index of ``x`` in the **control grid** (a core
    :class:`~omnireg.core.grid.Grid` with the control-point spacing in mm and the image grid's
    direction), ``B`` the cubic B-spline kernel (``2/3 - t^2 + |t|^3/2`` for ``|t| < 1``,
    ``(2 - |t|)^3 / 6`` for ``1 <= |t| < 2``, else 0) and ``coef`` ``(N, D, *C)`` world mm
    coefficients (components are world axes). The coefficients are not prefiltered: they are
    control-point weights, not samples of ``u``. Beyond the control grid the coefficients are
    taken as zero, so ``u`` decays smoothly to zero outside and stays C2 everywhere.

    :meth:`BSplineTransform.from_grid` places the control grid like ITK's
    ``BSplineTransformInitializer`` for spline order 3: a mesh of ``m`` cells of exactly
    ``spacing_mm`` covers the image (voxel centre to voxel centre, centred on it), plus one control
    point before and two after along each axis (``C = m + 3``), so every image point has its full
    4^D support and a constant coefficient field gives exactly that constant displacement.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..core.grid import Grid
from ..core.sampling import evaluate_bspline
from .base import Transform
from .dense import DisplacementField, check_field

__all__ = ["BSplineTransform", "bspline_kernel", "control_grid_for"]


def bspline_kernel(t: torch.Tensor) -> torch.Tensor:
    """The cubic B-spline kernel ``B(t)`` (module docstring), elementwise."""
    a = t.abs()
    inner = 2.0 / 3.0 - a * a + 0.5 * a * a * a
    outer = (2.0 - a).clamp(min=0) ** 3 / 6.0
    return torch.where(a < 1, inner, outer)


def control_grid_for(grid: Grid, spacing_mm: float | Sequence[float]) -> Grid:
    """The control-point grid of a cubic FFD covering ``grid`` with the given control spacing.

    Args:
        grid: the (fixed) image grid.
        spacing_mm: control-point spacing in mm, one value or one per tensor axis.

    Returns:
        a Grid with ``m + 3`` points per axis (``m = max(1, ceil(extent / spacing))``, extent measured
        between the outer voxel centres), the image grid's direction, and the image centred in the
        mesh; control index 1 lies ``offset = (m * spacing - extent) / 2`` mm before the first voxel centre.

    Raises:
        ValueError: on a non-positive spacing.
    """
    d = grid.ndim
    sp = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (d,)).copy()
    if sp.shape != (d,) or np.any(~np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing_mm: expected positive spacing(s) in mm, got {spacing_mm!r}")
    extent = (np.asarray(grid.shape) - 1) * np.asarray(grid.spacing)
    m = np.maximum(1, np.ceil(extent / sp - 1e-9)).astype(int)
    offset = (m * sp - extent) / 2.0
    start = np.asarray(grid.origin) - grid.direction @ (offset + sp)
    return Grid(tuple((m + 3).tolist()), tuple(sp.tolist()), tuple(start.tolist()), grid.direction)


def _separable_coordinates(control: Grid, grid: Grid) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-axis affine map ``p_c = scale * i + shift`` from ``grid`` voxels to control voxels, if separable."""
    m = control.voxel_from_world() @ grid.world_from_voxel()
    d = grid.ndim
    lin = m[:d, :d]
    if not np.allclose(lin, np.diag(np.diag(lin)), atol=1e-9):
        return None
    return np.diag(lin).copy(), m[:d, d].copy()


def _evaluate_points(coef: torch.Tensor, vox: torch.Tensor) -> torch.Tensor:
    """Cubic B-spline with zero-extended coefficients ``(N, C, *K)`` at control-voxel points ``(N, *S, D)``."""
    return evaluate_bspline(coef, vox.to(coef.dtype), padding="zeros")


class BSplineTransform(Transform):
    """Cubic B-spline free-form deformation ``T(x) = x + u(x)`` (formula in the module docstring).

    ``T`` maps fixed-space world points to moving-space world points (pull). Differentiable in the
    coefficients and in the points; C2-smooth.

    Args:
        coefficients: ``(N, D, *C)`` world mm control-point coefficients on ``control_grid``.
        control_grid: the control-point grid (see :func:`control_grid_for`); at least 4 points per axis.
        learnable: ``nn.Parameter`` copy (True) or a buffer kept in its autograd graph (False).

    Raises:
        TypeError, ValueError: on mismatching shapes or a control grid with fewer than 4 points per axis.
    """

    def __init__(self, coefficients: torch.Tensor, control_grid: Grid, *, learnable: bool = True) -> None:
        check_field(coefficients, control_grid, "coefficients")
        if any(s < 4 for s in control_grid.shape):
            raise ValueError(f"control_grid: expected at least 4 control points per axis, got shape {control_grid.shape}")
        super().__init__(control_grid.ndim, int(coefficients.shape[0]))
        self.control_grid = control_grid
        self._register("coefficients", coefficients, learnable)

    @classmethod
    def from_grid(
        cls,
        grid: Grid,
        *,
        spacing_mm: float | Sequence[float],
        batch_size: int = 1,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> "BSplineTransform":
        """An identity FFD (zero coefficients) whose control grid covers ``grid`` (:func:`control_grid_for`).

        Args:
            grid: the fixed image grid.
            spacing_mm: control-point spacing in mm (one value or one per tensor axis).
            batch_size: N.
            dtype, device: of the coefficients.
        """
        if not isinstance(grid, Grid):
            raise TypeError(f"grid: expected a Grid, got {type(grid).__name__}")
        control = control_grid_for(grid, spacing_mm)
        coef = torch.zeros(batch_size, grid.ndim, *control.shape, dtype=dtype, device=device)
        return cls(coef, control)

    def _transform(self, points: torch.Tensor) -> torch.Tensor:
        d = self.ndim
        vox = self.control_grid.transform_points(points, "world", "voxel")
        vox = vox.reshape(vox.shape[0], vox.shape[1], *([1] * (d - 1)), d)
        u = _evaluate_points(self.coefficients.to(points.dtype), vox)
        return points + u.reshape(u.shape[0], d, -1).transpose(1, 2)

    def displacement(self, grid: Grid, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``u`` at the voxel centres of ``grid`` ``(N, D, *S)`` world mm.

        When ``grid`` shares the control grid's direction (any spacing and origin, e.g. the image grid
        and its pyramid levels) the spline is evaluated separably as ``D`` small matrix products with
        per-axis kernel matrices; otherwise point by point.
        """
        self._check_grid(grid)
        dtype = dtype or self.dtype
        sep = _separable_coordinates(self.control_grid, grid)
        if sep is None:
            return super().displacement(grid, dtype=dtype)
        scale, shift = sep
        u = self.coefficients.to(dtype)
        for a in range(self.ndim):
            i = torch.arange(grid.shape[a], dtype=torch.float64, device=u.device)
            p = i * float(scale[a]) + float(shift[a])
            c = torch.arange(self.control_grid.shape[a], dtype=torch.float64, device=u.device)
            w = bspline_kernel(p[:, None] - c[None, :]).to(dtype)  # (S_a, C_a)
            u = torch.movedim(torch.movedim(u, 2 + a, -1) @ w.T, -1, 2 + a)
        return u

    def transform_grid(self, grid: Grid, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``T(x)`` at the voxel centres of ``grid`` ``(N, *S, D)``, separable when possible (see :meth:`displacement`)."""
        self._check_grid(grid)
        dtype = dtype or self.dtype
        x = grid.points("world", dtype=dtype, device=self.device).unsqueeze(0)
        return x + self.displacement(grid, dtype=dtype).movedim(1, -1)

    def inverse(self, *, grid: Grid, max_iter: int = 50, tol: float = 1e-3) -> DisplacementField:
        """Approximate inverse as a dense field on ``grid`` (an FFD has no closed-form inverse).

        Samples ``u`` at the voxel centres of ``grid`` and inverts that field by fixed-point iteration
        (:meth:`DisplacementField.inverse`, same ``max_iter`` and ``tol`` in mm).

        Args:
            grid: the grid to represent the inverse on (usually the fixed image grid).
            max_iter, tol: as :meth:`DisplacementField.inverse`.

        Returns:
            a :class:`DisplacementField` on ``grid`` (not linked to these coefficients).
        """
        with torch.no_grad():
            dense = DisplacementField(self.displacement(grid).detach(), grid)
        return dense.inverse(max_iter=max_iter, tol=tol)

    def extra_repr(self) -> str:
        sp = ", ".join(f"{s:g}" for s in self.control_grid.spacing)
        return f"{super().extra_repr()}, control_shape={self.control_grid.shape}, spacing_mm=({sp})"

