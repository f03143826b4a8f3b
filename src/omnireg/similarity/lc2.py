"""Linear correlation of linear combination, LC2 (Wein et al. 2013), for ultrasound-like images.

The moving image ``m`` is regressed locally on ``[f, |grad f|, 1]`` of the fixed image. The intercept is
left unpenalised, which is the same as centring every quantity on its local weighted mean; the
3x3 normal equations then reduce to a 2x2 system in the centred covariances, solved in closed form
for all voxels (or patches) at once:

``C = [[c_ff, c_fg], [c_fg, c_gg]]``, ``b = [c_fm, c_gm]``, ``beta = (C + a I)^-1 b`` with the ridge
``a = alpha * (c_ff + c_gg) / 2`` (relative to the regressors' mean variance, so ``alpha`` is
scale-free; plus a rounding floor of ``eps(dtype)`` times their uncentred second moments), and ``residual = c_mm - 2 beta.b + beta^T C beta`` (the weighted mean squared residual,
``0 <= residual <= c_mm``).
"""

from __future__ import annotations

from numbers import Real
from typing import Sequence

import torch

from ..core.filters import filter_of_ones, separable_filter
from ._common import (
    check_inputs,
    check_lengths,
    check_pair,
    check_positive,
    check_spacing,
    gradient,
    kernel_1d,
    per_axis,
    safe_norm,
    standardize,
)
from .base import SimilarityMeasure, register_similarity
from .enums import Kernel, Metric

__all__ = ["LC2", "lc2", "lc2_patch", "lc2_patch_map"]


def _residual(c_ff, c_fg, c_gg, c_fm, c_gm, c_mm, scale, alpha: float) -> torch.Tensor:
    """Ridge least-squares residual variance of the centred 2-regressor problem (elementwise).

    ``scale`` (the regressors' uncentred second moments) sets a rounding floor ``eps(dtype) * scale``
    on the ridge, so that windows whose covariances are pure rounding noise (flat, or a single
    weighted voxel) give bounded coefficients instead of overflowing.
    """
    c_ff = c_ff.clamp_min(0)
    c_gg = c_gg.clamp_min(0)
    ridge = alpha * 0.5 * (c_ff + c_gg) + torch.finfo(c_ff.dtype).eps * scale
    a11, a22 = c_ff + ridge, c_gg + ridge
    det = a11 * a22 - c_fg * c_fg
    # windows whose system is singular to working precision (empty or flat windows: all moments ~0)
    # get no fit (res = c_mm) instead of 0/0; `where` on a safe denominator keeps gradients finite
    ok = det > (torch.finfo(c_ff.dtype).eps * a11 * a22).clamp_min(torch.finfo(c_ff.dtype).tiny)
    safe = torch.where(ok, det, torch.ones_like(det))
    zero = torch.zeros_like(det)
    b1 = torch.where(ok, (a22 * c_fm - c_fg * c_gm) / safe, zero)
    b2 = torch.where(ok, (a11 * c_gm - c_fg * c_fm) / safe, zero)
    fit = b1 * b1 * c_ff + 2 * b1 * b2 * c_fg + b2 * b2 * c_gg
    res = c_mm - 2 * (b1 * c_fm + b2 * c_gm) + fit
    return torch.minimum(res.clamp_min(0), c_mm)


def _check_dense(radius: object, alpha: object) -> tuple:
    radius = check_lengths(radius, "radius", integer=True)
    return radius, check_positive(alpha, "alpha")


def lc2(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    spacing: object = None,
    radius: int | tuple[int, ...] = 3,
    alpha: float = 1e-3,
) -> torch.Tensor:
    """Dense LC2: local regressions in a window around every voxel, weighted by the local variance.

    For every voxel x, the window K of ``(2 radius + 1)`` voxels per axis gives the weighted (by the
    mask) centred covariances of ``f``, ``g = |grad f|`` and ``m`` and the ridge residual variance
    ``res(x)`` of ``m`` regressed on ``[f, g, 1]`` (see the module docstring). With the local variance
    ``var(x) = c_mm(x)`` of m and ``lc2(x) = 1 - res(x) / var(x)``:

    ``similarity = sum_x w(x) var(x) lc2(x) / sum_x w(x) var(x) = 1 - sum_x w res / sum_x w var``,

    in ``[0, 1]``, 1 where m is exactly an affine function of f and |grad f| in every window
    (up to the ridge), 0 for a constant moving image. f and m are standardised globally over the
    support first and g is standardised likewise, so the measure is invariant to linear intensity
    changes of either image (``m -> a m + b`` with any sign of ``a``).

    Args:
        fixed: ``(N, 1, *S)`` fixed image batch (e.g. CT or MR; 2D or 3D).
        moving: ``(N, 1, *S)`` moving image (e.g. ultrasound) resampled on the fixed grid.
        mask: ``(N, 1, *S)`` non-negative weights; they weight the local moments and the sums above, so
            moving values where ``w = 0`` are ignored exactly.
        spacing: mm per tensor axis, used for ``|grad f|`` (default 1).
        radius: window radius in voxels (one for all axes or one per axis), >= 1.
        alpha: relative ridge, > 0 (see the module docstring).

    Returns:
        ``(N,)`` similarity in ``[0, 1]``.

    Raises:
        TypeError, ValueError: invalid inputs or options (e.g. more than one channel), empty support.

    Shape:
        fixed, moving, mask ``(N, 1, *S)``; output ``(N,)``.
    """
    fixed, moving, mask = check_inputs(fixed, moving, mask, channels=1)
    d = fixed.ndim - 2
    spacing = check_spacing(spacing, d)
    radius, alpha = _check_dense(radius, alpha)
    radii = per_axis(radius, d, "radius", integer=True)
    kernels = [kernel_1d(Kernel.BOX, 2 * r + 1, dtype=fixed.dtype, device=fixed.device) for r in radii]

    f = standardize(fixed, mask)
    g = standardize(safe_norm(gradient(f, spacing), 2), mask)
    m = standardize(moving, mask)
    if mask is None:
        stack = torch.cat([f, g, m, f * f, f * g, g * g, f * m, g * m, m * m], dim=1)
        sums = separable_filter(stack, kernels)
        weight_sum = filter_of_ones(fixed.shape[2:], kernels, fixed)
    else:
        wf, wg, wm = mask * f, mask * g, mask * m
        stack = torch.cat([mask, wf, wg, wm, wf * f, wf * g, wg * g, wf * m, wg * m, wm * m], dim=1)
        sums = separable_filter(stack, kernels)
        weight_sum, sums = sums[:, :1], sums[:, 1:]
    e = sums / weight_sum.clamp_min(torch.finfo(fixed.dtype).tiny)
    mf, mg, mm, eff, efg, egg, efm, egm, emm = e.unbind(1)
    c_mm = (emm - mm * mm).clamp_min(0)
    res = _residual(eff - mf * mf, efg - mf * mg, egg - mg * mg, efm - mf * mm, egm - mg * mm, c_mm, eff + egg, alpha)
    if mask is not None:
        w = mask[:, 0]
        c_mm, res = c_mm * w, res * w
    den = c_mm.flatten(1).sum(1)
    num = den - res.flatten(1).sum(1)
    return num / den.clamp_min(torch.finfo(fixed.dtype).tiny)


def _check_patch(radii: object, alpha: object, beta: object) -> tuple:
    if isinstance(radii, Real):
        radii = (radii,)
    try:
        radii = tuple(radii)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"radii: expected a sequence of window radii in voxels, got {radii!r}")
    if not radii or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in radii):
        raise ValueError(f"radii: expected one or more integer radii >= 1 (voxels), got {radii!r}")
    return radii, check_positive(alpha, "alpha"), check_positive(beta, "beta")


def lc2_patch(
    fixed_patches: torch.Tensor,
    moving_patches: torch.Tensor,
    *,
    radii: Sequence[int] = (3, 5, 7),
    alpha: float = 1e-3,
    beta: float = 1e-2,
    spacing: object = None,
) -> torch.Tensor:
    """Single-patch LC2 of patch pairs, averaged over several centred window radii (batched).

    For each radius r, take the centred window of ``2 r + 1`` voxels per axis (the centre voxel is
    ``P // 2`` per axis), with ``g = |grad f|`` computed on the whole fixed patch (central
    differences, one-sided on the patch border, per ``spacing`` unit). Regress the moving window on
    ``[f, g, 1]`` with the relative ridge ``alpha`` (module docstring) to get the mean squared
    residual ``res``; with ``var`` the moving window's (population) variance,
    ``score_r = clamp((var - res) / max(var, beta), 0, 1)``. The result is the mean of the scores over
    ``radii``. ``beta`` (intensity^2, for patches scaled to about ``[0, 1]``) sends nearly flat moving
    windows to a score near 0. Used as the teacher of learned LC2 approximations (DISA).

    Args:
        fixed_patches: ``(N, 1, *P)`` fixed patches (2D or 3D).
        moving_patches: ``(N, 1, *P)`` moving patches of the same size.
        radii: window radii in voxels; every window must fit in the patch.
        alpha: relative ridge, > 0.
        beta: variance floor of the denominator, > 0.
        spacing: mm per tensor axis for the gradient (default 1: intensity per voxel).

    Returns:
        ``(N,)`` scores in ``[0, 1]``.

    Raises:
        TypeError, ValueError: invalid inputs, options, or a window larger than the patch.

    Shape:
        fixed_patches, moving_patches ``(N, 1, *P)``; output ``(N,)``.
    """
    fixed, moving = check_pair(fixed_patches, moving_patches, channels=1)
    d = fixed.ndim - 2
    spacing = check_spacing(spacing, d)
    radii, alpha, beta = _check_patch(radii, alpha, beta)
    sizes = fixed.shape[2:]
    for r in radii:
        if any(s // 2 - r < 0 or s // 2 + r > s - 1 for s in sizes):
            raise ValueError(
                f"radii: window radius {r} (size {2 * r + 1}) does not fit in patches of size {tuple(sizes)}"
            )
    g = safe_norm(gradient(fixed, spacing), 2)
    scores = []
    for r in radii:
        crop = [slice(None), 0] + [slice(s // 2 - r, s // 2 + r + 1) for s in sizes]
        fw, gw, mw = (x[tuple(crop)].flatten(1) for x in (fixed, g, moving))
        scale = (fw * fw).mean(1) + (gw * gw).mean(1)
        fw = fw - fw.mean(1, keepdim=True)
        gw = gw - gw.mean(1, keepdim=True)
        mw = mw - mw.mean(1, keepdim=True)
        var = (mw * mw).mean(1)
        res = _residual(
            (fw * fw).mean(1), (fw * gw).mean(1), (gw * gw).mean(1), (fw * mw).mean(1), (gw * mw).mean(1), var,
            scale, alpha,
        )
        score = (var - res) / torch.clamp(var, min=beta)
        scores.append(score.clamp(0.0, 1.0))
    return torch.stack(scores, dim=1).mean(1)


def lc2_patch_map(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    *,
    radii: Sequence[int] = (3, 5, 7),
    alpha: float = 1e-3,
    beta: float = 1e-2,
    spacing: object = None,
) -> torch.Tensor:
    """:func:`lc2_patch` at every voxel: the score of the windows centred there, by box filters.

    ``out[x]`` equals ``lc2_patch`` of the patches of ``fixed`` and ``moving`` centred at ``x`` wherever
    the largest window and the gradient's stencil stay inside the images (``max(radii) + 1`` voxels from
    every border); nearer the borders the windows are cut (zero-padded sums), so those values are not
    the patch score. Used to train DISA on whole crops (many targets per network evaluation).

    Args:
        fixed, moving: ``(N, 1, *S)`` images on the same grid.
        radii, alpha, beta, spacing: as in :func:`lc2_patch`.

    Returns:
        ``(N, 1, *S)`` scores in ``[0, 1]``.
    """
    fixed, moving = check_pair(fixed, moving, channels=1)
    d = fixed.ndim - 2
    spacing = check_spacing(spacing, d)
    radii, alpha, beta = _check_patch(radii, alpha, beta)
    g = safe_norm(gradient(fixed, spacing), 2)
    f, m = fixed, moving
    stack = torch.cat([f, g, m, f * f, f * g, g * g, f * m, g * m, m * m], dim=1)
    scores = []
    for r in radii:
        kernels = [kernel_1d(Kernel.BOX, 2 * r + 1, dtype=fixed.dtype, device=fixed.device)] * d
        e = separable_filter(stack, kernels)  # window means (the box kernels sum to 1)
        mf, mg, mm, eff, efg, egg, efm, egm, emm = e.unbind(1)
        var = (emm - mm * mm).clamp_min(0)
        res = _residual(eff - mf * mf, efg - mf * mg, egg - mg * mg, efm - mf * mm, egm - mg * mm, var, eff + egg, alpha)
        scores.append(((var - res) / var.clamp_min(beta)).clamp(0.0, 1.0))
    return torch.stack(scores, dim=1).mean(1, keepdim=True)


class LC2(SimilarityMeasure):
    """Module form of the dense :func:`lc2`; ``loss = -lc2`` (in ``[-1, 0]``).

    Args:
        radius, alpha: see :func:`lc2`.
    """

    metric = Metric.LC2.value

    def __init__(self, *, radius: int | tuple[int, ...] = 3, alpha: float = 1e-3) -> None:
        super().__init__()
        self.radius, self.alpha = _check_dense(radius, alpha)

    def options(self) -> dict:
        return {"radius": self.radius, "alpha": self.alpha}

    def forward(self, fixed, moving, mask=None, *, spacing=None):
        """Similarity ``(N,)``; see :func:`lc2`."""
        return lc2(fixed, moving, mask=mask, spacing=spacing, **self.options())


register_similarity(Metric.LC2, LC2)
