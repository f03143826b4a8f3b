"""The :class:`Transform` base class: a batched, differentiable map from fixed to moving world space.

Convention (pinned by ``tests/conventions/test_transform_conventions.py``):

* A transform maps **fixed-space world points** (RAS mm) to **moving-space world points** (RAS mm).
  Warping is pull: ``warped(x) = moving(T(x))`` for every voxel centre ``x`` of the fixed grid, so the
  same transform moves landmarks of the fixed image onto the moving image.
* Points are ``(N, *P, D)``: a batch axis, any number of point axes, and the D world components
  (R, A, S in 3D; R, A in 2D). A batch of 1 (in the points or in the transform) is broadcast.
* A world displacement ``u(x) = T(x) - x`` is a vector in world mm, so its components are the
  **world** axes (R, A, S), not the tensor axes of a grid. For a grid with identity direction they
  coincide with the tensor axes (i, j, k).
"""

from __future__ import annotations

import copy
import logging
from typing import Iterator

import torch
from torch import nn

from ..core.grid import Grid

__all__ = ["Transform", "check_points", "check_single_transform", "broadcast_batch"]

logger = logging.getLogger(__name__)


def check_points(points: object, ndim: int, name: str = "points") -> torch.Tensor:
    """Validate a point tensor ``(N, *P, D)`` with at least one point axis and ``D == ndim``.

    Raises:
        TypeError: if ``points`` is not a floating point tensor.
        ValueError: if its shape is not ``(N, *P, ndim)``.
    """
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (N, *P, {ndim}), got {type(points).__name__}")
    if not points.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a floating point tensor, got dtype {points.dtype}")
    if points.ndim < 3 or points.shape[-1] != ndim:
        raise ValueError(
            f"{name}: expected shape (N, *P, {ndim}) (batch, point axes, {ndim} world components), "
            f"got {tuple(points.shape)}"
        )
    return points


def broadcast_batch(a: int, b: int, what: str) -> int:
    """The common batch size of two batch sizes, where 1 broadcasts; ``ValueError`` otherwise."""
    if a == b or b == 1:
        return a
    if a == 1:
        return b
    raise ValueError(f"{what}: batch sizes {a} and {b} do not broadcast (expected equal sizes or 1)")


class Transform(nn.Module):
    """Base class of every spatial transform: fixed-space world points -> moving-space world points.

    Subclasses implement :meth:`_transform` on flattened points ``(N, P, D)``; linear ones also
    :meth:`matrix`. Every transform is an ``nn.Module`` whose parameters (``self.parameters()``) can be
    handed to a torch optimiser; its ``forward`` has no hidden state.

    Args:
        ndim: number of spatial dimensions D (2 or 3).
        batch_size: number of transforms N held in the batch.

    Raises:
        ValueError: on an unsupported ``ndim`` or a non-positive ``batch_size``.
    """

    #: True for transforms of the form ``T(x) = A x + b`` (they provide :meth:`matrix`).
    is_linear: bool = False

    def __init__(self, ndim: int, batch_size: int) -> None:
        super().__init__()
        if not isinstance(ndim, int) or ndim not in (2, 3):
            raise ValueError(f"ndim: expected 2 or 3, got {ndim!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        self._ndim = ndim
        self._batch_size = batch_size

    # ------------------------------------------------------------------ properties
    @property
    def ndim(self) -> int:
        """Number of spatial dimensions D."""
        return self._ndim

    @property
    def batch_size(self) -> int:
        """Number of transforms N in the batch."""
        return self._batch_size

    def _tensors(self) -> Iterator[torch.Tensor]:
        yield from self.parameters()
        yield from self.buffers()

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the transform's parameters (float32 when it has none)."""
        for t in self._tensors():
            if t.dtype.is_floating_point:
                return t.dtype
        return torch.float32

    @property
    def device(self) -> torch.device:
        """Device of the transform's parameters (CPU when it has none)."""
        for t in self._tensors():
            return t.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ mapping
    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """Map fixed-space world points to moving-space world points.

        Args:
            points: ``(N, *P, D)`` world (RAS mm) points in the fixed space; N is the transform's
                batch size or 1 (broadcast either way).

        Returns:
            ``(max(N, batch_size), *P, D)`` world (RAS mm) points in the moving space, in the dtype and
            on the device of ``points``.

        Raises:
            TypeError, ValueError: on a malformed ``points`` tensor or mismatching batch sizes.
        """
        points = check_points(points, self.ndim)
        n = broadcast_batch(points.shape[0], self.batch_size, "points and transform")
        flat = points.reshape(points.shape[0], -1, self.ndim)
        out = self._transform(flat)
        return out.reshape(n, *points.shape[1:])

    def _transform(self, points: torch.Tensor) -> torch.Tensor:
        """Map flattened points ``(N_p, P, D)`` (batch broadcastable with the transform)."""
        raise NotImplementedError

    def transform_grid(self, grid: Grid, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``T(x)`` for every voxel centre ``x`` of ``grid``: moving-space world points ``(N, *S, D)``.

        Equivalent to ``self(grid.points("world")[None])``; subclasses override it with faster or
        more exact whole-grid evaluations.

        Args:
            grid: a fixed-space grid of the same dimension.
            dtype: dtype of the result (default: the transform's dtype).
        """
        self._check_grid(grid)
        dtype = dtype or self.dtype
        x = grid.points("world", dtype=dtype, device=self.device).unsqueeze(0)
        return self(x)

    def displacement(self, grid: Grid, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """World displacement ``u(x) = T(x) - x`` at the voxel centres of ``grid``, in mm.

        The vector components are **world** axes (R, A, S in 3D), since the vector lives in world
        space; for a grid with identity direction they coincide with the tensor axes (i, j, k). Use
        :meth:`omnireg.transforms.DisplacementField.to_voxel_displacement` for tensor-axis voxel units.

        Args:
            grid: a fixed-space grid of the same dimension.
            dtype: dtype of the result (default: the transform's dtype).

        Returns:
            ``(N, D, *S)`` world displacement in mm.
        """
        self._check_grid(grid)
        dtype = dtype or self.dtype
        x = grid.points("world", dtype=dtype, device=self.device).unsqueeze(0)
        return (self.transform_grid(grid, dtype=dtype) - x).movedim(-1, 1)

    def _check_grid(self, grid: Grid, name: str = "grid") -> None:
        if not isinstance(grid, Grid):
            raise TypeError(f"{name}: expected a Grid, got {type(grid).__name__}")
        if grid.ndim != self.ndim:
            raise ValueError(f"{name}: expected a {self.ndim}D grid for a {self.ndim}D transform, got {grid.ndim}D")

    # ------------------------------------------------------------------ linear part and inverse
    def matrix(self) -> torch.Tensor:
        """Homogeneous world matrix ``moving_from_fixed`` ``(N, D+1, D+1)`` of a linear transform.

        Raises:
            NotImplementedError: for a non-linear transform.
        """
        raise NotImplementedError(f"{type(self).__name__} is not linear: it has no matrix")

    def inverse(self, **options) -> "Transform":
        """The inverse transform (moving-space points -> fixed-space points) as a new transform.

        The result holds copies of this transform's current values (it is not linked to these
        parameters); options are specific to the subclass.
        """
        raise NotImplementedError(f"{type(self).__name__} has no inverse")

    # ------------------------------------------------------------------ copies
    def clone(self) -> "Transform":
        """A deep copy (parameters copied; tensors kept in an autograd graph are cloned)."""
        memo: dict[int, object] = {}
        for t in self._tensors():
            if not t.is_leaf:
                memo[id(t)] = t.clone()
        return copy.deepcopy(self, memo)

    def detach(self) -> "Transform":
        """A copy cut from every autograd graph: parameters stay parameters but do not require grad."""
        memo: dict[int, object] = {}
        for t in self._tensors():
            if not t.is_leaf:
                memo[id(t)] = t.detach().clone()
        out = copy.deepcopy(self, memo)
        for p in out.parameters():
            p.requires_grad_(False)
        return out

    # ------------------------------------------------------------------ helpers for subclasses
    def _register(self, name: str, value: torch.Tensor, learnable: bool) -> None:
        """Register ``value`` as an ``nn.Parameter`` (a copy) or, if not learnable, as a buffer kept as is.

        A buffer keeps its autograd graph, so a transform built from a network output stays
        differentiable with respect to the network.
        """
        if learnable:
            self.register_parameter(name, nn.Parameter(value.detach().clone()))
        else:
            self.register_buffer(name, value)

    def extra_repr(self) -> str:
        return f"ndim={self.ndim}, batch_size={self.batch_size}"


def check_single_transform(transform: object, ndim: int, name: str = "transform") -> "Transform":
    """``transform`` checked to be one :class:`Transform` (batch size 1) of dimension ``ndim``.

    Raises:
        TypeError: not a Transform.
        ValueError: another dimension, or a batch size above 1 (the messages name ``name``).
    """
    if not isinstance(transform, Transform):
        raise TypeError(f"{name}: expected a Transform, got {type(transform).__name__}")
    if transform.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}D transform for {ndim}D data, got {transform.ndim}D")
    if transform.batch_size != 1:
        raise ValueError(f"{name}: expected a transform of batch size 1, got {transform.batch_size}")
    return transform
