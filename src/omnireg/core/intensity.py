"""Intensity normalisation shared by registration and training."""

from __future__ import annotations

import torch

__all__ = ["robust_normalize"]


def robust_normalize(
    data: torch.Tensor, mask: torch.Tensor | None = None, *, quantiles: tuple[float, float] = (0.005, 0.995)
) -> torch.Tensor:
    """Map the robust intensity range of ``data`` ``(N, C, *S)`` (first channel) to about ``[0, 1]``.

    ``lo``/``hi`` are the ``quantiles`` of the first channel's values (inside ``mask > 0`` if given, on
    at most 2 million evenly spaced samples); the result is ``(data - lo) / (hi - lo)`` in float32
    (not clipped). A constant image falls back to its min/max (and a unit scale).
    """
    x = data.float()
    vals = x[:, :1] if mask is None else x[:, :1][mask > 0]
    vals = vals.reshape(-1)
    if vals.numel() > 2_000_000:
        idx = torch.linspace(0, vals.numel() - 1, 2_000_000, device=vals.device).long()
        vals = vals[idx]
    # both quantiles from one sort (two calls sort twice: 0.2 s per 1M voxels on 2 cores)
    lo, hi = torch.quantile(vals, torch.tensor(quantiles, dtype=vals.dtype, device=vals.device))
    if not torch.isfinite(lo) or not torch.isfinite(hi) or hi <= lo:
        lo, hi = vals.min(), vals.max()
    scale = (hi - lo) if hi > lo else torch.ones((), device=x.device)
    return (x - lo) / scale
