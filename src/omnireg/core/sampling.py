"""The one sampling primitive of omnireg (the ONLY caller of ``torch.nn.functional.grid_sample``).

Convention:
    Points are given in the **voxel** space of the sampled data, components in tensor-axis order
    ``(i, j, k)`` (0 = centre of the first voxel). They are converted to normalized ``[-1, 1]``
    coordinates with ``align_corners=True`` and reversed to grid_sample's ``(x, y, z)`` order in
    :func:`_to_grid_sample_order`, the single place where that reversal happens.

Interpolation: nearest, linear, and cubic B-spline (the data are prefiltered so that the spline
interpolates the samples, as ``scipy.ndimage.map_coordinates(order=3, mode='mirror')`` inside the image).
Integer (label) data are sampled with nearest neighbour only, and the result keeps the integer dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .enums import Interp, Padding, as_enum
from .image import Image

__all__ = ["affine_points", "sample", "sample_world", "bspline_prefilter", "evaluate_bspline"]

_POLE = math.sqrt(3.0) - 2.0


def _to_grid_sample_order(points: torch.Tensor) -> torch.Tensor:
    """Reverse the last axis: tensor-axis order (i, j, k) -> grid_sample's (x, y, z) = (k, j, i)."""
    return points.flip(-1)


def _normalize(points: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Voxel -> normalized coordinates (align_corners=True); scale 1 on axes of size 1."""
    scale = torch.tensor([2.0 / (s - 1) if s > 1 else 1.0 for s in shape], dtype=points.dtype, device=points.device)
    shift = torch.tensor([-1.0 if s > 1 else 0.0 for s in shape], dtype=points.dtype, device=points.device)
    return points * scale + shift


def _check(data: torch.Tensor, points: torch.Tensor) -> tuple[int, int]:
    if not isinstance(data, torch.Tensor) or not isinstance(points, torch.Tensor):
        raise TypeError("data and points: expected torch tensors")
    d = data.ndim - 2
    if d not in (2, 3) and d != 1:
        raise ValueError(f"data: expected shape (N, C, *S) with 1 to 3 spatial axes, got {tuple(data.shape)}")
    if points.shape[-1] != d or points.ndim != d + 2:
        raise ValueError(
            f"points: expected shape (N, *S_out, {d}) with {d} output axes for {d}D data, got {tuple(points.shape)}"
        )
    n = data.shape[0]
    if points.shape[0] != n and n != 1 and points.shape[0] != 1:
        raise ValueError(f"points: batch size {points.shape[0]} does not match data batch size {n}")
    return d, max(n, points.shape[0])


def _grid_sample(data: torch.Tensor, points: torch.Tensor, mode: str, padding: Padding) -> torch.Tensor:
    """grid_sample on voxel-space points (N, *S_out, D) with broadcasting of batch 1."""
    d, n = _check(data, points)
    if data.shape[0] != n:
        data = data.expand(n, *data.shape[1:])
    if points.shape[0] != n:
        points = points.expand(n, *points.shape[1:])
    shape = tuple(data.shape[2:])
    if d == 1:  # lift to 2D: add a singleton axis in front
        data = data.unsqueeze(2)
        points = torch.cat([torch.zeros_like(points), points], dim=-1).unsqueeze(1)
        out = _grid_sample(data, points, mode, padding)
        return out.squeeze(2)
    norm = _to_grid_sample_order(_normalize(points, shape))
    out = F.grid_sample(data, norm, mode=mode, padding_mode=padding.value, align_corners=True)
    if padding is Padding.ZEROS and any(s == 1 for s in shape):
        # grid_sample treats every point as inside a size-1 axis; give such axes a linear/nearest falloff
        w = torch.ones_like(points[..., 0])
        for a, s in enumerate(shape):
            if s == 1:
                dist = points[..., a].abs()
                w = w * ((dist < 0.5).to(w.dtype) if mode == "nearest" else (1 - dist).clamp(min=0))
        out = out * w.unsqueeze(1)
    return out


def bspline_prefilter(data: torch.Tensor) -> torch.Tensor:
    """Cubic B-spline coefficients of ``data`` ``(N, C, *S)`` (mirror boundary), differentiable.

    The exact inverse filter ``h[k] = sqrt(3) * z^|k|`` (``z = sqrt(3) - 2``) is applied separably,
    truncated where ``|z|^k`` falls below float64 precision (k <= 28).
    """
    d = data.ndim - 2
    radius = 28
    k = torch.arange(-radius, radius + 1, dtype=data.dtype, device=data.device)
    kernel = math.sqrt(3.0) * torch.full_like(k, _POLE) ** k.abs()
    out = data
    for axis in range(d):
        size = out.shape[2 + axis]
        if size == 1:
            continue
        padded = _mirror_pad_axis(out, axis, radius)
        moved = padded.movedim(2 + axis, -1)
        flat = moved.reshape(-1, 1, moved.shape[-1])
        filt = F.conv1d(flat, kernel.view(1, 1, -1))
        out = filt.reshape(*moved.shape[:-1], size).movedim(-1, 2 + axis)
    return out


def _mirror_pad_axis(data: torch.Tensor, axis: int, pad: int) -> torch.Tensor:
    """Whole-sample mirror padding of spatial ``axis`` by ``pad`` on both sides (any size)."""
    size = data.shape[2 + axis]
    idx = torch.arange(-pad, size + pad, device=data.device)
    if size == 1:
        idx = torch.zeros_like(idx)
    else:
        period = 2 * (size - 1)
        idx = torch.remainder(idx, period)
        idx = torch.where(idx >= size, period - idx, idx)
    return data.index_select(2 + axis, idx)


def _mirror_pad(data: torch.Tensor, pad: int) -> torch.Tensor:
    """Whole-sample mirror padding of every spatial axis by ``pad``."""
    for axis in range(data.ndim - 2):
        data = _mirror_pad_axis(data, axis, pad)
    return data


def evaluate_bspline(coeffs: torch.Tensor, points: torch.Tensor, *, padding: Padding | str = Padding.ZEROS) -> torch.Tensor:
    """Cubic B-spline with coefficients ``coeffs`` ``(N, C, *K)`` (not prefiltered here) at voxel points
    ``(N, *S_out, D)`` of the coefficient grid.

    Each axis' four weights are folded into two linear lookups (``g0 = w0 + w1`` at ``base - 1 + w1/g0``,
    ``g1 = w2 + w3`` at ``base + 1 + w3/g1``), so ``2^D`` linear samples give the exact spline; ``g0, g1 >=
    1/6`` keeps the division safe. ``padding`` extends the coefficients: ``zeros`` (zero beyond the grid)
    or ``border``.
    """
    padding = as_enum(padding, Padding, "padding")
    d = points.shape[-1]
    base = torch.floor(points)
    t = points - base
    t2, t3 = t * t, t * t * t
    w0 = (1 - t) ** 3 / 6
    w1 = (3 * t3 - 6 * t2 + 4) / 6
    w2 = (-3 * t3 + 3 * t2 + 3 * t + 1) / 6
    w3 = t3 / 6
    g0, g1 = w0 + w1, w2 + w3
    h0 = base - 1 + w1 / g0
    h1 = base + 1 + w3 / g1
    out = None
    for corner in range(2**d):
        bits = [(corner >> a) & 1 for a in range(d)]
        pos = torch.stack([h1[..., a] if b else h0[..., a] for a, b in enumerate(bits)], dim=-1)
        weight = torch.ones_like(points[..., 0])
        for a, b in enumerate(bits):
            weight = weight * (g1[..., a] if b else g0[..., a])
        val = _grid_sample(coeffs, pos, "bilinear", padding) * weight.unsqueeze(1)
        out = val if out is None else out + val
    return out


def _sample_cubic(coeffs: torch.Tensor, points: torch.Tensor, padding: Padding) -> torch.Tensor:
    """Cubic B-spline evaluation as 2^D linear lookups (weights folded into fractional offsets).

    Coefficients are mirror-extended by 2, so inside the image the result equals
    ``scipy.ndimage.map_coordinates(order=3, mode='mirror')``. Outside, ``border`` clamps the points
    to the image and ``zeros`` returns 0 beyond half a voxel from the edge centres (as ITK's
    ``IsInsideBuffer``).
    """
    shape = coeffs.shape[2:]
    upper = torch.tensor([s - 1 for s in shape], dtype=points.dtype, device=points.device)
    inside = None
    if padding is Padding.ZEROS:
        inside = ((points >= -0.5) & (points <= upper + 0.5)).all(dim=-1)
    points = torch.minimum(torch.maximum(points, torch.zeros_like(upper)), upper)
    out = evaluate_bspline(_mirror_pad(coeffs, 2), points + 2, padding=Padding.BORDER)
    if inside is not None:
        out = out * inside.unsqueeze(1).to(out.dtype)
    return out


def sample(
    data: torch.Tensor,
    points: torch.Tensor,
    *,
    interp: Interp | str = Interp.LINEAR,
    padding: Padding | str = Padding.ZEROS,
) -> torch.Tensor:
    """Sample ``data`` at continuous voxel positions (pull).

    ``out[n, c, p] = data[n, c](points[n, p])`` for every output position p.

    Args:
        data: ``(N, C, *S)`` image batch; N may be 1 and is then broadcast over the points' batch.
        points: ``(N, *S_out, D)`` positions in the **voxel** space of ``data`` (tensor-axis order,
            0 = first voxel centre); ``S_out`` may be any D-dimensional shape.
        interp: ``"nearest"``, ``"linear"`` or ``"cubic"`` (cubic B-spline). Integer data are always
            sampled with nearest neighbour and keep their dtype.
        padding: ``"zeros"`` or ``"border"`` for points outside the image.

    Returns:
        ``(N, C, *S_out)`` in the dtype of ``data``.

    Raises:
        ValueError: on shape mismatches or unknown options.
    """
    interp = as_enum(interp, Interp, "interp")
    padding = as_enum(padding, Padding, "padding")
    _check(data, points)
    if not data.dtype.is_floating_point:
        work = torch.float64 if data.dtype in (torch.int32, torch.int64) else torch.float32
        out = _grid_sample(data.to(work), points.to(work), "nearest", padding)
        return torch.round(out).to(data.dtype)
    if points.dtype != data.dtype:
        points = points.to(data.dtype)
    if interp is Interp.NEAREST:
        return _grid_sample(data, points, "nearest", padding)
    if interp is Interp.LINEAR:
        return _grid_sample(data, points, "bilinear", padding)
    return _sample_cubic(bspline_prefilter(data), points, padding)


def affine_points(matrix: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """``matrix @ [i, 1]`` for every index i of ``shape``: ``(N, *shape, D)``, built by broadcasting
    (no meshgrid, no product over all voxels; integer indices stay exact)."""
    d = len(shape)
    n = matrix.shape[0]
    m = matrix.to(dtype)
    out = m[:, :d, d].reshape(n, *([1] * d), d)
    for a, size in enumerate(shape):
        i = torch.arange(size, dtype=dtype, device=m.device)
        term = i[None, :, None] * m[:, None, :d, a]
        view = [n] + [1] * d + [d]
        view[1 + a] = size
        out = out + term.reshape(view)
    return out


def sample_world(
    image: Image,
    points: torch.Tensor,
    *,
    interp: Interp | str = Interp.LINEAR,
    padding: Padding | str = Padding.ZEROS,
) -> torch.Tensor:
    """Sample an :class:`Image` at world (RAS mm) points ``(N, *S_out, D)``; returns ``(N, C, *S_out)``."""
    vox = image.grid.transform_points(points, "world", "voxel")
    return sample(image.batch(), vox, interp=interp, padding=padding)
