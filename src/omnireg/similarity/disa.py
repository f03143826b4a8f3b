"""DISA: a learned, differentiable approximation of a patch similarity (LC2 by default).

Ronchetti et al., "DISA: DIfferentiable Similarity Approximation for Universal Multimodal
Registration", arXiv 2307.09931. A small CNN ``f`` (:class:`omnireg.networks.disa.DISANet`) is trained
so that the dot product of the feature vectors of two patches approximates their exact similarity
(:mod:`omnireg.training.disa`). The similarity of two images on the same grid is

``DISA(F, M) = sum_x w(x) <f_F(x), f_M(x)> / sum_x w(x)``

where ``f_F``, ``f_M`` are the norm-clipped feature maps (16 channels, stride 4) and ``w`` the mask
weights at the feature positions: a value in ``[-1, 1]``, higher is better. In registration the
feature maps of both images are computed **once** per pyramid level (:meth:`DISA.feature_level`) and
the moving features are warped (not recomputed) at every iteration, which makes DISA cheap, smooth
and differentiable in the transform.

Resolution: the network saw patches with voxels of about ``patch_spacing_mm`` (2 mm +-25 % for the
shipped models). Images with voxels finer than half of it are smoothed and resampled to half of it
before the features are computed (``resample=True``); coarser images are used as they are (the
registration pyramid provides the coarse levels). The feature map lives on the stride-4 grid
(:func:`omnireg.networks.disa.feature_grid`); with ``upsample=True`` it is interpolated back onto the
image grid (more samples, same information). Measured on the bundled 2D T1/PD pair (1 mm) with a known
affine (``benchmarks/disa.py``; README): features of the 1 mm image at stride 4 (4 mm) recover it to
about 1 mm in 0.5 s, resampling to the full 2 mm first gives 6.8 mm (a feature grid of 8 mm is too
coarse), and upsampling the features to the image grid is 4x slower and no more accurate (1.1 mm), so
neither is the default.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from ..core import Grid, sample
from ..core.filters import gaussian_blur
from ._common import check_mask, check_pair, check_spacing, masks_per_moving
from .base import EngineTraits, SimilarityMeasure, register_similarity
from .enums import Metric, Sampling

__all__ = ["DISA", "DISAFeatures", "feature_dot", "norm_restore"]

log = logging.getLogger(__name__)

def feature_dot(fixed_features: torch.Tensor, moving_features: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean over voxels of the dot product of feature vectors (sum over channels).

    Args:
        fixed_features, moving_features: ``(N, C, *S)`` feature maps on the same grid.
        mask: ``(N, 1, *S)`` non-negative weights or ``None``.

    Returns:
        ``(N,)``: ``sum_x w(x) <a(x), b(x)> / sum_x w(x)``.
    """
    a, b = check_pair(fixed_features, moving_features)
    w = check_mask(mask, a)
    dot = (a * b).sum(1, keepdim=True)
    if w is None:
        return dot.flatten(1).mean(1)
    return (dot * w).flatten(1).sum(1) / w.flatten(1).sum(1)


class DISAFeatures(SimilarityMeasure):
    """The similarity of precomputed DISA feature maps (:func:`feature_dot`); used by the engine."""

    metric = "disa-features"
    #: a point-wise comparison (linear stages may use a random subset of the fixed voxels), averaged by the
    #: engine over the whole fixed domain (the dot product is 0 where the warped moving features are missing),
    #: not over the overlap
    traits = EngineTraits(sampling=Sampling.POINTS, mean_over_fixed=True)

    def forward(self, fixed, moving, mask=None, *, spacing=None):
        """``(N,)`` weighted mean feature dot product.

        ``moving`` may carry one channel more than ``fixed``: the interpolated norm of the moving feature
        vectors (:meth:`DISA.feature_level` with ``moving=True``); the interpolated vectors are then rescaled
        to that norm (:func:`norm_restore`).
        """
        if moving.ndim == fixed.ndim and moving.shape[1] == fixed.shape[1] + 1:
            moving = norm_restore(moving)
        return feature_dot(fixed, moving, mask=mask)


def norm_restore(features: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Interpolated feature vectors ``(N, C + 1, ...)`` (last channel: the interpolated norm of the vectors)
    rescaled to that norm -> ``(N, C, ...)``.

    Linear interpolation between two feature nodes shrinks the vector (its norm is below the interpolated
    norm wherever the directions differ), so without this the dot product is largest where the sample
    points fall on the moving image's feature nodes: a bias towards shifts that align the two stride-4
    lattices (measured: a 3D registration started at the truth ended 1 voxel per axis off).
    """
    vec, norm = features[:, :-1], features[:, -1:]
    length = vec.norm(dim=1, keepdim=True)
    return vec * (norm / length.clamp_min(eps)) * (length > eps).to(vec.dtype)


def load_disa_model(weights: str | Path | None, ndim: int):
    """The DISA network for ``ndim``-D images from ``weights`` (a file, a packaged name, or ``None``: shipped)."""
    from ..networks.store import load_cached_model, resolve_weights

    model = load_cached_model(weights, "disa", ndim)
    if model.config.ndim != ndim:
        path = resolve_weights(weights, "disa", ndim)
        raise ValueError(f"weights: {path} is a {model.config.ndim}D DISA model, the images are {ndim}D")
    return model


class DISA(SimilarityMeasure):
    """DISA similarity (module docstring): mean dot product of learned feature maps, in ``[-1, 1]``.

    Args:
        weights: a model file, a packaged model name, or ``None`` for the shipped ``disa_2d``/``disa_3d``.
        upsample: interpolate the stride-4 feature maps back onto the image grid.
        resample: resample images with voxels finer than half the model's patch spacing to that spacing first.
        max_voxels: slab size of the chunked feature extraction (bounds peak memory).
        fixed_points: where registration compares features: ``nodes`` (the fixed stride-4 feature
            positions; default) or ``dense`` (every fixed voxel, fixed features interpolated there).
            With ``nodes``, when the moving feature grid coincides with the fixed one (same geometry,
            or origins a multiple of 4 voxels apart) every sample sits on a moving node at the identity,
            which interpolation made a spurious optimum before ``norm_restore``; ``dense`` avoided that, but
            measured on the 2D T1/PD known affine it recovered 11.2 mm against 0.98 mm for ``nodes``.
        image_spacing_mm: resample both images to this isotropic spacing (finer or coarser) before the
            features are computed, instead of the ``resample`` rule. Measured (3D bundled T1/T2w, known
            affine, ``benchmarks/disa.py`` case): 1.0 mm with one pyramid level recovers it to 1.6 mm against
            3.1 mm at the native 2 mm, but computing features of 8x the voxels is about 10x slower.
        norm_restore: rescale the interpolated moving feature vectors to the interpolated norm
            (:func:`norm_restore`; default). Without it the similarity is biased towards transforms that put
            the fixed feature nodes on moving nodes (measured: a 3D registration started at the truth ended
            1 voxel off per axis, the affine benchmark case on SPM T1/T2 degenerated to 119 mm; with it 3.2 mm).
        moving_stride: 4 (the network's stride), 2 or 1: a denser moving feature map, the network's output
            at every ``stride``-th voxel (:meth:`omnireg.networks.disa.DISANet.dense_forward`, one "a trous"
            pass; measured on the 130 x 135 x 150 moving grid of the 3D benchmark, one thread: stride 4 3.7 s,
            stride 2 5.4 s, stride 1 74 s, against 35 s and 294 s for evaluating the network on shifted copies
            of the image).
        reorient: in registration, recompute the moving features in the fixed frame through the current
            estimate (:mod:`omnireg.optim.reorient`) at every level, before every start of the global search
            and every ``reorient`` iterations of a linear stage while the orientation changed by more than a
            voxel at the field of view's corners (0: off, the moving features of the image as stored). The
            network is not rotation-equivariant: without this a pose 30 deg from the identity compares
            features of differently oriented anatomy. Measured (``benchmarks/disa.py --quick``, README): on the
            bundled T1/T2w pair the two 30 deg capture poses end at 1.4 mm instead of 2.6-2.8 mm (capture
            4/6 instead of 2/6), but the 60 deg poses diverge (50-57 mm instead of 4.3-4.6 mm) and the known
            affine (moments + global search) ends at 2.65 mm instead of 2.32 mm in about twice the time; on SPM
            T1/T2 no gain (capture 0/6 either way, known affine 3.19 against 2.38 mm). Off by default.
    """

    metric = Metric.DISA.value

    def __init__(
        self,
        *,
        weights: str | Path | None = None,
        upsample: bool = False,
        resample: bool = True,
        max_voxels: int = 4_000_000,
        fixed_points: str = "nodes",
        image_spacing_mm: float | None = None,
        norm_restore: bool = True,
        moving_stride: int = 4,
        reorient: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(reorient, bool) or not isinstance(reorient, (int, np.integer)) or reorient < 0:
            raise ValueError(f"reorient: expected a non-negative number of iterations (0: off), got {reorient!r}")
        self.reorient = int(reorient)
        if weights is not None and not isinstance(weights, (str, Path)):
            raise TypeError(f"weights: expected a path, a packaged model name or None, got {type(weights).__name__}")
        if fixed_points not in ("nodes", "dense"):
            raise ValueError(f"fixed_points: expected 'nodes' or 'dense', got {fixed_points!r}")
        self.fixed_points = fixed_points
        if image_spacing_mm is not None and not float(image_spacing_mm) > 0:
            raise ValueError(f"image_spacing_mm: expected a positive number or None, got {image_spacing_mm!r}")
        self.image_spacing_mm = None if image_spacing_mm is None else float(image_spacing_mm)
        self.norm_restore = bool(norm_restore)
        if moving_stride not in (1, 2, 4) or isinstance(moving_stride, bool):
            raise ValueError(f"moving_stride: expected 1, 2 or 4, got {moving_stride!r}")
        self.moving_stride = int(moving_stride)
        self.weights = None if weights in (None, "") else str(weights)
        self.upsample = bool(upsample)
        self.resample = bool(resample)
        if int(max_voxels) < 1000:
            raise ValueError(f"max_voxels: expected at least 1000, got {max_voxels!r}")
        self.max_voxels = int(max_voxels)

    def options(self) -> dict:
        return {"weights": self.weights, "upsample": self.upsample, "resample": self.resample, "max_voxels": self.max_voxels,
                "fixed_points": self.fixed_points, "image_spacing_mm": self.image_spacing_mm,
                "norm_restore": self.norm_restore, "moving_stride": self.moving_stride, "reorient": self.reorient}

    def model(self, ndim: int):
        """The network used for ``ndim``-D images (loaded once, cached)."""
        return load_disa_model(self.weights, ndim)

    # ---------------------------------------------------------------- features on a grid
    def feature_level(self, data: torch.Tensor, grid: Grid, *, dense: bool | None = None,
                      moving: bool = False) -> tuple[torch.Tensor, Grid]:
        """Feature maps of an image batch ``(N, 1, *S)`` on ``grid`` and the grid they live on.

        Args:
            data, grid: the image and its grid.
            dense: interpolate the features onto ``grid`` (default: the ``upsample`` option). The
                registration engine asks for the fixed image's features at its ``fixed_points`` and for
                stride-4 features of the moving image (interpolated at the transformed points).
            moving: features of the moving image, to be interpolated at transformed points: with the
                ``norm_restore`` option a 17th channel holds the feature norm (:func:`norm_restore`).

        Returns:
            ``(features (N, 16[+1], *S_f), grid_f)``: the stride-4 grid of the (possibly resampled) image,
            or ``grid`` itself when dense. Computed without gradients, in slabs.
        """
        dense = self.upsample if dense is None else bool(dense)
        from ..networks.disa import extract_features, feature_grid

        model = self.model(grid.ndim)
        src, src_grid = self._at_model_spacing(data[:, :1], grid, model.config.patch_spacing_mm)
        param = next(model.parameters())
        model = model.to(device=data.device, dtype=data.dtype if data.dtype.is_floating_point else param.dtype)
        stride = self.moving_stride if moving and not dense else 4
        feats = extract_features(model, src.to(param.dtype if not data.dtype.is_floating_point else data.dtype),
                                 max_voxels=self.max_voxels, stride=stride)
        fgrid = feature_grid(src_grid, stride)
        if moving and self.norm_restore:
            feats = torch.cat([feats, feats.norm(dim=1, keepdim=True)], dim=1)
        if not dense:
            return feats, fgrid
        pts = grid.points("world", dtype=torch.float64, device=data.device)
        vox = fgrid.transform_points(pts, "world", "voxel").to(feats.dtype)
        return sample(feats, vox.unsqueeze(0).expand(feats.shape[0], *vox.shape), interp="linear", padding="border"), grid

    def _at_model_spacing(self, data: torch.Tensor, grid: Grid, target_mm: float) -> tuple[torch.Tensor, Grid]:
        spacing = np.asarray(grid.spacing, dtype=float)
        if self.image_spacing_mm is not None:
            new = np.full_like(spacing, self.image_spacing_mm)
            if np.allclose(new, spacing):
                return data, grid
        else:
            target_mm = 0.5 * target_mm
            if not self.resample or spacing.min() >= target_mm:
                return data, grid
            new = np.maximum(spacing, target_mm)
        sigma_vox = [0.5 * math.sqrt(max(t * t - s * s, 0.0)) / s for t, s in zip(new, spacing)]
        smooth = gaussian_blur(data.float(), sigma_vox) if any(s > 0 for s in sigma_vox) else data.float()
        coarse = grid.with_spacing(new)
        pts = grid.transform_points(coarse.points("world", dtype=torch.float64, device=data.device), "world", "voxel")
        out = sample(smooth, pts.unsqueeze(0).to(smooth.dtype).expand(data.shape[0], *pts.shape), interp="linear", padding="border")
        return out.to(data.dtype), coarse

    def feature_similarity(self) -> SimilarityMeasure:
        """The measure applied to precomputed feature maps (:class:`DISAFeatures`)."""
        return DISAFeatures()

    @property
    def traits(self) -> EngineTraits:
        """Features once per level (stride 4), reoriented every :attr:`reorient` iterations when set."""
        return EngineTraits(sampling=Sampling.FEATURES, reorient=self.reorient)

    def features(self, data: torch.Tensor, grid: Grid, *, moving: bool) -> tuple[torch.Tensor, Grid]:
        """The engine's feature maps: the fixed image's at :attr:`fixed_points`, the moving image's on the
        stride-4 grid with the norm channel (:meth:`feature_level`)."""
        if moving:
            return self.feature_level(data[:, :1], grid, dense=False, moving=True)
        return self.feature_level(data[:, :1], grid, dense=self.fixed_points == "dense")

    def evaluate(self, fixed, movings, masks, *, grid, fixed_mask=None) -> list[float]:
        """Before/after values with the fixed image's features computed once (:meth:`scores`)."""
        return [float(v[0]) for v in self.scores(fixed, movings, masks, spacing=grid.spacing)]

    # ---------------------------------------------------------------- dense form
    def forward(self, fixed, moving, mask=None, *, spacing=None):
        """Similarity ``(N,)`` of two images on the same grid (``spacing`` in mm per axis; 1 mm if ``None``).

        Differentiable in both images when they require gradients (features then computed in one piece).
        """
        fixed, moving = check_pair(fixed, moving, channels=1)
        if not (fixed.requires_grad or moving.requires_grad):
            return self.scores(fixed, [moving], [mask], spacing=spacing)[0]
        from ..networks.disa import clip_norm

        d = fixed.ndim - 2
        sp = check_spacing(spacing, d)
        w = check_mask(mask, fixed)
        if self.upsample or self.image_spacing_mm is not None or (self.resample and min(sp) < 0.5 * self.model(d).config.patch_spacing_mm):
            raise ValueError("fixed: gradients through DISA's dense form need upsample=False, image_spacing_mm=None "
                             "and images at the model's spacing")
        model = self.model(d).to(device=fixed.device, dtype=fixed.dtype)
        ff, mf = clip_norm(model(fixed)), clip_norm(model(moving))
        return feature_dot(ff, mf, mask=_mask_on_features(w, ff, Grid(tuple(fixed.shape[2:]), spacing=sp), None))

    @torch.no_grad()
    def scores(self, fixed, movings, masks=None, *, spacing=None) -> list[torch.Tensor]:
        """``[forward(fixed, m, mask) for m, mask in zip(movings, masks)]`` without gradients, with the fixed
        image's features computed once (the engine's similarity before and after registration)."""
        masks = masks_per_moving(masks, movings)
        d = fixed.ndim - 2
        grid = Grid(tuple(fixed.shape[2:]), spacing=check_spacing(spacing, d))
        ff = fgrid = None
        out = []
        for moving, mask in zip(movings, masks):
            f, m = check_pair(fixed, moving, channels=1)
            w = check_mask(mask, f)
            if ff is None:
                ff, fgrid = self.feature_level(f, grid)
            mf, _ = self.feature_level(m, grid)
            out.append(feature_dot(ff, mf, mask=_mask_on_features(w, ff, grid, fgrid)))
        return out


def _mask_on_features(w: torch.Tensor | None, ff: torch.Tensor, grid: Grid, fgrid: Grid | None) -> torch.Tensor | None:
    """A mask on the image grid taken to the feature positions (nearest; ``fgrid`` None: every 4th voxel)."""
    if w is None or tuple(w.shape[2:]) == tuple(ff.shape[2:]):
        return w
    if fgrid is None:
        w = w[(slice(None), slice(None)) + (slice(None, None, 4),) * grid.ndim]
    else:
        pts = grid.transform_points(fgrid.points("world", dtype=torch.float64, device=w.device), "world", "voxel")
        w = sample(w, pts.unsqueeze(0).to(w.dtype).expand(w.shape[0], *pts.shape), interp="nearest", padding="zeros")
    if bool((w.flatten(1).sum(1) <= 0).any()):
        raise ValueError("mask: empty support at the feature positions (stride 4)")
    return w


register_similarity(Metric.DISA, DISA)
