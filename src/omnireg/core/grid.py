"""Sampling grids and the three coordinate spaces.

Convention (pinned by ``tests/conventions``):

* **voxel** space: continuous index ``(i, j, k)`` in tensor-axis order; ``0`` is the centre of the
  first voxel, ``S - 1`` the centre of the last one.
* **normalized** space: ``[-1, 1]`` per axis with ``align_corners=True``, i.e. ``-1`` and ``+1`` are the
  centres of the first and last voxel. Components stay in tensor-axis order (i, j, k); the reversal
  to ``grid_sample``'s (x, y, z) happens only in :mod:`omnireg.core.sampling`. For an axis of size 1
  the scale is 1 (``n = i``), so the mapping stays invertible.
* **world** space: millimetres, RAS+ (as NIfTI), ``world = origin + direction @ diag(spacing) @ voxel``.
  ``direction`` holds in its columns the unit world direction of each tensor axis.

A :class:`Grid` is immutable; its matrices are float64 NumPy arrays of shape ``(D + 1, D + 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .enums import Space, as_enum

__all__ = ["Grid"]

_ORIENT_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))


def _as_tuple(values: Sequence[float] | np.ndarray, n: int, name: str, cast=float) -> tuple:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size != n:
        raise ValueError(f"{name}: expected {n} values, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: values must be finite, got {arr.tolist()}")
    return tuple(cast(v) for v in arr)


@dataclass(frozen=True, eq=False)
class Grid:
    """A regular sampling grid placed in world space.

    Args:
        shape: spatial size per tensor axis ``(S_0, ..., S_{D-1})``.
        spacing: voxel size in mm per tensor axis (default 1).
        origin: world (RAS, mm) position of the centre of voxel ``(0, ..., 0)`` (default 0).
        direction: ``(D, D)`` matrix whose column ``a`` is the unit world direction of tensor
            axis ``a`` (default identity). Must be orthonormal up to 1e-4.

    Example:
        >>> g = Grid((4, 5), spacing=(2.0, 1.0), origin=(10.0, 0.0))
        >>> g.world_from_voxel()[:2, 2].tolist()
        [10.0, 0.0]
        >>> g.transform_points([[1.0, 1.0]], "voxel", "world").tolist()
        [[12.0, 1.0]]
    """

    shape: tuple[int, ...]
    spacing: tuple[float, ...] = field(default=None)  # type: ignore[assignment]
    origin: tuple[float, ...] = field(default=None)  # type: ignore[assignment]
    direction: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if len(shape) not in (1, 2, 3) or any(s < 1 for s in shape):
            raise ValueError(f"shape: expected 1 to 3 positive sizes, got {self.shape!r}")
        d = len(shape)
        spacing = (1.0,) * d if self.spacing is None else _as_tuple(self.spacing, d, "spacing")
        if any(s <= 0 for s in spacing):
            raise ValueError(f"spacing: expected positive values, got {spacing}")
        origin = (0.0,) * d if self.origin is None else _as_tuple(self.origin, d, "origin")
        direction = np.eye(d) if self.direction is None else np.array(self.direction, dtype=np.float64)
        if direction.shape != (d, d):
            raise ValueError(f"direction: expected shape ({d}, {d}), got {direction.shape}")
        if not np.allclose(direction.T @ direction, np.eye(d), atol=1e-4):
            raise ValueError("direction: expected an orthonormal matrix (unit, orthogonal columns)")
        direction.setflags(write=False)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_affine(cls, shape: Sequence[int], world_from_voxel: np.ndarray) -> "Grid":
        """Grid from a ``(D+1, D+1)`` world-from-voxel matrix (e.g. a NIfTI affine in RAS).

        Shear is not representable: the columns of the linear part must be orthogonal.
        """
        m = np.asarray(world_from_voxel, dtype=np.float64)
        d = len(shape)
        if m.shape != (d + 1, d + 1):
            raise ValueError(f"world_from_voxel: expected shape ({d + 1}, {d + 1}), got {m.shape}")
        lin = m[:d, :d]
        spacing = np.linalg.norm(lin, axis=0)
        if np.any(spacing <= 0):
            raise ValueError("world_from_voxel: a column of the linear part is zero")
        return cls(tuple(shape), tuple(spacing), tuple(m[:d, d]), lin / spacing)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions D."""
        return len(self.shape)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))

    # ------------------------------------------------------------------ matrices
    def world_from_voxel(self) -> np.ndarray:
        """``(D+1, D+1)`` float64 matrix mapping voxel indices to world RAS mm."""
        d = self.ndim
        m = np.eye(d + 1)
        m[:d, :d] = self.direction * np.asarray(self.spacing)[None, :]
        m[:d, d] = self.origin
        return m

    def voxel_from_world(self) -> np.ndarray:
        """Inverse of :meth:`world_from_voxel`."""
        d = self.ndim
        m = np.eye(d + 1)
        inv_lin = (self.direction / np.asarray(self.spacing)[None, :]).T  # R^-1 = (R diag(s))^-1 = diag(1/s) R^T
        m[:d, :d] = inv_lin
        m[:d, d] = -inv_lin @ np.asarray(self.origin)
        return m

    def normalized_from_voxel(self) -> np.ndarray:
        """Voxel index -> ``[-1, 1]`` (align_corners=True; scale 1 for an axis of size 1)."""
        d = self.ndim
        m = np.eye(d + 1)
        for a, s in enumerate(self.shape):
            if s > 1:
                m[a, a] = 2.0 / (s - 1)
                m[a, d] = -1.0
        return m

    def voxel_from_normalized(self) -> np.ndarray:
        """Inverse of :meth:`normalized_from_voxel`."""
        return np.linalg.inv(self.normalized_from_voxel())

    def matrix(self, to: Space | str, frm: Space | str) -> np.ndarray:
        """``(D+1, D+1)`` float64 matrix mapping points from space ``frm`` to space ``to``."""
        to = as_enum(to, Space, "to")
        frm = as_enum(frm, Space, "frm")
        to_voxel = {
            Space.VOXEL: np.eye(self.ndim + 1),
            Space.WORLD: self.voxel_from_world(),
            Space.NORMALIZED: self.voxel_from_normalized(),
        }[frm]
        from_voxel = {
            Space.VOXEL: np.eye(self.ndim + 1),
            Space.WORLD: self.world_from_voxel(),
            Space.NORMALIZED: self.normalized_from_voxel(),
        }[to]
        return from_voxel @ to_voxel

    def transform_points(self, points: Any, frm: Space | str, to: Space | str) -> Any:
        """Map points ``(..., D)`` between spaces. Tensors stay tensors (dtype/device kept)."""
        m = self.matrix(to, frm)
        d = self.ndim
        if isinstance(points, torch.Tensor):
            mt = torch.as_tensor(m, dtype=points.dtype, device=points.device)
            return points @ mt[:d, :d].T + mt[:d, d]
        p = np.asarray(points, dtype=np.float64)
        return p @ m[:d, :d].T + m[:d, d]

    # ------------------------------------------------------------------ coordinates
    def points(
        self,
        space: Space | str = Space.WORLD,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Coordinates of every voxel centre, shape ``(*S, D)``, components in tensor-axis order."""
        axes = [torch.arange(s, dtype=torch.float64, device=device) for s in self.shape]
        vox = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
        out = self.transform_points(vox, Space.VOXEL, space)
        return out.to(dtype)

    # ------------------------------------------------------------------ derived grids
    def with_spacing(self, spacing: Sequence[float] | float) -> "Grid":
        """A grid covering the same physical extent (voxel edges) with another spacing.

        The new shape is ``max(1, round(S * old / new))`` per axis; the centre of the field of view and
        the direction are kept, so image pyramids stay centred in world space.
        """
        d = self.ndim
        new = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (d,))
        old = np.asarray(self.spacing)
        shape = np.maximum(1, np.round(np.asarray(self.shape) * old / new)).astype(int)
        # keep the world centre of the field of view
        centre_vox_old = (np.asarray(self.shape) - 1) / 2.0
        centre_world = self.transform_points(centre_vox_old, Space.VOXEL, Space.WORLD)
        centre_vox_new = (shape - 1) / 2.0
        origin = centre_world - self.direction @ (new * centre_vox_new)
        return Grid(tuple(shape.tolist()), tuple(new.tolist()), tuple(origin.tolist()), self.direction)

    def downsample(self, factor: float | Sequence[float]) -> "Grid":
        """:meth:`with_spacing` with the spacing multiplied by ``factor``."""
        return self.with_spacing(np.asarray(self.spacing) * np.asarray(factor, dtype=np.float64))

    def padded(self, pad_mm: float | Sequence[float]) -> "Grid":
        """The grid grown by whole voxels on every side, at least ``pad_mm`` per axis (``ceil(pad / spacing)``
        voxels); spacing, direction and the field of view's centre are kept, existing voxels keep their
        world positions."""
        spacing = np.asarray(self.spacing)
        pad = np.broadcast_to(np.asarray(pad_mm, dtype=np.float64), (self.ndim,))
        if (pad < 0).any() or not np.isfinite(pad).all():
            raise ValueError(f"pad_mm: expected finite values >= 0, got {pad_mm!r}")
        extra = np.ceil(pad / spacing).astype(int)
        origin = self.transform_points(-extra.astype(np.float64), Space.VOXEL, Space.WORLD)
        return Grid(tuple((np.asarray(self.shape) + 2 * extra).tolist()), self.spacing, tuple(origin.tolist()), self.direction)

    # ------------------------------------------------------------------ comparison and info
    def same_as(self, other: "Grid", *, atol: float = 1e-5) -> bool:
        """Same shape and (within ``atol``) spacing, origin and direction."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Grid) and self.same_as(other, atol=0.0)

    def __hash__(self) -> int:
        return hash((self.shape, self.spacing, self.origin, self.direction.tobytes()))

    def orientation_code(self) -> str:
        """Axis codes in RAS letters, e.g. ``"RAS"`` or ``"LPS"`` (3D); ``"RA"`` style in 2D.

        Each letter names the world direction towards which the tensor axis increases
        (the dominant component of the direction column).
        """
        letters = []
        for a in range(self.ndim):
            col = self.direction[:, a]
            w = int(np.argmax(np.abs(col)))
            letters.append(_ORIENT_LETTERS[w][1 if col[w] > 0 else 0] if w < 3 else "?")
        return "".join(letters)

    def extent_mm(self) -> tuple[float, ...]:
        """Physical size of the grid along each tensor axis (voxel edges to voxel edges)."""
        return tuple(float(s * sp) for s, sp in zip(self.shape, self.spacing))

    def to_dict(self) -> dict:
        """JSON-serialisable description."""
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": self.direction.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        return cls(tuple(d["shape"]), tuple(d["spacing"]), tuple(d["origin"]), np.asarray(d["direction"]))

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:g}" for s in self.spacing)
        org = ", ".join(f"{o:.3g}" for o in self.origin)
        return f"Grid(shape={self.shape}, spacing=({sp}), origin=({org}), orientation={self.orientation_code()})"
