"""An image: a tensor of shape ``(C, *S)`` together with the :class:`~omnireg.core.grid.Grid` it lives on."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from .grid import Grid

__all__ = ["Image"]


@dataclass(frozen=True, eq=False)
class Image:
    """Image data on a world-space grid.

    Args:
        data: tensor ``(C, *S)``: channels first, then the spatial axes in the grid's tensor-axis order.
            Integer dtypes mark label maps (resampled with nearest neighbour, dtype kept).
        grid: the grid of the spatial axes; ``grid.shape == data.shape[1:]``.

    Shape:
        ``data``: ``(C, *S)``; :meth:`batch` gives ``(1, C, *S)``.
    """

    data: torch.Tensor
    grid: Grid

    def __post_init__(self) -> None:
        if not isinstance(self.data, torch.Tensor):
            object.__setattr__(self, "data", torch.as_tensor(np.asarray(self.data)))
        if not isinstance(self.grid, Grid):
            raise TypeError(f"grid: expected a Grid, got {type(self.grid).__name__}")
        if tuple(self.data.shape[1:]) != self.grid.shape:
            raise ValueError(
                f"data: expected shape (C, {', '.join(map(str, self.grid.shape))}) to match the grid, "
                f"got {tuple(self.data.shape)}"
            )

    @classmethod
    def from_array(cls, array: np.ndarray | torch.Tensor, grid: Grid | None = None, *, channels_first: bool = False) -> "Image":
        """Image from a spatial array ``(*S)`` (one channel) or with channels ``(*S, C)`` / ``(C, *S)``."""
        t = torch.as_tensor(np.asarray(array)) if not isinstance(array, torch.Tensor) else array
        if grid is None:
            if channels_first:
                raise ValueError("grid: required when channels_first=True")
            grid = Grid(tuple(t.shape))
        d = grid.ndim
        if t.ndim == d:
            t = t.unsqueeze(0)
        elif t.ndim == d + 1 and not channels_first:
            t = t.movedim(-1, 0)
        return cls(t.contiguous(), grid)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions."""
        return self.grid.ndim

    @property
    def channels(self) -> int:
        return int(self.data.shape[0])

    @property
    def is_label(self) -> bool:
        """True for integer (or bool) data: a label map."""
        return not (self.data.dtype.is_floating_point or self.data.dtype.is_complex)

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    @property
    def device(self) -> torch.device:
        return self.data.device

    def batch(self) -> torch.Tensor:
        """The data with a batch axis: ``(1, C, *S)``."""
        return self.data.unsqueeze(0)

    def with_data(self, data: torch.Tensor) -> "Image":
        """Same grid, other data (``(C, *S)``)."""
        return replace(self, data=data)

    def to(self, *args, **kwargs) -> "Image":
        """``torch.Tensor.to`` applied to the data."""
        return replace(self, data=self.data.to(*args, **kwargs))

    def numpy(self) -> np.ndarray:
        """Data as NumPy ``(C, *S)``."""
        return self.data.detach().cpu().numpy()

    def __repr__(self) -> str:
        return f"Image(channels={self.channels}, dtype={self.dtype}, {self.grid!r})"
