"""Jacobian determinant statistics and inverse consistency of transforms, in world mm.

Jacobian determinant (USERS.md item 13: the scheme is stated, and folding is counted on the
determinant itself, not on its logarithm). For ``T(x) = x + u(x)`` with ``u`` a world-mm displacement
(components along world axes) at the voxel centres of a grid with ``M = direction @ diag(spacing)``::

    du_i/dv_a [k] = (u_i[k + 1] - u_i[k - 1]) / 2      along voxel axis a, indices clamped to [0, S_a - 1]
    J_u = (du/dv) M^-1                                  (world mm per mm)
    det J_T = det(I + J_u)

i.e. central differences with zero-flux Neumann borders: at the first voxel ``(u[1] - u[0]) / 2``, at
the last ``(u[S-1] - u[S-2]) / 2``, 0 along an axis of size 1. This is exactly SimpleITK's / ITK's
``DisplacementFieldJacobianDeterminantFilter`` (also behind ANTs' ``CreateJacobianDeterminantImage``)
for a grid with identity direction; unlike ITK, the direction matrix is honoured, so the value does
not depend on the orientation the image is stored in. It is
:func:`omnireg.core.differences.jacobian_determinant_from_displacement` with the border rule
``clamped``; the regularizers use the same function with one-sided differences at the borders (exact
for affine fields); the two agree everywhere except on the outermost voxels.

Statistics (:class:`JacobianStats`): the fraction and percentage of voxels with ``det <= 0``
(folding, a voxel-count analogue of Learn2Reg's NDV), min, max and mean of ``det``, and the standard
deviation (``ddof=0``) of ``log det`` over the voxels with ``det > 0`` (Learn2Reg's SDlogJ clips the
determinant instead; here the folded voxels are reported separately and left out of the logarithm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.differences import BorderRule, jacobian_determinant_from_displacement
from ..core.grid import Grid
from ..core.image import Image
from ..transforms.base import Transform, check_single_transform

__all__ = [
    "JacobianStats",
    "InverseConsistency",
    "displacement_on_grid",
    "jacobian_determinant",
    "jacobian_statistics",
    "inverse_consistency_error",
]

_CHUNK_VOXELS = 1 << 21  # voxels per slab of the determinant computation (bounds the memory)


def displacement_on_grid(field: object, grid: Grid) -> np.ndarray:
    """The world-mm displacement ``u`` ``(D, *S)`` (float64) of a transform or a field on ``grid``.

    Args:
        field: a :class:`~omnireg.transforms.Transform` of batch size 1 (sampled at the voxel centres
            of ``grid``: ``u(x) = T(x) - x``), or a displacement ``(D, *S)`` / ``(1, D, *S)`` in world mm
            (components along world axes) given at the voxel centres of ``grid`` (array or tensor).
        grid: the sampling grid.

    Raises:
        TypeError: on other types.
        ValueError: on a shape or dimension that does not match ``grid``, or a batch size above 1.
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"grid: expected a Grid, got {type(grid).__name__}")
    d = grid.ndim
    if isinstance(field, Transform):
        check_single_transform(field, d, "field")
        with torch.no_grad():
            return field.displacement(grid, dtype=torch.float64)[0].cpu().numpy()
    if isinstance(field, torch.Tensor):
        field = field.detach().cpu().numpy()
    if not isinstance(field, np.ndarray):
        raise TypeError(f"field: expected a Transform or a (D, *S) displacement array, got {type(field).__name__}")
    u = field[0] if field.ndim == d + 2 and field.shape[0] == 1 else field
    if u.shape != (d, *grid.shape):
        raise ValueError(f"field: expected a displacement of shape {(d, *grid.shape)} on the grid, got {field.shape}")
    return np.asarray(u, dtype=np.float64)


def jacobian_determinant(field: object, grid: Grid) -> np.ndarray:
    """``det(I + J_u)`` at every voxel centre of ``grid`` (scheme in the module docstring).

    Args:
        field: a Transform (batch size 1) or a world-mm displacement ``(D, *S)`` on ``grid``
            (see :func:`displacement_on_grid`).
        grid: the grid (spacing and direction enter the world-mm derivative).

    Returns:
        float64 array ``(*S)``: the Jacobian determinant of ``T``: 1 for a translation everywhere,
        ``det A`` for an affine ``T`` at every interior voxel; on the outermost voxels the border rule
        (module docstring) halves the difference along the axis that ends there, as ITK does.

    Raises:
        TypeError, ValueError: see :func:`displacement_on_grid`.

    Example:
        >>> g = Grid((4, 5), spacing=(2.0, 1.0))
        >>> u = np.zeros((2, 4, 5)); u[0] = 0.5 * g.points("world").numpy()[..., 0]
        >>> float(jacobian_determinant(u, g)[1, 1])
        1.5
    """
    u = displacement_on_grid(field, grid)
    shape = grid.shape
    n0 = shape[0]
    per_slice = max(1, int(np.prod(shape[1:])))
    step = max(1, _CHUNK_VOXELS // per_slice)
    out = np.empty(shape, dtype=np.float64)
    for start in range(0, n0, step):  # slabs along axis 0 with a one-voxel halo; the halo rows are dropped
        stop = min(start + step, n0)
        lo, hi = max(start - 1, 0), min(stop + 1, n0)
        slab = torch.from_numpy(np.ascontiguousarray(u[:, lo:hi]))[None]
        slab_grid = Grid((hi - lo, *shape[1:]), grid.spacing, grid.origin, grid.direction)
        det = jacobian_determinant_from_displacement(slab, slab_grid, border=BorderRule.CLAMPED)[0]
        out[start:stop] = det[start - lo : start - lo + (stop - start)].numpy()
    return out


@dataclass(frozen=True)
class JacobianStats:
    """Statistics of the Jacobian determinant over the evaluated voxels (module docstring).

    Attributes:
        count: number of evaluated voxels.
        nonpositive_count: voxels with ``det <= 0`` (folding).
        nonpositive_fraction: ``nonpositive_count / count``; ``nonpositive_percent`` is 100 times it.
        min, max, mean: of ``det``.
        log_std: standard deviation (``ddof=0``) of ``log det`` over voxels with ``det > 0`` (NaN if none).
    """

    count: int
    nonpositive_count: int
    nonpositive_fraction: float
    min: float
    max: float
    mean: float
    log_std: float

    @property
    def nonpositive_percent(self) -> float:
        return 100.0 * self.nonpositive_fraction

    def to_dict(self) -> dict:
        """Flat dict with keys prefixed ``jacobian_`` (e.g. ``jacobian_nonpositive_percent``)."""
        return {
            "jacobian_voxels": self.count,
            "jacobian_nonpositive_count": self.nonpositive_count,
            "jacobian_nonpositive_percent": self.nonpositive_percent,
            "jacobian_min": self.min,
            "jacobian_max": self.max,
            "jacobian_mean": self.mean,
            "jacobian_log_std": self.log_std,
        }


def _as_mask(mask: object, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    if isinstance(mask, Image):
        mask = mask.numpy()[0] if mask.channels == 1 else mask.numpy()
    elif isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    m = np.asarray(mask) != 0
    if m.shape != shape:
        raise ValueError(f"mask: expected shape {shape} (the grid's), got {m.shape}")
    if not m.any():
        raise ValueError("mask: expected at least one voxel inside the mask, got an empty mask")
    return m


def jacobian_statistics(field: object, grid: Grid, *, mask: object = None) -> JacobianStats:
    """Folding and volume-change statistics of ``det(I + J_u)`` on ``grid``.

    Args:
        field: a Transform (batch size 1) or a world-mm displacement ``(D, *S)`` on ``grid``.
        grid: the evaluation grid (usually the fixed image's).
        mask: optional ``(*S)`` mask (non-zero = evaluated; an Image, array or tensor); default all voxels.

    Returns:
        A :class:`JacobianStats`.

    Raises:
        TypeError, ValueError: see :func:`jacobian_determinant`; a mask of another shape or an empty one.
    """
    det = jacobian_determinant(field, grid)
    m = _as_mask(mask, grid.shape)
    values = det.reshape(-1) if m is None else det[m]
    positive = values[values > 0]
    nonpos = int(values.size - positive.size)
    return JacobianStats(
        count=int(values.size),
        nonpositive_count=nonpos,
        nonpositive_fraction=nonpos / values.size,
        min=float(values.min()),
        max=float(values.max()),
        mean=float(values.mean()),
        log_std=float(np.log(positive).std()) if positive.size else float("nan"),
    )


@dataclass(frozen=True)
class InverseConsistency:
    """``e(x) = |B(A(x)) - x|`` in mm at the voxel centres of a grid.

    Attributes:
        errors_mm: ``(*S)`` float64 errors.
        mean_mm, max_mm: over the evaluated voxels (those of the mask, if given).
    """

    errors_mm: np.ndarray
    mean_mm: float
    max_mm: float

    def to_dict(self) -> dict:
        return {"inverse_consistency_mean_mm": self.mean_mm, "inverse_consistency_max_mm": self.max_mm}


def inverse_consistency_error(forward: Transform, backward: Transform, grid: Grid, *, mask: object = None) -> InverseConsistency:
    """Inverse-consistency error ``|B(A(x)) - x|`` (world mm) of a pair of transforms on ``grid``.

    ``A = forward`` maps fixed-space points to moving-space points and ``B = backward`` maps them back;
    both are evaluated in float64 at the voxel centres ``x`` of ``grid`` (``A`` by its whole-grid
    evaluation, exact for a displacement field on its own grid). Swap the arguments (and use the moving
    grid) for the other direction.

    Args:
        forward: fixed -> moving transform ``A`` (batch size 1).
        backward: moving -> fixed transform ``B`` (batch size 1).
        grid: the fixed-space grid of the points ``x``.
        mask: optional ``(*S)`` mask of the voxels to summarise (the returned error map is complete).

    Returns:
        An :class:`InverseConsistency` (0 for an exact inverse pair).

    Raises:
        TypeError: if a transform is not a Transform or ``grid`` not a Grid.
        ValueError: on mismatching dimensions or batch sizes above 1.
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"grid: expected a Grid, got {type(grid).__name__}")
    check_single_transform(forward, grid.ndim, "forward")
    check_single_transform(backward, grid.ndim, "backward")
    with torch.no_grad():
        x = grid.points("world", dtype=torch.float64, device=forward.device)
        y = forward.transform_grid(grid, dtype=torch.float64)
        z = backward(y.to(backward.device))[0].to(x.device)
        err = (z - x).norm(dim=-1).cpu().numpy()
    m = _as_mask(mask, grid.shape)
    values = err.reshape(-1) if m is None else err[m]
    return InverseConsistency(errors_mm=err, mean_mm=float(values.mean()), max_mm=float(values.max()))
