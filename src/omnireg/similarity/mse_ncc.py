"""Mean squared error and global normalised cross-correlation (mono-modal measures).

Both are weighted means over the mask support (see :mod:`omnireg.similarity`); channels are
averaged.
"""

from __future__ import annotations

import torch

from ._common import check_inputs, check_positive, check_spacing, weighted_moments
from .base import EngineTraits, SimilarityMeasure, register_similarity
from .enums import Metric, Sampling

__all__ = ["MSE", "NCC", "mse", "ncc"]


def mse(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    spacing: object = None,
) -> torch.Tensor:
    """Negative mean squared intensity difference.

    ``similarity = - sum_x w(x) mean_c (f_c(x) - m_c(x))^2 / sum_x w(x)``; 0 for identical images.

    Args:
        fixed: ``(N, C, *S)`` fixed image batch (2D or 3D).
        moving: ``(N, C, *S)`` moving image resampled on the fixed grid.
        mask: ``(N, 1, *S)`` non-negative weights in fixed space, or ``None`` (all ones).
        spacing: mm per tensor axis; unused (accepted for a uniform interface).

    Returns:
        ``(N,)`` similarity (<= 0, higher is better).

    Raises:
        TypeError, ValueError: invalid inputs; ``ValueError("mask: empty support ...")`` for an
            all-zero mask.

    Shape:
        fixed, moving ``(N, C, *S)``; mask ``(N, 1, *S)``; output ``(N,)``.
    """
    fixed, moving, mask = check_inputs(fixed, moving, mask)
    check_spacing(spacing, fixed.ndim - 2)
    sq = (fixed - moving) ** 2
    if mask is None:
        return -sq.flatten(1).mean(1)
    num = (sq * mask).flatten(1).sum(1)
    return -num / (mask.flatten(1).sum(1) * fixed.shape[1])


def ncc(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    spacing: object = None,
    eps: float = 0.0,
) -> torch.Tensor:
    """Global normalised cross-correlation over the mask support, per batch item.

    With weighted means ``mu`` and weighted (co)variances over the support,
    ``ncc_c = cov_w(f_c, m_c) / sqrt(var_w(f_c) var_w(m_c) + eps)``, averaged over channels.
    In ``[-1, 1]``: 1 for ``m = a f + b`` with ``a > 0``, -1 for ``a < 0``, 0 when either image is
    constant on the support.

    Args:
        fixed: ``(N, C, *S)`` fixed image batch (2D or 3D).
        moving: ``(N, C, *S)`` moving image resampled on the fixed grid.
        mask: ``(N, 1, *S)`` non-negative weights, or ``None``.
        spacing: mm per tensor axis; unused (accepted for a uniform interface).
        eps: added to the product of the variances (intensity^4 units; default 0: the product is
            only floored at the smallest positive float, so a constant image gives 0, with an
            unbounded gradient; pass ``eps > 0`` to bound it).

    Returns:
        ``(N,)`` similarity in ``[-1, 1]``.

    Raises:
        TypeError, ValueError: invalid inputs or empty mask support.
    """
    fixed, moving, mask = check_inputs(fixed, moving, mask)
    check_spacing(spacing, fixed.ndim - 2)
    eps = check_positive(eps, "eps", allow_zero=True)
    mf, vf = weighted_moments(fixed, mask)
    mm, vm = weighted_moments(moving, mask)
    prod = (fixed - mf) * (moving - mm)
    dims = tuple(range(2, fixed.ndim))
    if mask is None:
        cov = prod.mean(dim=dims)
    else:
        cov = (prod * mask).sum(dim=dims) / mask.sum(dim=dims)
    denom = torch.sqrt(((vf * vm).flatten(1) + eps).clamp_min(torch.finfo(fixed.dtype).tiny))
    out = cov / denom
    return out.mean(1)


class MSE(SimilarityMeasure):
    """Module form of :func:`mse`; ``loss`` = mean squared error (>= 0, 0 at identity)."""

    traits = EngineTraits(sampling=Sampling.POINTS)

    metric = Metric.MSE.value

    def forward(self, fixed, moving, mask=None, *, spacing=None):
        """Similarity ``(N,)``; see :func:`mse`."""
        return mse(fixed, moving, mask=mask, spacing=spacing)


class NCC(SimilarityMeasure):
    """Module form of :func:`ncc`; ``loss = -ncc`` (>= -1, -1 at perfect linear agreement).

    Args:
        eps: see :func:`ncc`.
    """

    traits = EngineTraits(sampling=Sampling.POINTS)

    metric = Metric.NCC.value

    def __init__(self, *, eps: float = 0.0) -> None:
        super().__init__()
        self.eps = check_positive(eps, "eps", allow_zero=True)

    def options(self) -> dict:
        return {"eps": self.eps}

    def forward(self, fixed, moving, mask=None, *, spacing=None):
        """Similarity ``(N,)``; see :func:`ncc`."""
        return ncc(fixed, moving, mask=mask, spacing=spacing, eps=self.eps)


register_similarity(Metric.MSE, MSE)
register_similarity(Metric.NCC, NCC)
