"""Local normalised cross-correlation (squared, as ANTs' CC and VoxelMorph's NCC loss).

Local statistics come from separable box or Gaussian filters (one depthwise convolution per axis
over all moment images at once), so the cost per voxel is linear in the window width.
"""

from __future__ import annotations

import torch

from ..core.enums import as_enum
from ..core.filters import filter_of_ones, separable_filter
from ._common import (
    check_inputs,
    check_lengths,
    check_positive,
    check_spacing,
    kernel_1d,
    length_in_voxels,
    standardize,
    weighted_mean,
)
from .base import SimilarityMeasure, register_similarity
from .enums import Kernel, LengthUnit, Metric

__all__ = ["LNCC", "lncc"]


def _check_options(window: object, window_unit: object, kernel: object, eps: object) -> tuple:
    kernel = as_enum(kernel, Kernel, "kernel")
    window_unit = as_enum(window_unit, LengthUnit, "window_unit")
    eps = check_positive(eps, "eps", allow_zero=True)
    window = check_lengths(window, "window")
    return window, window_unit, kernel, eps


def lncc(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    spacing: object = None,
    window: float | tuple[float, ...] = 9,
    window_unit: LengthUnit | str = LengthUnit.VOXEL,
    kernel: Kernel | str = Kernel.BOX,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Local normalised cross-correlation, squared, as a weighted mean over the support.

    For every voxel x, the local weighted statistics inside the window K centred on x
    (weights ``w``, zero outside the image) give
    ``lncc(x) = cov_K(f, m)^2 / (var_K(f) var_K(m) + eps)`` in ``[0, 1]``, and
    ``similarity = sum_x w(x) lncc(x) / sum_x w(x)`` (channels averaged). The square makes the
    measure blind to the sign of the local correlation (as ANTs' CC). Both images are first
    standardised globally over the support (an exact invariance of the measure except for ``eps``),
    so ``eps`` is relative to unit variance and float32 moment sums stay well conditioned.

    Args:
        fixed: ``(N, C, *S)`` fixed image batch (2D or 3D).
        moving: ``(N, C, *S)`` moving image resampled on the fixed grid.
        mask: ``(N, 1, *S)`` non-negative weights; they weight the local moments and the final mean, so
            values where ``w = 0`` are ignored exactly.
        spacing: mm per tensor axis (needed for ``window_unit="mm"``; default 1 mm).
        window: box width, or Gaussian full width at half maximum, per axis or one for all axes,
            in ``window_unit``. A box width is rounded to the nearest odd number of voxels (>= 1).
        window_unit: ``"voxel"`` or ``"mm"``.
        kernel: ``"box"`` or ``"gaussian"``.
        eps: added to the product of the local variances (unit: standardised intensity^4).

    Returns:
        ``(N,)`` similarity in ``[0, 1]``.

    Raises:
        TypeError, ValueError: invalid inputs or options, or empty mask support.

    Shape:
        fixed, moving ``(N, C, *S)``; mask ``(N, 1, *S)``; output ``(N,)``.

    Example:
        >>> import torch
        >>> f = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(0))
        >>> round(float(lncc(f, 3 * f - 1, window=5)), 4)
        1.0
    """
    fixed, moving, mask = check_inputs(fixed, moving, mask)
    d = fixed.ndim - 2
    spacing = check_spacing(spacing, d)
    window, window_unit, kernel, eps = _check_options(window, window_unit, kernel, eps)
    widths = length_in_voxels(window, window_unit, spacing, "window", "window_unit")
    kernels = [kernel_1d(kernel, w, dtype=fixed.dtype, device=fixed.device) for w in widths]

    f = standardize(fixed, mask)
    m = standardize(moving, mask)
    c = fixed.shape[1]
    if mask is None:
        moments = torch.cat([f, m, f * f, m * m, f * m], dim=1)
        sums = separable_filter(moments, kernels)
        weight_sum = filter_of_ones(fixed.shape[2:], kernels, fixed)
    else:
        wf, wm = mask * f, mask * m
        moments = torch.cat([mask, wf, wm, wf * f, wm * m, wf * m], dim=1)
        sums = separable_filter(moments, kernels)
        weight_sum, sums = sums[:, :1], sums[:, 1:]
    tiny = torch.finfo(fixed.dtype).tiny
    inv = 1.0 / weight_sum.clamp_min(tiny)
    mean_f, mean_m, e_ff, e_mm, e_fm = (s * inv for s in sums.split(c, dim=1))
    var_f = (e_ff - mean_f * mean_f).clamp_min(0)
    var_m = (e_mm - mean_m * mean_m).clamp_min(0)
    cov = e_fm - mean_f * mean_m
    local = cov * cov / (var_f * var_m + eps).clamp_min(tiny)
    return weighted_mean(local, mask)


class LNCC(SimilarityMeasure):
    """Module form of :func:`lncc`; ``loss = -lncc`` (>= -1).

    Args:
        window, window_unit, kernel, eps: see :func:`lncc`.
    """

    metric = Metric.LNCC.value

    def __init__(
        self,
        *,
        window: float | tuple[float, ...] = 9,
        window_unit: LengthUnit | str = LengthUnit.VOXEL,
        kernel: Kernel | str = Kernel.BOX,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.window, self.window_unit, self.kernel, self.eps = _check_options(window, window_unit, kernel, eps)

    def options(self) -> dict:
        return {"window": self.window, "window_unit": self.window_unit.value, "kernel": self.kernel.value, "eps": self.eps}

    def forward(self, fixed, moving, mask=None, *, spacing=None):
        """Similarity ``(N,)``; see :func:`lncc`."""
        return lncc(fixed, moving, mask=mask, spacing=spacing, **self.options())


register_similarity(Metric.LNCC, LNCC)
