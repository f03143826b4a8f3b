"""MIND-SSC: modality independent neighbourhood descriptors with self-similarity context.

Heinrich et al., "Towards realtime multimodal fusion for image-guided interventions using
self-similarity context", MICCAI 2013. For a 3D image, the six neighbours ``±d e_a`` of a voxel (``d``
the dilation) form 12 pairs of neighbours on different axes (distance ``sqrt(2) d``); for each pair
``(p, q)`` the patch distance ``D_k(x) = (K * (I(. + p) - I(. + q))^2)(x)`` is the weighted sum of the
squared differences over a patch ``K`` (normalised box of ``2 r + 1`` voxels or Gaussian of that
FWHM). With
``D'_k = D_k - min_k D_k`` and the variance estimate ``V(x) = mean_k D'_k(x)``, clamped to
``[1e-3, 1e3]`` times its mean over the image, the descriptor is ``exp(-D'_k / V)``, 12 channels
in ``[0, 1]``. In 2D the four neighbours give 4 pairs and 4 channels.

Images are extended by edge replication for the neighbour shifts, and patches are cut at the image
border (zero padding of the sums); a patch cut to fewer voxels scales every ``D_k(x)`` alike, which
cancels in ``D'_k / V`` and only shifts the clamp of ``V`` on the border. The descriptor is invariant to ``I -> a I + b`` with
``a != 0`` exactly, and nearly invariant to monotone non-linear intensity changes.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from ..core.enums import as_enum
from ..core.filters import separable_filter
from ._common import (
    check_inputs,
    check_image,
    check_lengths,
    check_mask,
    check_spacing,
    kernel_1d,
    length_in_voxels,
    weighted_mean,
)
from .base import EngineTraits, SimilarityMeasure, register_similarity
from .enums import Kernel, LengthUnit, Metric, Sampling

__all__ = ["MIND", "mind", "mind_ssc_descriptor"]


def _pairs(ndim: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Neighbour pairs ``((axis_p, sign_p), (axis_q, sign_q))`` on different axes: 12 in 3D, 4 in 2D."""
    out = []
    for a, b in itertools.combinations(range(ndim), 2):
        for sa, sb in itertools.product((-1, 1), repeat=2):
            out.append(((a, sa), (b, sb)))
    return out


def _check_options(radius: object, dilation: object, kernel: object, unit: object) -> tuple:
    radius = check_lengths(radius, "radius", allow_zero=True)
    dilation = check_lengths(dilation, "dilation")
    return radius, dilation, as_enum(kernel, Kernel, "kernel"), as_enum(unit, LengthUnit, "unit")


def mind_ssc_descriptor(
    image: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    spacing: object = None,
    radius: float | tuple[float, ...] = 2,
    dilation: float | tuple[float, ...] = 2,
    kernel: Kernel | str = Kernel.BOX,
    unit: LengthUnit | str = LengthUnit.VOXEL,
) -> torch.Tensor:
    """MIND-SSC descriptor of every voxel (see the module docstring).

    Args:
        image: ``(N, C, *S)`` image batch (2D or 3D); each channel gets its own descriptor.
        mask: ``(N, 1, *S)`` non-negative weights of the image-wide mean of ``V`` that sets its clamp
            bounds (default: plain mean), so that values far outside the support do not matter.
        spacing: mm per tensor axis (needed for ``unit="mm"``; default 1).
        radius: patch radius r (patch width ``2 r + 1`` voxels), one or one per axis, >= 0.
        dilation: neighbour distance, one or one per axis, rounded to whole voxels (>= 1).
        kernel: patch window, ``"box"`` or ``"gaussian"`` (FWHM ``2 r + 1`` voxels).
        unit: unit of ``radius`` and ``dilation``: ``"voxel"`` or ``"mm"`` (converted per axis
            with ``spacing``).

    Returns:
        ``(N, C * K, *S)`` descriptors in ``[0, 1]``; ``K = 12`` in 3D, 4 in 2D; the channels of input
        channel c are ``c * K ... c * K + K - 1``.

    Raises:
        TypeError, ValueError: invalid inputs or options.
    """
    image = check_image(image, "image")
    mask = check_mask(mask, image)
    d = image.ndim - 2
    spacing = check_spacing(spacing, d)
    radius, dilation, kernel, unit = _check_options(radius, dilation, kernel, unit)
    r_vox = length_in_voxels(radius, unit, spacing, "radius", "unit", allow_zero=True)
    dil = tuple(max(1, int(round(v))) for v in length_in_voxels(dilation, unit, spacing, "dilation", "unit"))
    kernels = [kernel_1d(kernel, 2 * r + 1, dtype=image.dtype, device=image.device) for r in r_vox]

    n, c = image.shape[:2]
    sizes = image.shape[2:]
    pad = []
    for a in reversed(range(d)):
        pad += [dil[a], dil[a]]
    padded = F.pad(image, pad, mode="replicate")

    def shifted(axis: int, sign: int) -> torch.Tensor:
        index = [slice(None), slice(None)] + [slice(dil[a], dil[a] + sizes[a]) for a in range(d)]
        start = dil[axis] + sign * dil[axis]
        index[2 + axis] = slice(start, start + sizes[axis])
        return padded[tuple(index)]

    neighbours = {(a, s): shifted(a, s) for a in range(d) for s in (-1, 1)}
    pairs = _pairs(d)
    k = len(pairs)
    sq = torch.stack([(neighbours[p] - neighbours[q]) ** 2 for p, q in pairs], dim=2).reshape(n, c * k, *sizes)
    # patch sums; the mean over the in-image part of the patch would divide every D_k(x) by the same
    # count, which cancels in D'/V (it only shifts the clamp bounds of V on the border)
    dist = separable_filter(sq, kernels).reshape(n, c, k, *sizes)
    low = dist.amin(dim=2, keepdim=True)
    var = dist.mean(dim=2, keepdim=True) - low  # mean_k of D'_k = D_k - min_k D_k
    if mask is None:
        mean_var = var.flatten(2).mean(2)
    else:
        w = mask.unsqueeze(2)
        mean_var = (var * w).flatten(2).sum(2) / w.flatten(2).sum(2)
    mean_var = mean_var.reshape(n, c, 1, *([1] * d))
    var = torch.maximum(torch.minimum(var, mean_var * 1e3), mean_var * 1e-3)
    inv_var = 1.0 / var.clamp_min(torch.finfo(image.dtype).tiny)
    return torch.exp((low - dist) * inv_var).reshape(n, c * k, *sizes)


def mind(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    spacing: object = None,
    radius: float | tuple[float, ...] = 2,
    dilation: float | tuple[float, ...] = 2,
    kernel: Kernel | str = Kernel.BOX,
    unit: LengthUnit | str = LengthUnit.VOXEL,
) -> torch.Tensor:
    """Negative mean squared difference of MIND-SSC descriptors.

    ``similarity = - sum_x w(x) mean_k (d_f,k(x) - d_m,k(x))^2 / sum_x w(x)``: the SSD of the
    descriptors divided by their number of channels (so it lies in ``[-1, 0]``), averaged over the
    support; 0 for identical descriptors.

    Args:
        fixed: ``(N, C, *S)`` fixed image batch (2D or 3D).
        moving: ``(N, C, *S)`` moving image resampled on the fixed grid.
        mask: ``(N, 1, *S)`` non-negative weights of the voxels in the mean and of the image-wide mean
            that clamps ``V`` (descriptors still read the image within ``dilation + radius`` voxels of
            the support), or ``None``.
        spacing, radius, dilation, kernel, unit: see :func:`mind_ssc_descriptor`.

    Returns:
        ``(N,)`` similarity in ``[-1, 0]``.

    Raises:
        TypeError, ValueError: invalid inputs or options, or empty mask support.

    Shape:
        fixed, moving ``(N, C, *S)``; mask ``(N, 1, *S)``; output ``(N,)``.
    """
    fixed, moving, mask = check_inputs(fixed, moving, mask)
    opts = dict(mask=mask, spacing=spacing, radius=radius, dilation=dilation, kernel=kernel, unit=unit)
    df = mind_ssc_descriptor(fixed, **opts)
    dm = mind_ssc_descriptor(moving, **opts)
    return -weighted_mean((df - dm) ** 2, mask)


class MIND(SimilarityMeasure):
    """Module form of :func:`mind`; ``loss`` = mean squared descriptor difference (>= 0).

    Args:
        radius, dilation, kernel, unit: see :func:`mind_ssc_descriptor`.
    """

    metric = Metric.MIND.value
    #: the engine computes the descriptors once per pyramid level and warps them (not recomputed per iteration)
    traits = EngineTraits(sampling=Sampling.FEATURES)

    def __init__(
        self,
        *,
        radius: float | tuple[float, ...] = 2,
        dilation: float | tuple[float, ...] = 2,
        kernel: Kernel | str = Kernel.BOX,
        unit: LengthUnit | str = LengthUnit.VOXEL,
    ) -> None:
        super().__init__()
        self.radius, self.dilation, self.kernel, self.unit = _check_options(radius, dilation, kernel, unit)

    def options(self) -> dict:
        return {"radius": self.radius, "dilation": self.dilation, "kernel": self.kernel.value, "unit": self.unit.value}

    def forward(self, fixed, moving, mask=None, *, spacing=None):
        """Similarity ``(N,)``; see :func:`mind`."""
        return mind(fixed, moving, mask=mask, spacing=spacing, **self.options())

    @torch.no_grad()
    def features(self, data: torch.Tensor, grid, *, moving: bool) -> tuple[torch.Tensor, object]:
        """MIND-SSC descriptors of a level on its own grid (the same for the fixed and the moving image)."""
        return mind_ssc_descriptor(data, spacing=grid.spacing, **self.options()), grid

    def feature_similarity(self) -> SimilarityMeasure:
        """Descriptors are compared by their mean squared difference (:class:`~omnireg.similarity.MSE`)."""
        from .mse_ncc import MSE

        return MSE()


register_similarity(Metric.MIND, MIND)
