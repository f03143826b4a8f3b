"""Composition and inversion of transforms.

Convention:
    ``compose(a, b)`` is ``a ∘ b``: ``b`` is applied to the points first, then ``a``, so
    ``compose(a, b)(x) = a(b(x))``. Reading right to left, ``compose(moving_from_mid, mid_from_fixed)``
    maps fixed-space points to moving-space points. Warping by ``compose(a, b)`` equals warping the
    moving image by ``a`` and then warping that result by ``b``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..core.grid import Grid
from .base import Transform, broadcast_batch
from .linear import Affine, LinearTransform

__all__ = ["Composite", "compose", "invert"]


class Composite(Transform):
    """The composition ``t_0 ∘ t_1 ∘ ... ∘ t_{K-1}`` (the last one is applied to points first).

    The composite holds the given modules themselves (not copies), so optimising it optimises them.
    Nested composites are flattened.

    Args:
        transforms: a non-empty sequence of transforms of the same dimension whose batch sizes
            broadcast (equal or 1).

    Raises:
        TypeError: if an element is not a Transform.
        ValueError: if the sequence is empty, dimensions differ or batch sizes do not broadcast.
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        flat: list[Transform] = []
        for i, t in enumerate(transforms):
            if not isinstance(t, Transform):
                raise TypeError(f"transforms[{i}]: expected a Transform, got {type(t).__name__}")
            flat.extend(t.transforms if isinstance(t, Composite) else [t])
        if not flat:
            raise ValueError("transforms: expected at least one transform, got none")
        ndims = {t.ndim for t in flat}
        if len(ndims) != 1:
            raise ValueError(f"transforms: expected transforms of one dimension, got dimensions {sorted(ndims)}")
        n = 1
        for t in flat:
            n = broadcast_batch(n, t.batch_size, "transforms")
        super().__init__(flat[0].ndim, n)
        self.transforms = nn.ModuleList(flat)

    @property
    def is_linear(self) -> bool:  # type: ignore[override]
        """True if every member is linear."""
        return all(t.is_linear for t in self.transforms)

    def matrix(self) -> torch.Tensor:
        """``M_0 @ M_1 @ ... @ M_{K-1}`` ``(N, D+1, D+1)`` when every member is linear."""
        if not self.is_linear:
            raise NotImplementedError("Composite is not linear: it has no matrix")
        m = self.transforms[0].matrix()
        for t in list(self.transforms)[1:]:
            m = m @ t.matrix().to(m.dtype)
        return m

    def _transform(self, points: torch.Tensor) -> torch.Tensor:
        for t in reversed(self.transforms):
            points = t._transform(points)
        return points

    def transform_grid(self, grid: Grid, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``T(x)`` on ``grid``; the first-applied member uses its own whole-grid evaluation."""
        self._check_grid(grid)
        members = list(self.transforms)
        y = members[-1].transform_grid(grid, dtype=dtype)
        for t in reversed(members[:-1]):
            y = t(y)
        return y

    def inverse(self, **options) -> "Composite":
        """``(t_0 ∘ ... ∘ t_{K-1})^-1 = t_{K-1}^-1 ∘ ... ∘ t_0^-1``; ``options`` go to non-linear members."""
        return Composite([t.inverse() if t.is_linear else t.inverse(**options) for t in reversed(self.transforms)])

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, index: int) -> Transform:
        return self.transforms[index]


def compose(*transforms: Transform) -> Transform:
    """``compose(a, b, c) = a ∘ b ∘ c``: ``c`` is applied to points first.

    If every transform is linear the result is one :class:`~omnireg.transforms.Affine` (a copy holding
    the product matrix, not linked to the inputs; its center is that of the first-applied transform);
    otherwise a :class:`Composite` holding the transforms themselves. One transform is returned as is.

    Raises:
        TypeError, ValueError: as :class:`Composite`.

    Example:
        >>> import torch
        >>> from omnireg.transforms import Similarity, Translation
        >>> a, b = Translation(2, translation=[1.0, 0.0]), Similarity(2, scale=2.0)
        >>> compose(a, b)(torch.tensor([[[1.0, 1.0]]])).tolist()  # a(b(x)) = 2 x + (1, 0)
        [[[3.0, 2.0]]]
    """
    if len(transforms) == 1 and isinstance(transforms[0], Transform):
        return transforms[0]
    comp = Composite(transforms)
    if not comp.is_linear:
        return comp
    with torch.no_grad():
        m = comp.matrix().detach()
        last = comp.transforms[-1]
        center = last.center.detach().to(m.dtype) if isinstance(last, LinearTransform) else None
        return Affine.from_matrix(m, center=center)


def invert(transform: Transform, **options) -> Transform:
    """``transform.inverse(**options)``: the map from moving-space to fixed-space world points."""
    if not isinstance(transform, Transform):
        raise TypeError(f"transform: expected a Transform, got {type(transform).__name__}")
    return transform.inverse(**options)
