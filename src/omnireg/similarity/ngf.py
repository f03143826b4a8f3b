"""Normalised gradient fields (Haber and Modersitzki 2006), squared form: blind to contrast inversion."""

from __future__ import annotations

import torch

from ..core.enums import as_enum
from ._common import check_inputs, check_positive, check_spacing, gradient, safe_norm, weighted_mean
from .base import SimilarityMeasure, register_similarity
from .enums import EpsMode, Metric

__all__ = ["NGF", "ngf"]


def _check_options(eps: object, eps_mode: object) -> tuple[float, EpsMode]:
    return check_positive(eps, "eps"), as_enum(eps_mode, EpsMode, "eps_mode")


def ngf(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    spacing: object = None,
    eps: float = 0.1,
    eps_mode: EpsMode | str = EpsMode.RELATIVE,
) -> torch.Tensor:
    """Normalised gradient field similarity.

    With gradients per mm (central differences, one-sided at the border) and
    ``|v|_e^2 = |v|^2 + e^2``:
    ``ngf(x) = <grad f, grad m>^2 / (|grad f|_{e_f}^2 |grad m|_{e_m}^2)`` in ``[0, 1)``, and
    ``similarity = sum_x w(x) ngf(x) / sum_x w(x)`` (channels averaged). Squaring the inner product
    makes it blind to contrast inversion (``m -> -m``) and to any positive or negative linear
    intensity change up to the edge parameter. The edge parameter ``e`` ignores gradients of
    magnitude below about ``e`` (noise).

    Args:
        fixed: ``(N, C, *S)`` fixed image batch (2D or 3D).
        moving: ``(N, C, *S)`` moving image resampled on the fixed grid.
        mask: ``(N, 1, *S)`` non-negative weights of the voxels in the mean (the finite differences at
            a voxel still read its direct neighbours), or ``None``.
        spacing: mm per tensor axis (default 1).
        eps: edge parameter, > 0.
        eps_mode: ``"relative"`` (default): ``e = eps * mean_w |grad image|`` per image, item and
            channel; ``"absolute"``: ``e = eps`` in intensity per mm for both images.

    Returns:
        ``(N,)`` similarity in ``[0, 1)``.

    Raises:
        TypeError, ValueError: invalid inputs or options, or empty mask support.

    Shape:
        fixed, moving ``(N, C, *S)``; mask ``(N, 1, *S)``; output ``(N,)``.
    """
    fixed, moving, mask = check_inputs(fixed, moving, mask)
    spacing = check_spacing(spacing, fixed.ndim - 2)
    eps, eps_mode = _check_options(eps, eps_mode)
    gf = gradient(fixed, spacing)
    gm = gradient(moving, spacing)
    nf2 = (gf * gf).sum(2)
    nm2 = (gm * gm).sum(2)
    if eps_mode is EpsMode.RELATIVE:
        view = (fixed.shape[0], fixed.shape[1]) + (1,) * (fixed.ndim - 2)
        ef = eps * _channel_mean(safe_norm(gf, 2), mask).view(view)
        em = eps * _channel_mean(safe_norm(gm, 2), mask).view(view)
        ef2, em2 = ef * ef, em * em
    else:
        ef2 = em2 = eps * eps
    dot = (gf * gm).sum(2)
    tiny = torch.finfo(fixed.dtype).tiny
    local = dot * dot / ((nf2 + ef2) * (nm2 + em2)).clamp_min(tiny)
    return weighted_mean(local, mask)


def _channel_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Weighted mean over voxels per item and channel: ``(N, C)``."""
    if mask is None:
        return x.flatten(2).mean(2)
    return (x * mask).flatten(2).sum(2) / mask.flatten(2).sum(2)


class NGF(SimilarityMeasure):
    """Module form of :func:`ngf`; ``loss = -ngf`` (in ``(-1, 0]``).

    Args:
        eps, eps_mode: see :func:`ngf`.
    """

    metric = Metric.NGF.value

    def __init__(self, *, eps: float = 0.1, eps_mode: EpsMode | str = EpsMode.RELATIVE) -> None:
        super().__init__()
        self.eps, self.eps_mode = _check_options(eps, eps_mode)

    def options(self) -> dict:
        return {"eps": self.eps, "eps_mode": self.eps_mode.value}

    def forward(self, fixed, moving, mask=None, *, spacing=None):
        """Similarity ``(N,)``; see :func:`ngf`."""
        return ngf(fixed, moving, mask=mask, spacing=spacing, **self.options())


register_similarity(Metric.NGF, NGF)
