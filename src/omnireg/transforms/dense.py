"""Dense displacement fields in world millimetres: ``T(x) = x + u(x)``.

Convention:
    ``u`` is a world displacement in mm, ``(N, D, *S)``, sampled at the voxel centres of ``grid`` (the
    fixed grid, possibly oblique). Its D components are **world** axes (R, A, S), because the vector
    lives in world space; for a grid with identity direction they coincide with the tensor axes.
    Between voxel centres ``u`` is interpolated linearly. Outside the field the displacement is zero,
    as in ITK's ``DisplacementFieldTransform``: a point whose continuous voxel index lies within half a
    voxel beyond the outer voxel centres gets the (linearly interpolated, border-clamped) value of the
    nearest border, and a point farther out keeps ``T(x) = x``.

    Voxel-unit fields (VoxelMorph and most networks) hold ``u_vox`` in tensor-axis order (i, j, k) in
    voxel units on the same grid; with ``L = direction @ diag(spacing)``, ``u = L u_vox``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..core.grid import Grid
from ..core.sampling import sample
from .base import Transform

__all__ = [
    "DisplacementField",
    "evaluate_displacement",
    "voxel_from_world_vectors",
    "world_from_voxel_vectors",
    "check_field",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- functional core
def check_field(field: object, grid: Grid, name: str = "field") -> torch.Tensor:
    """Validate a vector field ``(N, D, *S)`` on ``grid`` (``S == grid.shape``, ``D == grid.ndim``).

    Raises:
        TypeError: if ``field`` is not a floating tensor or ``grid`` not a Grid.
        ValueError: on a shape that does not match the grid.
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"grid: expected a Grid, got {type(grid).__name__}")
    if not isinstance(field, torch.Tensor) or not field.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a floating point torch.Tensor, got {type(field).__name__}")
    d = grid.ndim
    expected = (d, *grid.shape)
    if field.ndim != d + 2 or tuple(field.shape[1:]) != expected:
        raise ValueError(
            f"{name}: expected shape (N, {', '.join(map(str, expected))}) for a {d}D grid of shape "
            f"{grid.shape}, got {tuple(field.shape)}"
        )
    if d not in (2, 3):
        raise ValueError(f"grid: expected a 2D or 3D grid, got {d}D")
    return field


def _linear_part(grid: Grid, inverse: bool, like: torch.Tensor) -> torch.Tensor:
    m = grid.voxel_from_world() if inverse else grid.world_from_voxel()
    d = grid.ndim
    return torch.as_tensor(np.ascontiguousarray(m[:d, :d]), dtype=like.dtype, device=like.device)


def world_from_voxel_vectors(field_vox: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Voxel-unit vectors (tensor-axis order) ``(N, D, *S)`` -> world mm vectors (RAS) ``(N, D, *S)``.

    ``u = direction @ diag(spacing) @ u_vox`` (vectors: no origin).
    """
    lin = _linear_part(grid, False, field_vox)
    return torch.einsum("ab,nb...->na...", lin, field_vox)


def voxel_from_world_vectors(field: torch.Tensor, grid: Grid) -> torch.Tensor:
    """World mm vectors (RAS) ``(N, D, *S)`` -> voxel-unit vectors in tensor-axis order ``(N, D, *S)``.

    ``u_vox = diag(1 / spacing) @ direction^T @ u``.
    """
    lin = _linear_part(grid, True, field)
    return torch.einsum("ab,nb...->na...", lin, field)


def _sample_vectors_voxel(field: torch.Tensor, voxel_points: torch.Tensor) -> torch.Tensor:
    """ITK-style evaluation of a field ``(N, C, *S)`` at voxel points ``(N, *S_out, D)`` -> ``(N, C, *S_out)``.

    Linear interpolation with border clamping inside ``[-0.5, S - 0.5]`` per axis, zero outside.
    """
    shape = field.shape[2:]
    upper = torch.tensor([s - 0.5 for s in shape], dtype=voxel_points.dtype, device=voxel_points.device)
    inside = ((voxel_points >= -0.5) & (voxel_points <= upper)).all(dim=-1)
    out = sample(field, voxel_points, interp="linear", padding="border")
    return out * inside.unsqueeze(1).to(out.dtype)


def evaluate_displacement(
    field: torch.Tensor, grid: Grid, points: torch.Tensor, *, extend_border: bool = False
) -> torch.Tensor:
    """The world displacement ``u`` of ``field`` (on ``grid``) at arbitrary world points.

    Args:
        field: ``(N, D, *S)`` world mm displacement at the voxel centres of ``grid``.
        grid: the field's grid.
        points: ``(N, P, D)`` world mm points (batch 1 broadcasts either way).

        extend_border: if True, points outside the field get the value of the nearest border
            (no cut-off to zero); used by the fixed-point inversion to keep the iteration continuous.

    Returns:
        ``(N, P, D)`` world mm displacement, zero outside the field (module docstring); dtype of ``points``.
    """
    d = grid.ndim
    vox = grid.transform_points(points, "world", "voxel")
    vox = vox.reshape(vox.shape[0], vox.shape[1], *([1] * (d - 1)), d)
    if extend_border:
        u = sample(field.to(points.dtype), vox, interp="linear", padding="border")
    else:
        u = _sample_vectors_voxel(field.to(points.dtype), vox)
    return u.reshape(u.shape[0], d, -1).transpose(1, 2)


# ---------------------------------------------------------------------------- module
class DisplacementField(Transform):
    """A dense displacement field transform ``T(x) = x + u(x)`` with ``u`` in world mm.

    ``T`` maps fixed-space world points to moving-space world points (pull: the warped image is
    ``moving(x + u(x))``). Evaluation between voxel centres is linear; the displacement is zero outside
    the field (see the module docstring for ITK's exact rule, which this follows).

    Args:
        field: ``(N, D, *S)`` world mm displacement at the voxel centres of ``grid``; components are
            world axes (R, A, S).
        grid: the fixed grid the field lives on (any spacing, origin and direction).
        learnable: register a copy of ``field`` as an ``nn.Parameter`` (True, for optimisation) or keep
            ``field`` as a buffer in its autograd graph (False, e.g. a network output).

    Raises:
        TypeError, ValueError: if ``field`` does not match ``grid``.

    Shape:
        ``field``: ``(N, D, *S)``; ``forward``: ``(N, *P, D) -> (N, *P, D)``.
    """

    def __init__(self, field: torch.Tensor, grid: Grid, *, learnable: bool = True) -> None:
        check_field(field, grid)
        super().__init__(grid.ndim, int(field.shape[0]))
        self.grid = grid
        self._register("field", field, learnable)

    # ---------------------------------------------------------------- voxel units
    @classmethod
    def from_voxel_displacement(cls, field_vox: torch.Tensor, grid: Grid, *, learnable: bool = True) -> "DisplacementField":
        """A field from a voxel-unit displacement (VoxelMorph convention).

        Args:
            field_vox: ``(N, D, *S)`` displacement in voxel units, components in tensor-axis order
                (i, j, k), mapping fixed voxel ``p`` to moving voxel ``p + u_vox(p)``; fixed and moving
                images are assumed to share ``grid``, as in VoxelMorph.
            grid: the common grid.
            learnable: as in the constructor.

        Returns:
            the field with ``u = direction @ diag(spacing) @ u_vox`` in world mm.
        """
        check_field(field_vox, grid, "field_vox")
        return cls(world_from_voxel_vectors(field_vox, grid), grid, learnable=learnable)

    def to_voxel_displacement(self) -> torch.Tensor:
        """The field in voxel units of :attr:`grid`, tensor-axis order (i, j, k): ``(N, D, *S)``."""
        return voxel_from_world_vectors(self.field, self.grid)

    @classmethod
    def from_transform(cls, transform: Transform, grid: Grid, *, learnable: bool = True) -> "DisplacementField":
        """The displacement of any transform sampled at the voxel centres of ``grid`` (a dense copy).

        The result equals ``transform`` at the voxel centres and interpolates linearly between them.
        """
        return cls(transform.displacement(grid), grid, learnable=learnable)

    # ---------------------------------------------------------------- mapping
    def _transform(self, points: torch.Tensor) -> torch.Tensor:
        return points + evaluate_displacement(self.field, self.grid, points)

    def transform_grid(self, grid: Grid, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``T(x)`` at the voxel centres of ``grid``; exact (no interpolation) on the field's own grid."""
        self._check_grid(grid)
        if not grid.same_as(self.grid, atol=0.0):
            return super().transform_grid(grid, dtype=dtype)
        dtype = dtype or self.dtype
        x = grid.points("world", dtype=dtype, device=self.device).unsqueeze(0)
        return x + self.field.to(dtype).movedim(1, -1)

    def inverse(self, *, max_iter: int = 50, tol: float = 1e-3) -> "DisplacementField":
        """Approximate inverse on the same grid by fixed-point iteration.

        Solves ``v(x) = -u(x + v(x))`` at the voxel centres ``x`` of :attr:`grid`, starting from
        ``v = -u``, so that ``T(T^-1(x)) = x``. It stops when the largest change of ``v`` over the grid
        is below ``tol`` mm, or after ``max_iter`` iterations (a WARNING is logged then). The iteration
        converges for fields with ``|du/dx| < 1`` (no folding). During the iteration ``u`` is extended
        beyond the grid by its border values (no cut-off), so points near the border converge too.
        The result is not linked to this field.

        Args:
            max_iter: maximum number of iterations (default 50).
            tol: stopping tolerance in mm (default 1e-3).

        Returns:
            a :class:`DisplacementField` on :attr:`grid`.

        Raises:
            ValueError: on a non-positive ``max_iter`` or ``tol``.
        """
        if not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter: expected a positive int, got {max_iter!r}")
        if not tol > 0:
            raise ValueError(f"tol: expected a positive tolerance in mm, got {tol!r}")
        with torch.no_grad():
            field = self.field.detach()
            n, d = field.shape[0], self.ndim
            x = self.grid.points("world", dtype=field.dtype, device=field.device).reshape(1, -1, d)
            v = -field.reshape(n, d, -1).transpose(1, 2)
            delta = float("inf")
            for it in range(max_iter):
                v_new = -evaluate_displacement(field, self.grid, x + v, extend_border=True)
                delta = float((v_new - v).norm(dim=-1).max())
                v = v_new
                if delta < tol:
                    logger.debug("DisplacementField.inverse converged after %d iterations (%.3g mm)", it + 1, delta)
                    break
            else:
                logger.warning(
                    "DisplacementField.inverse: no convergence after %d iterations (last change %.3g mm > tol %.3g mm)",
                    max_iter,
                    delta,
                    tol,
                )
            inv = v.transpose(1, 2).reshape(field.shape)
        return DisplacementField(inv, self.grid)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, grid={self.grid!r}"
