"""Separable filters on image batches ``(N, C, *S)``: Gaussian smoothing with sigma per tensor axis."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["gaussian_kernel1d", "gaussian_blur", "separable_conv"]


def gaussian_kernel1d(sigma: float, *, truncate: float = 3.0, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1D Gaussian kernel with standard deviation ``sigma`` (voxels), radius ``ceil(truncate*sigma)``."""
    if sigma < 0:
        raise ValueError(f"sigma: expected >= 0, got {sigma}")
    radius = max(1, int(math.ceil(truncate * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2) if sigma > 0 else (x == 0).to(dtype)
    return k / k.sum()


def separable_conv(data: torch.Tensor, kernels: Sequence[torch.Tensor | None], *, mode: str = "replicate") -> torch.Tensor:
    """Convolve every spatial axis ``a`` of ``data`` ``(N, C, *S)`` with the odd-length 1D ``kernels[a]``.

    ``None`` skips an axis. Boundaries are padded with ``mode`` (``"replicate"``, ``"reflect"`` or
    ``"constant"`` = zeros) so the output keeps the input's shape.
    """
    d = data.ndim - 2
    if len(kernels) != d:
        raise ValueError(f"kernels: expected {d} entries (one per spatial axis), got {len(kernels)}")
    n, c = data.shape[:2]
    out = data
    for axis, k in enumerate(kernels):
        if k is None or k.numel() == 1:
            continue
        r = k.numel() // 2
        moved = out.movedim(2 + axis, -1)
        shape = moved.shape
        flat = moved.reshape(-1, 1, shape[-1])
        pad_mode = mode if (mode != "reflect" or shape[-1] > r) else "replicate"
        flat = F.pad(flat, (r, r), mode=pad_mode) if pad_mode != "constant" else F.pad(flat, (r, r))
        flat = F.conv1d(flat, k.to(dtype=out.dtype, device=out.device).view(1, 1, -1))
        out = flat.reshape(shape).movedim(-1, 2 + axis)
    return out.reshape(n, c, *data.shape[2:])


def gaussian_blur(data: torch.Tensor, sigma: float | Sequence[float], *, truncate: float = 3.0) -> torch.Tensor:
    """Gaussian smoothing of ``data`` ``(N, C, *S)`` with ``sigma`` in voxels per tensor axis (0 = none).

    Borders replicate the edge value. For a sigma in mm divide by the grid's spacing.
    """
    d = data.ndim - 2
    sig = [float(s) for s in (sigma if isinstance(sigma, Sequence) else [sigma] * d)]
    if len(sig) != d:
        raise ValueError(f"sigma: expected {d} values, got {len(sig)}")
    kernels = [gaussian_kernel1d(s, truncate=truncate, dtype=data.dtype, device=data.device) if s > 0 else None for s in sig]
    return separable_conv(data, kernels)
