"""Shared helpers of the similarity measures: validation, weighted means, window kernels, gradients.

The windowed sums themselves use :func:`omnireg.core.filters.separable_filter`.

Private to :mod:`omnireg.similarity`; every helper keeps the dtype and device of its input.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Sequence

import torch

from ..core.differences import voxel_derivative
from ..core.enums import as_enum
from ..core.filters import gaussian_kernel1d
from .enums import Kernel, LengthUnit

__all__: list[str] = []

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


# ---------------------------------------------------------------------------------------- validation
def check_image(image: object, name: str, *, ndims: tuple[int, ...] = (2, 3)) -> torch.Tensor:
    """Check a floating-point image batch ``(N, C, *S)`` with a spatial dimension in ``ndims``."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (N, C, *S), got {type(image).__name__}")
    if not image.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {image.dtype}")
    if image.ndim - 2 not in ndims:
        dims = " or ".join(f"{d}D" for d in ndims)
        raise ValueError(
            f"{name}: expected shape (N, C, *S) with {dims} spatial axes, got {tuple(image.shape)}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name}: expected at least one batch item and one channel, got {tuple(image.shape)}")
    return image


def check_pair(
    fixed: object,
    moving: object,
    *,
    channels: int | None = None,
    ndims: tuple[int, ...] = (2, 3),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check ``fixed`` and ``moving`` ``(N, C, *S)``; a batch of 1 is broadcast to the other's batch.

    Args:
        channels: if given, the number of channels both images must have.
    """
    fixed = check_image(fixed, "fixed", ndims=ndims)
    moving = check_image(moving, "moving", ndims=ndims)
    if fixed.dtype != moving.dtype:
        raise TypeError(f"moving: expected the dtype of fixed ({fixed.dtype}), got {moving.dtype}")
    if fixed.device != moving.device:
        raise ValueError(f"moving: expected the device of fixed ({fixed.device}), got {moving.device}")
    if fixed.shape[1:] != moving.shape[1:]:
        raise ValueError(
            f"moving: expected shape (N, {', '.join(map(str, fixed.shape[1:]))}) like fixed, "
            f"got {tuple(moving.shape)}"
        )
    nf, nm = fixed.shape[0], moving.shape[0]
    if nf != nm:
        if nf == 1:
            fixed = fixed.expand(nm, *fixed.shape[1:])
        elif nm == 1:
            moving = moving.expand(nf, *moving.shape[1:])
        else:
            raise ValueError(f"moving: batch size {nm} does not match the batch size {nf} of fixed (nor is 1)")
    if channels is not None and fixed.shape[1] != channels:
        raise ValueError(f"fixed: expected {channels} channel(s), got shape {tuple(fixed.shape)}")
    return fixed, moving


def check_mask(mask: object, ref: torch.Tensor, name: str = "mask") -> torch.Tensor | None:
    """Check a weight mask ``(N, 1, *S)`` (or ``(1, 1, *S)``) against ``ref`` ``(N, C, *S)``.

    Returns the mask in the dtype of ``ref``, expanded to batch N, or ``None``.

    Raises:
        ValueError: wrong shape, negative weights, or an item whose weights are all zero
            (``"mask: empty support ..."``).
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (N, 1, *S) or None, got {type(mask).__name__}")
    n, spatial = ref.shape[0], tuple(ref.shape[2:])
    if mask.ndim != ref.ndim or mask.shape[1] != 1 or tuple(mask.shape[2:]) != spatial or mask.shape[0] not in (1, n):
        raise ValueError(
            f"{name}: expected weights of shape ({n}, 1, {', '.join(map(str, spatial))}), got {tuple(mask.shape)}"
        )
    if mask.device != ref.device:
        raise ValueError(f"{name}: expected the device of the images ({ref.device}), got {mask.device}")
    mask = mask.to(ref.dtype)
    if mask.shape[0] != n:
        mask = mask.expand(n, *mask.shape[1:])
    if bool((mask < 0).any()):
        raise ValueError(f"{name}: expected non-negative weights, got a minimum of {float(mask.min()):.3g}")
    total = mask.detach().flatten(1).sum(1)
    empty = torch.nonzero(total <= 0).flatten().tolist()
    if empty:
        raise ValueError(f"{name}: empty support (all weights are zero) in batch item(s) {empty}")
    return mask


def check_inputs(fixed: object, moving: object, mask: object, *, channels: int | None = None) -> tuple:
    """:func:`check_pair` then :func:`check_mask` against the fixed image: the inputs of a measure.

    Returns:
        ``(fixed, moving, mask)`` as checked (the mask expanded to the batch, or ``None``).
    """
    fixed, moving = check_pair(fixed, moving, channels=channels)
    return fixed, moving, check_mask(mask, fixed)


def masks_per_moving(masks: object, movings: Sequence) -> list:
    """One mask (or ``None``) per moving image: ``masks`` as a list, ``None`` meaning no mask for any.

    Raises:
        ValueError: if the number of masks is not the number of moving images.
    """
    masks = [None] * len(movings) if masks is None else list(masks)
    if len(masks) != len(movings):
        raise ValueError(f"masks: expected one per moving image ({len(movings)}), got {len(masks)}")
    return masks


def check_spacing(spacing: object, ndim: int, name: str = "spacing") -> tuple[float, ...]:
    """Spacing in mm per tensor axis: ``None`` (1 mm), a number, or ``ndim`` positive numbers."""
    if spacing is None:
        return (1.0,) * ndim
    if isinstance(spacing, torch.Tensor):
        spacing = spacing.detach().cpu().reshape(-1).tolist()
    if isinstance(spacing, Real):
        values = [float(spacing)] * ndim
    else:
        try:
            values = [float(s) for s in spacing]  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise TypeError(f"{name}: expected a number or {ndim} numbers (mm per tensor axis), got {spacing!r}")
    if len(values) != ndim:
        raise ValueError(f"{name}: expected {ndim} values (mm per tensor axis), got {len(values)}: {values}")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{name}: expected positive finite values, got {values}")
    return tuple(values)


def per_axis(value: object, ndim: int, name: str, *, positive: bool = True, integer: bool = False) -> tuple:
    """A number or ``ndim`` numbers as a tuple, checked positive (or non-negative) and optionally integer."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().reshape(-1).tolist()
    items = [value] * ndim if isinstance(value, Real) else value
    try:
        items = list(items)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name}: expected a number or {ndim} numbers, got {value!r}")
    if len(items) != ndim or not all(isinstance(v, Real) and not isinstance(v, bool) for v in items):
        raise ValueError(f"{name}: expected a number or {ndim} numbers, got {value!r}")
    if integer and not all(float(v).is_integer() for v in items):
        raise ValueError(f"{name}: expected integers, got {value!r}")
    ok = all((v > 0) if positive else (v >= 0) for v in items) and all(math.isfinite(float(v)) for v in items)
    if not ok:
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{name}: expected {kind} finite values, got {value!r}")
    return tuple(int(v) if integer else float(v) for v in items)


def check_lengths(value: object, name: str, *, allow_zero: bool = False, integer: bool = False) -> object:
    """Validate a number or a sequence of numbers (one per axis) without knowing the dimension yet."""
    if isinstance(value, Real) and not isinstance(value, bool):
        per_axis(value, 1, name, positive=not allow_zero, integer=integer)
        return int(value) if integer else float(value)
    try:
        items = list(value)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"{name}: expected a number or one number per spatial axis, got {value!r}")
    if len(items) not in (1, 2, 3):
        raise ValueError(f"{name}: expected a number or one number per spatial axis (2 or 3), got {value!r}")
    return per_axis(items, len(items), name, positive=not allow_zero, integer=integer)


def check_positive(value: object, name: str, *, allow_zero: bool = False) -> float:
    """A finite positive (or non-negative) real number."""
    if not isinstance(value, Real) or isinstance(value, bool):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name}: expected a {kind} finite number, got {value!r}")
    return v


def length_in_voxels(
    size: object,
    unit: LengthUnit | str,
    spacing: tuple[float, ...],
    name: str,
    unit_name: str,
    *,
    allow_zero: bool = False,
) -> tuple[float, ...]:
    """A length (a number or one per axis) in ``unit`` converted to voxels per tensor axis."""
    unit = as_enum(unit, LengthUnit, unit_name)
    values = per_axis(size, len(spacing), name, positive=not allow_zero)
    if unit is LengthUnit.MM:
        return tuple(v / s for v, s in zip(values, spacing))
    return values


# ---------------------------------------------------------------------------------------- reductions
def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Weighted mean over channels and voxels: ``sum(w * x) / (C * sum(w))`` per batch item.

    Args:
        values: ``(N, C, *S)``.
        weights: ``(N, 1, *S)`` non-negative, or ``None`` (plain mean).

    Returns:
        ``(N,)``.
    """
    if weights is None:
        return values.flatten(1).mean(1)
    channels = values.shape[1]
    num = (values * weights).flatten(1).sum(1)
    return num / (weights.flatten(1).sum(1) * channels)


def weighted_moments(x: torch.Tensor, weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and (population) variance per item and channel over the support.

    Returns:
        ``mean`` and ``var``, each ``(N, C, 1, ..., 1)`` (broadcastable against ``x``).
    """
    dims = tuple(range(2, x.ndim))
    if weights is None:
        mean = x.mean(dim=dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
        return mean, var
    total = weights.sum(dim=dims, keepdim=True)
    mean = (weights * x).sum(dim=dims, keepdim=True) / total
    var = (weights * (x - mean) ** 2).sum(dim=dims, keepdim=True) / total
    return mean, var


def standardize(x: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``(x - mean) / std`` per item and channel over the weighted support (std 0 -> left centred)."""
    mean, var = weighted_moments(x, weights)
    tiny = torch.finfo(x.dtype).tiny
    return (x - mean) / torch.sqrt(var.clamp_min(tiny))


def safe_norm(vectors: torch.Tensor, dim: int) -> torch.Tensor:
    """Euclidean norm along ``dim`` with a finite gradient (zero) at the zero vector."""
    sq = (vectors * vectors).sum(dim)
    return torch.sqrt(sq.clamp_min(torch.finfo(vectors.dtype).tiny))


# ---------------------------------------------------------------------------------------- filters
def kernel_1d(
    kernel: Kernel | str, width: float, *, dtype: torch.dtype, device: torch.device, name: str = "kernel"
) -> torch.Tensor:
    """Normalised 1D window of ``width`` voxels (see :class:`~omnireg.similarity.enums.Kernel`).

    Returns a 1D tensor of odd length summing to 1.
    """
    kernel = as_enum(kernel, Kernel, name)
    if kernel is Kernel.BOX:
        size = max(1, 2 * int(math.floor((width - 1.0) / 2.0 + 0.5)) + 1)
        return torch.full((size,), 1.0 / size, dtype=dtype, device=device)
    return gaussian_kernel1d(width / _FWHM_PER_SIGMA, truncate=3.0, dtype=dtype, device=device)


# ---------------------------------------------------------------------------------------- gradients
def gradient(x: torch.Tensor, spacing: Sequence[float]) -> torch.Tensor:
    """Finite-difference gradient of every channel, per mm.

    Central differences inside, one-sided first-order differences on the first and last voxel of each
    axis (as ``numpy.gradient(..., edge_order=1)``; :func:`omnireg.core.differences.voxel_derivative`);
    zero along an axis of size 1.

    Args:
        x: ``(N, C, *S)``.
        spacing: mm per tensor axis.

    Returns:
        ``(N, C, D, *S)``, components in tensor-axis order.
    """
    return torch.stack([voxel_derivative(x, 2 + a) / float(spacing[a]) for a in range(x.ndim - 2)], dim=2)
