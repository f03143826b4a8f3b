"""Separable filtering of image batches ``(N, C, *S)``: the one home of separable filters in omnireg.

:func:`separable_filter` correlates every spatial axis with an odd-length symmetric 1D kernel, with
zeros outside the image (:attr:`Padding.ZEROS`) or the edge value repeated (:attr:`Padding.BORDER`).
It is used by Gaussian smoothing (:func:`gaussian_blur`: pyramids, feature smoothing) and by the
local similarity measures' windowed sums (LNCC, LC2, MIND; zero padding with :func:`filter_of_ones`
for the window weights).

Scheme: each axis is filtered by shifted in-place additions of the input (``r`` pairs of additions
for a kernel of radius ``r``), several times faster on CPU than a depthwise convolution. With
symmetric kernels and zero padding the operator is self-adjoint, so its backward pass is the same
filter applied to the incoming gradient (and is itself differentiable); border padding is an
ordinary differentiable concatenation of edge slices in front of it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .enums import Padding, as_enum

__all__ = ["filter_of_ones", "gaussian_blur", "gaussian_kernel1d", "separable_filter"]


def gaussian_kernel1d(sigma: float, *, truncate: float = 3.0, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1D Gaussian kernel with standard deviation ``sigma`` (voxels), radius ``ceil(truncate*sigma)``.

    Returns a 1D tensor of odd length (at least 3) summing to 1; ``sigma = 0`` gives ``[0, 1, 0]``.
    """
    if sigma < 0:
        raise ValueError(f"sigma: expected >= 0, got {sigma}")
    radius = max(1, int(math.ceil(truncate * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2) if sigma > 0 else (x == 0).to(dtype)
    return k / k.sum()


def separable_filter(
    x: torch.Tensor, kernels: Sequence[torch.Tensor | None], *, padding: Padding | str = Padding.ZEROS
) -> torch.Tensor:
    """Correlate every channel of ``x`` with a separable symmetric kernel (scheme in the module docstring).

    ``out[i] = sum_s k[r + s] x[i + s]`` along each axis, with ``x`` outside the image taken as 0
    (``padding="zeros"``) or as the nearest edge value (``padding="border"``).

    Args:
        x: ``(N, C, *S)`` with 1 to 3 spatial axes.
        kernels: one odd-length, symmetric 1D kernel per spatial axis (``None``: identity).
        padding: what lies outside the image (:class:`~omnireg.core.enums.Padding`).

    Returns:
        ``(N, C, *S)``, same size, dtype and device.

    Raises:
        ValueError: a wrong number of kernels, a kernel of even length or not symmetric, an unknown padding.

    Example:
        >>> x = torch.tensor([[[1.0, 2.0, 4.0]]])
        >>> k = torch.tensor([0.25, 0.5, 0.25])
        >>> separable_filter(x, [k])
        tensor([[[1.0000, 2.2500, 2.5000]]])
        >>> separable_filter(x, [k], padding="border")
        tensor([[[1.2500, 2.2500, 3.5000]]])
    """
    padding = as_enum(padding, Padding, "padding")
    if len(kernels) != x.ndim - 2:
        raise ValueError(f"kernels: expected {x.ndim - 2} kernels (one per spatial axis), got {len(kernels)}")
    weights = []
    for k in kernels:
        if k is None:
            weights.append(None)
            continue
        values = [float(v) for v in k.detach().reshape(-1).cpu().tolist()]
        if len(values) % 2 != 1 or any(abs(a - b) > 1e-12 * max(1.0, abs(a)) for a, b in zip(values, values[::-1])):
            raise ValueError(f"kernels: expected odd-length symmetric kernels, got {values}")
        weights.append(tuple(values))
    if padding is Padding.ZEROS:
        return _SeparableFilter.apply(x, tuple(weights))
    out = x
    for axis, w in enumerate(weights):
        if w is None:
            continue
        dim, r, n = 2 + axis, len(w) // 2, out.shape[2 + axis]
        shape = list(out.shape)
        shape[dim] = r
        padded = torch.cat([out.narrow(dim, 0, 1).expand(shape), out, out.narrow(dim, n - 1, 1).expand(shape)], dim=dim)
        only = tuple(w if a == axis else None for a in range(len(weights)))
        out = _SeparableFilter.apply(padded, only).narrow(dim, r, n)
    return out


class _SeparableFilter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weights):  # noqa: D102
        ctx.weights = weights
        for axis, w in enumerate(weights):
            if w is not None:
                x = _filter_axis(x, w, 2 + axis)
        return x

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return _SeparableFilter.apply(grad, ctx.weights), None


def _filter_axis(x: torch.Tensor, weights: tuple[float, ...], dim: int) -> torch.Tensor:
    """``out[i] = sum_s w[r + s] x[i + s]`` along ``dim`` with zeros outside (w symmetric)."""
    r = len(weights) // 2
    n = x.shape[dim]
    out = x * weights[r]
    for s in range(1, min(r, n - 1) + 1):
        w = weights[r + s]
        out.narrow(dim, s, n - s).add_(x.narrow(dim, 0, n - s), alpha=w)
        out.narrow(dim, 0, n - s).add_(x.narrow(dim, s, n - s), alpha=w)
    return out


def filter_of_ones(shape: Sequence[int], kernels: Sequence[torch.Tensor | None], like: torch.Tensor) -> torch.Tensor:
    """:func:`separable_filter` (zero padding) of an all-ones image ``(1, 1, *shape)``, as an outer product of 1D filters.

    Returns ``(1, 1, *shape)`` in the dtype and device of ``like``: the sum of the kernel weights that
    fall inside the image at every voxel (1 inside for normalised kernels, less near the borders).
    """
    out = torch.ones((1, 1) + (1,) * len(shape), dtype=like.dtype, device=like.device)
    for axis, (size, k) in enumerate(zip(shape, kernels)):
        ones = torch.ones(1, 1, size, dtype=like.dtype, device=like.device)
        if k is None:
            line = ones
        else:
            line = F.conv1d(ones, k.to(like.dtype).reshape(1, 1, -1), padding=k.numel() // 2)
        view = [1, 1] + [1] * len(shape)
        view[2 + axis] = size
        out = out * line.reshape(view)
    return out


def gaussian_blur(data: torch.Tensor, sigma: float | Sequence[float], *, truncate: float = 3.0) -> torch.Tensor:
    """Gaussian smoothing of ``data`` ``(N, C, *S)`` with ``sigma`` in voxels per tensor axis (0 = none).

    Borders replicate the edge value (:func:`separable_filter` with ``padding="border"``). For a sigma
    in mm divide by the grid's spacing.

    Example:
        >>> gaussian_blur(torch.ones(1, 1, 4, 5), [1.5, 0.0]).allclose(torch.ones(1, 1, 4, 5))
        True
    """
    d = data.ndim - 2
    sig = [float(s) for s in (sigma if isinstance(sigma, Sequence) else [sigma] * d)]
    if len(sig) != d:
        raise ValueError(f"sigma: expected {d} values, got {len(sig)}")
    kernels = [gaussian_kernel1d(s, truncate=truncate, dtype=data.dtype, device=data.device) if s > 0 else None for s in sig]
    return separable_filter(data, kernels, padding=Padding.BORDER)
