"""MAD: a modality-agnostic distance learned from single-modality images (Sideri-Lampretsa et al., arXiv 2309.02875).

A network (:class:`omnireg.networks.mad.MADNet`) trained on random-convolution appearances predicts the
distance in mm between the centres of two patches. For registration, ``n_patches`` patches are placed on
the fixed image (centres in its foreground, patch grids at the model's fixed **physical** spacing, so the
measure does not depend on the images' voxel size); the moving image is sampled at the same points mapped
through the transform (pull), and

``distance(fixed, moving) = sum_k w_k d_k / sum_k w_k``, ``d_k = MADNet([fixed patch k, warped patch k])``,

``w_k = clamp((s_k - min_support) / (1 - min_support), 0, 1)`` with ``s_k`` the mean of the support mask
over patch k (the fraction of the patch inside the moving image and its mask): patches that are mostly
outside the moving image are down-weighted (weights are not differentiated). If every weight is 0 the
distance is ``2 * max_distance_mm`` of the model (a large constant). The similarity is
``forward = -distance`` (higher is better); :meth:`MAD.loss` is the distance in mm.

With ``aggregation = "trimmed"`` the ``trim`` fraction of the (weighted) patches with the largest predicted
distances also get weight 0 (a trimmed mean: a few patches on ambiguous structure do not dominate; the
selection is not differentiated).

``patch_scale = k`` samples the patches at ``k`` times the model's spacing (``k`` times its field of view)
and multiplies the predicted distances by ``k``: a coarse level with a wider capture range (the network
sees a coarser image of the same kind; the validation of the shipped 3D weights at ``k = 2`` is in
``data/weights/MAD.md``). Use it on a coarse pyramid level (shrink, smoothing) and follow it with ``k = 1``;
``k = 0.5`` (1.5 mm patches in 3D) resolves offsets below the ~4 mm where the response at ``k = 1`` is flat: a
refinement. :func:`omnireg.optim.mad_stages` builds that 2 / 1 / 0.5 schedule (``--metric mad``).

Patch protocol (used by the registration engine):
    :meth:`MAD.sample_locations` returns the world points of all patches laid out as an image
    ``(1, *L, D)`` with ``L = (K p, p, p)`` in 3D or ``(K p, p)`` in 2D (patch ``k`` occupies rows
    ``k p .. (k + 1) p - 1`` of the first axis) and the fixed image sampled there ``(1, 1, *L)``.
    The caller maps the points through its transform, samples the moving image there (linear, zeros
    outside) and calls ``loss(fixed_values, warped, mask=support)``. Inputs are expected in the robust
    ``[0, 1]`` intensity range (the engine's default normalisation; the training's too).

Example:
    >>> import torch
    >>> from omnireg.core import Grid
    >>> from omnireg.similarity import get_similarity
    >>> mad = get_similarity("mad", n_patches=4)          # the packaged 2D/3D weights, loaded when first used
    >>> img = torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(0))
    >>> pts, vals = mad.sample_locations(img, Grid((40, 40)), None, torch.Generator().manual_seed(0))
    >>> pts.shape, vals.shape
    (torch.Size([1, 96, 24, 2]), torch.Size([1, 1, 96, 24]))
    >>> mad.loss(vals, vals).shape
    torch.Size([1])
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..core import Grid, sample
from .base import EngineTraits, SimilarityMeasure, register_similarity
from .enums import Metric, Sampling

__all__ = ["AGGREGATIONS", "MAD", "mad_distance", "load_mad_model", "patch_offsets_mm"]

AGGREGATIONS = ("mean", "trimmed")  # the valid values of the ``aggregation`` option

log = logging.getLogger(__name__)


def load_mad_model(weights: str | Path | None, ndim: int, *, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The MAD network for ``ndim``-D images: a model file, a packaged name, or ``None`` (``mad_<ndim>d``).

    Loaded models are cached per file and device (parameters frozen, eval mode, float32).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a MAD model file, or a model for the other dimension (the message says which).
    """
    from ..networks.store import load_cached_model, resolve_weights

    model = load_cached_model(weights, "mad", ndim, device=device)
    if model.config.ndim != ndim:
        path = resolve_weights(weights, "mad", ndim)
        raise ValueError(f"weights: {path} holds a {model.config.ndim}D MAD model but the images are {ndim}D")
    return model


def patch_offsets_mm(size: int, spacing_mm: float, ndim: int, *, dtype=torch.float64) -> torch.Tensor:
    """Offsets (mm) of a ``size^ndim`` patch's points from its centre along the patch axes: ``(size, ..., size, ndim)``."""
    r = (torch.arange(size, dtype=dtype) - (size - 1) / 2) * spacing_mm
    return torch.stack(torch.meshgrid(*([r] * ndim), indexing="ij"), dim=-1)


def _to_patches(x: torch.Tensor, p: int, d: int, what: str) -> torch.Tensor:
    """``(N, 1, K p, p[, p])`` -> ``(N, K, p, ..., p)``."""
    n = x.shape[0]
    if x.ndim != d + 2 or x.shape[1] != 1 or x.shape[2] % p or tuple(x.shape[3:]) != (p,) * (d - 1):
        lay = "(N, 1, K*%d, %s)" % (p, ", ".join([str(p)] * (d - 1)))
        raise ValueError(f"{what}: expected the patch layout {lay} of MAD.sample_locations, got {tuple(x.shape)}")
    k = x.shape[2] // p
    return x.reshape(n, k, *([p] * d))


def mad_distance(
    model: torch.nn.Module,
    fixed: torch.Tensor,
    moving: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    min_support: float = 0.5,
    aggregation: str = "mean",
    trim: float = 0.25,
    patch_scale: float = 1.0,
) -> torch.Tensor:
    """Weighted mean predicted distance (mm) of the patch pairs of ``fixed`` and ``moving`` (module docstring).

    Args:
        model: a :class:`~omnireg.networks.mad.MADNet`.
        fixed: ``(N, 1, *L)`` fixed patches in the layout of :meth:`MAD.sample_locations` (a batch of 1
            is broadcast).
        moving: ``(N, 1, *L)`` the moving image sampled at the mapped points.
        mask: ``(N, 1, *L)`` support weights (1 inside the moving image and its mask), or ``None``.
        min_support: patches whose mean support is below this get weight 0.
        aggregation: ``mean`` or ``trimmed`` (module docstring).
        trim: for ``trimmed``: the fraction (of the total weight) of the largest distances dropped, in [0, 1).
        patch_scale: the patches' spacing over the model's; the predicted distances are multiplied by it.

    Returns:
        ``(N,)`` distances in mm (differentiable in ``moving`` and ``fixed``).

    Shape:
        fixed, moving, mask ``(N, 1, K p, p[, p])``; output ``(N,)``.
    """
    cfg = model.config
    d, p = cfg.ndim, cfg.patch_size
    if fixed.ndim != d + 2:
        raise ValueError(f"fixed: the MAD model is {d}D but the input has {fixed.ndim - 2} spatial axes")
    n = max(fixed.shape[0], moving.shape[0])
    f = _to_patches(fixed, p, d, "fixed").expand(n, -1, *([p] * d))
    m = _to_patches(moving, p, d, "moving").expand(n, -1, *([p] * d))
    k = f.shape[1]
    if m.shape[1] != k:
        raise ValueError(f"moving: expected {k} patches like fixed, got {m.shape[1]}")
    dtype = moving.dtype
    pair = torch.stack([f, m], dim=2).reshape(n * k, 2, *([p] * d))
    net_dtype = next(model.parameters()).dtype
    dist = float(patch_scale) * model(pair.to(net_dtype)).to(dtype).reshape(n, k)
    if mask is None:
        w = torch.ones(n, k, dtype=dtype, device=moving.device)
    else:
        s = _to_patches(mask.detach(), p, d, "mask").expand(n, -1, *([p] * d)).reshape(n, k, -1).mean(-1)
        w = ((s - min_support) / max(1e-6, 1 - min_support)).clamp(0, 1).to(dtype)
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation: expected one of {AGGREGATIONS}, got {aggregation!r}")
    if aggregation == "trimmed" and trim > 0:
        with torch.no_grad():
            order = dist.detach().argsort(dim=1)
            ws = w.gather(1, order)
            before = ws.cumsum(1) - ws  # weight of the smaller distances
            keep = (before < (1 - trim) * ws.sum(1, keepdim=True)).to(dtype)
            w = w * torch.zeros_like(w).scatter(1, order, keep)
    total = w.sum(1)
    large = torch.full_like(total, 2 * float(cfg.max_distance_mm) * float(patch_scale))
    mean = (w * dist).sum(1) / total.clamp_min(1e-12)
    return torch.where(total > 0, mean, large + 0 * dist.sum(1))


class MAD(SimilarityMeasure):
    """Modality-agnostic distance (module docstring): ``forward`` = -distance (mm), ``loss`` = distance.

    Args:
        weights: a MAD model file, a packaged name (``mad_3d``), or ``None`` for the packaged weights of
            the images' dimension.
        n_patches: number of patches ``K`` drawn by :meth:`sample_locations`.
        foreground: patch centres lie where the fixed image exceeds its 1 % quantile plus ``foreground``
            times its 1-99 % range (and inside the fixed mask).
        min_support: see :func:`mad_distance`.
        aggregation: ``mean`` (weighted mean of the patch distances) or ``trimmed`` (module docstring).
        trim: fraction dropped by ``trimmed`` aggregation, in [0, 1).
        patch_scale: patch spacing in units of the model's ``patch_spacing_mm`` (> 0; module docstring).

    Shape:
        fixed, moving, mask: ``(N, 1, K p, p[, p])`` (the layout of :meth:`sample_locations`); output ``(N,)``.
    """

    metric = Metric.MAD.value
    #: patches placed on the fixed image and resampled through the transform: rigid/affine stages only
    traits = EngineTraits(sampling=Sampling.PATCHES, linear_only=True)

    def __init__(
        self,
        *,
        weights: str | Path | None = None,
        n_patches: int = 64,
        foreground: float = 0.1,
        min_support: float = 0.5,
        aggregation: str = "mean",
        trim: float = 0.25,
        patch_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if isinstance(n_patches, bool) or not isinstance(n_patches, (int, np.integer)) or n_patches < 1:
            raise ValueError(f"n_patches: expected a positive integer, got {n_patches!r}")
        if not 0 <= float(foreground) < 1:
            raise ValueError(f"foreground: expected a fraction in [0, 1), got {foreground!r}")
        if not 0 <= float(min_support) < 1:
            raise ValueError(f"min_support: expected a fraction in [0, 1), got {min_support!r}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation: expected one of {AGGREGATIONS}, got {aggregation!r}")
        if not 0 <= float(trim) < 1:
            raise ValueError(f"trim: expected a fraction in [0, 1), got {trim!r}")
        if isinstance(patch_scale, bool) or not isinstance(patch_scale, (int, float)) or not patch_scale > 0:
            raise ValueError(f"patch_scale: expected a positive number, got {patch_scale!r}")
        if weights is not None and not isinstance(weights, (str, Path)):
            raise TypeError(f"weights: expected a path, a packaged name or None, got {type(weights).__name__}")
        self.weights = None if weights is None else str(weights)
        self.n_patches = int(n_patches)
        self.foreground = float(foreground)
        self.min_support = float(min_support)
        self.aggregation = str(aggregation)
        self.trim = float(trim)
        self.patch_scale = float(patch_scale)

    def options(self) -> dict:
        return {"weights": self.weights, "n_patches": self.n_patches, "foreground": self.foreground,
                "min_support": self.min_support, "aggregation": self.aggregation, "trim": self.trim,
                "patch_scale": self.patch_scale}

    def model(self, ndim: int, device: torch.device | str = "cpu") -> torch.nn.Module:
        """The (cached) network for ``ndim``-D images on ``device``."""
        return load_mad_model(self.weights, ndim, device=device)

    @torch.no_grad()
    def evaluate(self, fixed, movings, masks, *, grid, fixed_mask=None) -> list[float]:
        """Before/after values on the same seeded patches (seed 0), read from each warped moving image."""
        pts, fvals = self.sample_locations(fixed[:, :1], grid, fixed_mask, torch.Generator().manual_seed(0))
        out = []
        for m, w in zip(movings, masks):
            vox = grid.transform_points(pts.double(), "world", "voxel").to(m.dtype)
            support = torch.ones_like(m[:, :1]) if w is None else w
            both = sample(torch.cat([m[:, :1], support], 1), vox, interp="linear", padding="zeros")
            out.append(float(self(fvals, both[:, :1], mask=both[:, 1:])[0]))
        return out

    @torch.no_grad()
    def sample_locations(
        self,
        fixed: torch.Tensor,
        grid: Grid,
        mask: torch.Tensor | None,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n_patches`` patches on the fixed image (the patch protocol of the module docstring).

        Centres are distinct random foreground voxels (inside ``mask > 0`` if given); each patch is a
        ``p^D`` grid of spacing ``patch_scale * patch_spacing_mm`` (model config) along the fixed grid's axes.

        Args:
            fixed: ``(1, 1, *S)`` the fixed image on ``grid``.
            grid: the fixed image's grid (world mm).
            mask: ``(1, 1, *S)`` fixed mask weights, or ``None``.
            generator: source of the random centres.

        Returns:
            ``(points_world (1, *L, D), fixed_values (1, 1, *L))`` with ``L = (K p, p[, p])``; the points
            are world mm in fixed space and follow ``fixed``'s dtype and device.

        Raises:
            ValueError: shapes that do not match ``grid``; a model of the other dimension.
        """
        d = grid.ndim
        if fixed.ndim != d + 2 or fixed.shape[0] != 1 or tuple(fixed.shape[2:]) != tuple(grid.shape):
            raise ValueError(f"fixed: expected (1, C, {', '.join(map(str, grid.shape))}), got {tuple(fixed.shape)}")
        cfg = self.model(d).config
        p, k = cfg.patch_size, self.n_patches
        vals = fixed[0, 0].reshape(-1)
        step = max(1, vals.numel() // 200_000)
        lo, hi = torch.quantile(vals[::step].float(), torch.tensor([0.01, 0.99], dtype=torch.float32, device=vals.device))
        ok = vals > lo + self.foreground * (hi - lo)
        if mask is not None:
            inside = mask.reshape(-1) > 0
            ok = ok & inside
            if not bool(ok.any()):
                ok = inside
        if not bool(ok.any()):
            ok = torch.ones_like(vals, dtype=torch.bool)
        cand = ok.nonzero().reshape(-1).cpu()
        if cand.numel() >= k:
            idx = cand[torch.randperm(cand.numel(), generator=generator)[:k]]
        else:
            idx = cand[torch.randint(cand.numel(), (k,), generator=generator)]
        vox = torch.stack(torch.unravel_index(idx, tuple(grid.shape)), dim=1).double()
        centres = torch.as_tensor(grid.transform_points(vox, "voxel", "world"), dtype=torch.float64)
        direction = torch.tensor(np.array(grid.direction), dtype=torch.float64)
        spacing = cfg.patch_spacing_mm * self.patch_scale
        off = patch_offsets_mm(p, spacing, d) @ direction.T  # patch axes along the grid's axes
        pts = centres.reshape(k, *([1] * d), d) + off.unsqueeze(0)
        pts = pts.reshape(1, k * p, *([p] * (d - 1)), d)
        vox_pts = torch.as_tensor(grid.transform_points(pts, "world", "voxel"))
        values = sample(fixed[:, :1], vox_pts.to(fixed.dtype), interp="linear", padding="zeros")
        return pts.to(dtype=fixed.dtype, device=fixed.device), values

    def forward(
        self,
        fixed: torch.Tensor,
        moving: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        spacing: object = None,
    ) -> torch.Tensor:
        """Similarity ``-distance`` (mm) of patch pairs in the layout of :meth:`sample_locations`.

        Args:
            fixed: ``(N, 1, K p, p[, p])`` fixed patches (``N = 1`` is broadcast).
            moving: ``(N, 1, K p, p[, p])`` moving image sampled at the mapped patch points.
            mask: ``(N, 1, K p, p[, p])`` support weights, or ``None``.
            spacing: ignored (patches are at the model's physical spacing).

        Returns:
            ``(N,)`` minus the weighted mean predicted distance in mm.
        """
        if not isinstance(fixed, torch.Tensor) or not isinstance(moving, torch.Tensor):
            raise TypeError("fixed, moving: expected torch tensors")
        d = fixed.ndim - 2
        if d not in (2, 3):
            raise ValueError(f"fixed: expected (N, 1, K*p, p[, p]) patches, got shape {tuple(fixed.shape)}")
        model = self.model(d, moving.device)
        return -mad_distance(model, fixed, moving, mask=mask, min_support=self.min_support,
                             aggregation=self.aggregation, trim=self.trim, patch_scale=self.patch_scale)


register_similarity(Metric.MAD, MAD)
