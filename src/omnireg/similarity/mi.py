"""Mutual information and normalised mutual information from a differentiable Parzen joint histogram.

Mattes-style estimate: each sample's intensities are mapped to continuous bin coordinates; the
moving intensity is spread over 4 bins by a cubic B-spline Parzen window, the fixed intensity by a
zero-order (box) or cubic B-spline window. The joint histogram is the product
``W_f^T diag(w) W_m`` of two ``(P x bins)`` Parzen weight matrices, built and multiplied in chunks of
samples; its gradient is computed by a custom backward that rebuilds the chunk matrices instead of
storing them, so the memory stays ``O(chunk * bins)`` for any number of voxels.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch.autograd.function import once_differentiable

from ..core.enums import as_enum
from ._common import check_inputs, check_positive, check_spacing
from .base import EngineTraits, SimilarityMeasure, register_similarity
from .enums import Metric, ParzenWindow, Sampling

__all__ = ["MI", "NMI", "joint_histogram", "mi", "nmi"]

_CHUNK_ELEMENTS = 1 << 21  # elements of one (batch, chunk, bins) Parzen matrix


# ---------------------------------------------------------------------------------------- Parzen windows
def _padding(window: ParzenWindow) -> int:
    """Bins kept free at each end so the window's support stays inside the histogram."""
    return 1 if window is ParzenWindow.BSPLINE else 0


def _bin_coordinates(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, window: ParzenWindow, bins: int):
    """Continuous bin coordinates: ``[lo, hi]`` -> ``[pad, bins - 1 - pad]`` (box: ``[0, bins)``), clamped."""
    scale = 1.0 / (hi - lo).clamp_min(torch.finfo(x.dtype).tiny)
    if window is ParzenWindow.BSPLINE:
        c = 1.0 + (x - lo) * scale * (bins - 3)
        return c.clamp(1.0, bins - 2.0)
    return ((x - lo) * scale * bins).clamp(0.0, bins - 1.0)


def _parzen_matrix(c: torch.Tensor, window: ParzenWindow, bins: int, derivative: bool):
    """Dense Parzen weights ``(M, p, bins)`` of coordinates ``c`` ``(M, p)`` and their derivative in c."""
    shape = c.shape + (bins,)
    if window is ParzenWindow.BOX:
        idx = torch.floor(c).long().clamp_(0, bins - 1).unsqueeze(-1)
        w = torch.zeros(shape, dtype=c.dtype, device=c.device).scatter_(-1, idx, 1.0)
        return w, (torch.zeros_like(w) if derivative else None)
    fl = torch.floor(c)
    t = (c - fl).unsqueeze(-1)
    idx = (fl.long() - 1).unsqueeze(-1) + torch.arange(4, device=c.device)
    idx = idx.clamp_(0, bins - 1)  # only the 4th tap of c = bins - 2 falls outside, with weight 0
    t2 = t * t
    t3 = t2 * t
    s = 1.0 - t
    taps = torch.cat([s * s * s / 6, (3 * t3 - 6 * t2 + 4) / 6, (-3 * t3 + 3 * t2 + 3 * t + 1) / 6, t3 / 6], dim=-1)
    w = torch.zeros(shape, dtype=c.dtype, device=c.device).scatter_add_(-1, idx, taps)
    if not derivative:
        return w, None
    dtaps = torch.cat([-0.5 * s * s, 1.5 * t2 - 2 * t, -1.5 * t2 + t + 0.5, 0.5 * t2], dim=-1)
    dw = torch.zeros(shape, dtype=c.dtype, device=c.device).scatter_add_(-1, idx, dtaps)
    return w, dw


class _JointHistogram(torch.autograd.Function):
    """``H[b, i, j] = sum_p w[b, p] Wf[b, p, i] Wm[b, p, j]`` with chunked, recomputing backward."""

    @staticmethod
    def forward(ctx, cf, cm, weights, bins, fixed_window, moving_window):  # noqa: D102
        ctx.save_for_backward(cf, cm, weights)
        ctx.bins, ctx.fixed_window, ctx.moving_window = bins, fixed_window, moving_window
        batch, samples = cf.shape
        hist = torch.zeros(batch, bins, bins, dtype=cf.dtype, device=cf.device)
        step = max(1, _CHUNK_ELEMENTS // (batch * bins))
        for start in range(0, samples, step):
            sl = slice(start, start + step)
            wf, _ = _parzen_matrix(cf[:, sl], fixed_window, bins, False)
            wm, _ = _parzen_matrix(cm[:, sl], moving_window, bins, False)
            if weights is not None:
                wm = wm * weights[:, sl].unsqueeze(-1)
            hist.baddbmm_(wf.transpose(1, 2), wm)
        return hist

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # noqa: D102
        cf, cm, weights = ctx.saved_tensors
        bins, fwin, mwin = ctx.bins, ctx.fixed_window, ctx.moving_window
        need_f, need_m, need_w = ctx.needs_input_grad[:3]
        need_f = need_f and fwin is ParzenWindow.BSPLINE
        grad_f = torch.zeros_like(cf) if need_f else None
        grad_m = torch.zeros_like(cm) if need_m else None
        grad_w = torch.zeros_like(weights) if (need_w and weights is not None) else None
        batch, samples = cf.shape
        grad = grad.contiguous()
        step = max(1, _CHUNK_ELEMENTS // (batch * bins))
        for start in range(0, samples, step):
            sl = slice(start, start + step)
            wf, dwf = _parzen_matrix(cf[:, sl], fwin, bins, need_f)
            wm, dwm = _parzen_matrix(cm[:, sl], mwin, bins, need_m)
            w = None if weights is None else weights[:, sl]
            if need_m or grad_w is not None:
                a = torch.bmm(wf, grad)  # (B, p, bins): sum_i Wf[p, i] G[i, j]
                if need_m:
                    g = (a * dwm).sum(-1)
                    grad_m[:, sl] = g if w is None else g * w
                if grad_w is not None:
                    grad_w[:, sl] = (a * wm).sum(-1)
            if need_f:
                b = torch.bmm(wm, grad.transpose(1, 2))  # (B, p, bins): sum_j Wm[p, j] G[i, j]
                g = (b * dwf).sum(-1)
                grad_f[:, sl] = g if w is None else g * w
        return grad_f, grad_m, grad_w, None, None, None


# ---------------------------------------------------------------------------------------- ranges
def _check_range(value: object, name: str) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected None or (low, high) intensities, got {value!r}")
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"{name}: expected finite low < high, got {value!r}")
    return lo, hi


def _intensity_range(
    x: torch.Tensor, w: torch.Tensor | None, given: tuple[float, float] | None, q: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``x`` ``(M, P)``: ``(lo, hi)`` each ``(M, 1)``, from ``given`` or the support's quantiles."""
    if given is not None:
        lo = torch.full((x.shape[0], 1), given[0], dtype=x.dtype, device=x.device)
        return lo, torch.full_like(lo, given[1])
    if w is None and q == 0.0:
        return x.amin(1, keepdim=True), x.amax(1, keepdim=True)
    los, his = [], []
    for row in range(x.shape[0]):
        values = x[row] if w is None else x[row][w[row] > 0]
        n = values.numel()
        if q == 0.0:
            los.append(values.min())
            his.append(values.max())
            continue
        k = min(n, max(1, int(math.ceil(q * n))))
        los.append(torch.kthvalue(values, k).values)
        his.append(torch.kthvalue(values, n - k + 1).values)
    return torch.stack(los).unsqueeze(1), torch.stack(his).unsqueeze(1)


# ---------------------------------------------------------------------------------------- public
def _check_options(bins, fixed_window, moving_window, fixed_range, moving_range, robust_quantile, sampling, generator):
    if not isinstance(bins, int) or isinstance(bins, bool):
        raise TypeError(f"bins: expected an int, got {type(bins).__name__}")
    if bins < 4:
        raise ValueError(f"bins: expected at least 4 bins, got {bins}")
    fixed_window = as_enum(fixed_window, ParzenWindow, "fixed_window")
    moving_window = as_enum(moving_window, ParzenWindow, "moving_window")
    fixed_range = _check_range(fixed_range, "fixed_range")
    moving_range = _check_range(moving_range, "moving_range")
    q = check_positive(robust_quantile, "robust_quantile", allow_zero=True)
    if q >= 0.5:
        raise ValueError(f"robust_quantile: expected a value in [0, 0.5), got {robust_quantile!r}")
    sampling = check_positive(sampling, "sampling")
    if sampling > 1.0:
        raise ValueError(f"sampling: expected a fraction of voxels in (0, 1], got {sampling!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    return bins, fixed_window, moving_window, fixed_range, moving_range, q, sampling, generator


def joint_histogram(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    bins: int = 32,
    fixed_window: ParzenWindow | str = ParzenWindow.BSPLINE,
    moving_window: ParzenWindow | str = ParzenWindow.BSPLINE,
    fixed_range: Sequence[float] | None = None,
    moving_range: Sequence[float] | None = None,
    robust_quantile: float = 0.001,
    sampling: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Normalised Parzen joint histogram ``p[n, c, i, j]`` of fixed bin i and moving bin j.

    Intensities are rescaled from ``[lo, hi]`` to the bin range (``[1, bins - 2]`` for the B-spline
    window, whose support then stays inside the histogram; ``[0, bins)`` for the box window); values
    outside ``[lo, hi]`` are clamped to it. ``[lo, hi]`` is the user-given range, or the
    ``robust_quantile`` and ``1 - robust_quantile`` quantiles (nearest rank) of the image over the
    voxels in use (the mask support, among the random sample when ``sampling < 1``).

    Args:
        fixed, moving: ``(N, C, *S)`` on the same grid (2D or 3D); one histogram per item and channel.
        mask: ``(N, 1, *S)`` non-negative weights: each voxel contributes with its weight.
        bins: number of bins per axis (>= 4).
        fixed_window, moving_window: ``"bspline"`` (cubic, differentiable) or ``"box"``
            (zero-order, no gradient for that image).
        fixed_range, moving_range: ``(low, high)`` intensities, or ``None`` for robust min/max.
        robust_quantile: quantile in ``[0, 0.5)`` used for the automatic range (0: min/max).
        sampling: fraction in ``(0, 1]`` of voxels used, drawn without replacement (the same voxels
            for every batch item) with ``generator``; 1 uses all voxels deterministically.
        generator: ``torch.Generator`` for the random sample (default: torch's global generator).

    Returns:
        ``(N, C, bins, bins)``, each ``(bins, bins)`` summing to 1.

    Raises:
        TypeError, ValueError: invalid inputs or options, or empty mask support.
    """
    fixed, moving, mask = check_inputs(fixed, moving, mask)
    bins, fwin, mwin, frange, mrange, q, sampling, generator = _check_options(
        bins, fixed_window, moving_window, fixed_range, moving_range, robust_quantile, sampling, generator
    )
    n, c = fixed.shape[:2]
    f = fixed.reshape(n * c, -1)
    m = moving.reshape(n * c, -1)
    w = None if mask is None else mask.expand(n, c, *mask.shape[2:]).reshape(n * c, -1)
    if sampling < 1.0:
        total = f.shape[1]
        count = max(1, int(round(sampling * total)))
        gen_device = generator.device if generator is not None else torch.device("cpu")
        idx = torch.randperm(total, generator=generator, device=gen_device)[:count].to(fixed.device)
        f, m = f.index_select(1, idx), m.index_select(1, idx)
        if w is not None:
            w = w.index_select(1, idx)
            if bool((w.sum(1) <= 0).any()):
                raise ValueError("mask: empty support among the randomly sampled voxels; raise sampling")
    flo, fhi = _intensity_range(f, w, frange, q)
    mlo, mhi = _intensity_range(m, w, mrange, q)
    cf = _bin_coordinates(f, flo, fhi, fwin, bins)
    cm = _bin_coordinates(m, mlo, mhi, mwin, bins)
    hist = _JointHistogram.apply(cf, cm, w, bins, fwin, mwin)
    hist = hist / hist.sum(dim=(1, 2), keepdim=True)
    return hist.reshape(n, c, bins, bins)


def _entropies(fixed, moving, *, spacing, **options) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Marginal and joint entropies (nats) of the joint histogram: ``H(f), H(m), H(f, m)``, each ``(N, C)``."""
    p = joint_histogram(fixed, moving, **options)
    check_spacing(spacing, fixed.ndim - 2)
    tiny = torch.finfo(p.dtype).tiny

    def ent(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return -(x * torch.log(x.clamp_min(tiny))).sum(dim=dims)

    return ent(p.sum(3), (2,)), ent(p.sum(2), (2,)), ent(p, (2, 3))


_DOC_ARGS = """
    Args:
        fixed: ``(N, C, *S)`` fixed image batch (2D or 3D).
        moving: ``(N, C, *S)`` moving image resampled on the fixed grid.
        mask: ``(N, 1, *S)`` non-negative weights of the histogram contributions, or ``None``.
        spacing: mm per tensor axis; unused (accepted for a uniform interface).
        bins, fixed_window, moving_window, fixed_range, moving_range, robust_quantile, sampling,
            generator: see :func:`joint_histogram`.
"""


def mi(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    spacing: object = None,
    bins: int = 32,
    fixed_window: ParzenWindow | str = ParzenWindow.BSPLINE,
    moving_window: ParzenWindow | str = ParzenWindow.BSPLINE,
    fixed_range: Sequence[float] | None = None,
    moving_range: Sequence[float] | None = None,
    robust_quantile: float = 0.001,
    sampling: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mutual information (nats) of the Parzen joint histogram, channels averaged.

    ``MI = H(f) + H(m) - H(f, m)`` with ``H(p) = -sum p log p`` over the bins of the normalised joint
    histogram ``p`` (see :func:`joint_histogram`) and its marginals. ``>= 0``, higher is better.
    """
    hf, hm, hfm = _entropies(
        fixed, moving, mask=mask, spacing=spacing, bins=bins, fixed_window=fixed_window,
        moving_window=moving_window, fixed_range=fixed_range, moving_range=moving_range,
        robust_quantile=robust_quantile, sampling=sampling, generator=generator,
    )
    return (hf + hm - hfm).mean(1)


def nmi(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    spacing: object = None,
    bins: int = 32,
    fixed_window: ParzenWindow | str = ParzenWindow.BSPLINE,
    moving_window: ParzenWindow | str = ParzenWindow.BSPLINE,
    fixed_range: Sequence[float] | None = None,
    moving_range: Sequence[float] | None = None,
    robust_quantile: float = 0.001,
    sampling: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Normalised mutual information (Studholme), channels averaged.

    ``NMI = (H(f) + H(m)) / H(f, m)`` in ``[1, 2]`` (2 for a one-to-one intensity mapping), from the
    Parzen joint histogram of :func:`joint_histogram`. Higher is better.
    """
    hf, hm, hfm = _entropies(
        fixed, moving, mask=mask, spacing=spacing, bins=bins, fixed_window=fixed_window,
        moving_window=moving_window, fixed_range=fixed_range, moving_range=moving_range,
        robust_quantile=robust_quantile, sampling=sampling, generator=generator,
    )
    return ((hf + hm) / hfm.clamp_min(torch.finfo(hfm.dtype).tiny)).mean(1)


_RETURNS = """
    Returns:
        ``(N,)`` similarity.

    Raises:
        TypeError, ValueError: invalid inputs or options, or empty mask support.

    Shape:
        fixed, moving ``(N, C, *S)``; mask ``(N, 1, *S)``; output ``(N,)``.
"""
mi.__doc__ = (mi.__doc__ or "") + _DOC_ARGS + _RETURNS
nmi.__doc__ = (nmi.__doc__ or "") + _DOC_ARGS + _RETURNS


class _HistogramMeasure(SimilarityMeasure):
    traits = EngineTraits(sampling=Sampling.POINTS)

    def __init__(
        self,
        *,
        bins: int = 32,
        fixed_window: ParzenWindow | str = ParzenWindow.BSPLINE,
        moving_window: ParzenWindow | str = ParzenWindow.BSPLINE,
        fixed_range: Sequence[float] | None = None,
        moving_range: Sequence[float] | None = None,
        robust_quantile: float = 0.001,
        sampling: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        (
            self.bins, self.fixed_window, self.moving_window, self.fixed_range, self.moving_range,
            self.robust_quantile, self.sampling, self.generator,
        ) = _check_options(bins, fixed_window, moving_window, fixed_range, moving_range, robust_quantile, sampling, generator)

    def options(self) -> dict:
        return {
            "bins": self.bins,
            "fixed_window": self.fixed_window.value,
            "moving_window": self.moving_window.value,
            "fixed_range": self.fixed_range,
            "moving_range": self.moving_range,
            "robust_quantile": self.robust_quantile,
            "sampling": self.sampling,
            "generator": self.generator,
        }

    def for_unit_range(self) -> "SimilarityMeasure":
        """A copy with ``fixed_range``/``moving_range`` (0, 1) where they were not set (no quantiles per call)."""
        opts = self.options()
        opts["fixed_range"] = opts["fixed_range"] or (0.0, 1.0)
        opts["moving_range"] = opts["moving_range"] or (0.0, 1.0)
        return type(self)(**opts)


class MI(_HistogramMeasure):
    """Module form of :func:`mi`; ``loss = -MI`` (nats).

    Args:
        bins, fixed_window, moving_window, fixed_range, moving_range, robust_quantile, sampling,
            generator: see :func:`joint_histogram`. The generator (if any) is the caller's and advances
            at every call with ``sampling < 1``.
    """

    metric = Metric.MI.value

    def forward(self, fixed, moving, mask=None, *, spacing=None):
        """Similarity ``(N,)``; see :func:`mi`."""
        return mi(fixed, moving, mask=mask, spacing=spacing, **self.options())


class NMI(_HistogramMeasure):
    """Module form of :func:`nmi`; ``loss = -NMI`` (in ``[-2, -1]``).

    Args:
        bins, fixed_window, moving_window, fixed_range, moving_range, robust_quantile, sampling,
            generator: see :func:`joint_histogram`.
    """

    metric = Metric.NMI.value

    def forward(self, fixed, moving, mask=None, *, spacing=None):
        """Similarity ``(N,)``; see :func:`nmi`."""
        return nmi(fixed, moving, mask=mask, spacing=spacing, **self.options())


register_similarity(Metric.MI, MI)
register_similarity(Metric.NMI, NMI)
