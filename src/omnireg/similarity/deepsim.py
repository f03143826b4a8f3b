"""DeepSim: a semantic similarity from the features of a frozen segmentation network.

Czolbe, Krause, Feragen, "Semantic similarity metrics for learned image registration" (MIDL 2021). A
segmenter (:class:`omnireg.networks.segmenter.Segmenter`) is trained first and frozen; the similarity of
two images on the same grid is the mean, over the chosen feature levels ``l in L`` and over voxels, of the
cosine similarity of their feature vectors::

    DeepSim(F, M) = 1/|L| sum_{l in L} [ sum_x w_l(x) cos(f_l(F)(x), f_l(M)(x)) / sum_x w_l(x) ]
    cos(a, b)     = <a, b> / (max(|a|, eps) max(|b|, eps)),   eps = 1e-6

A level is an encoder level ``l`` (``(N, C_l, *ceil(S / 2**l))``: 32, 64, 128 channels at strides 1, 2, 4
for the default segmenter; the reference compares all of them) or ``"decoder"``, the segmenter's last
decoder layer (16 channels at full resolution, the input of its class head). ``w_l`` are the mask weights
averaged over each level's voxel cells (``w = 1`` without a mask). The value lies in ``[-1, 1]`` (higher is
better), is 1 for two identical images and is symmetric in ``F`` and ``M``; ``loss = -DeepSim`` (the base
class's convention). The segmenter's parameters never receive gradients; gradients flow through it to the
images.

Which levels (decided by measurement): omnireg's segmenters are trained on images synthesised from label
maps with a random contrast per image, so that DeepSim can compare images of different contrasts. The
encoder's levels do not reach that: on 2D phantoms (a segmenter trained 300 steps, validation Dice 0.69;
``tests/similarity/test_deepsim_trained.py``) the mean encoder cosine of two contrasts of the *same* anatomy
(0.78, 0.73, 0.76 at levels 0-2) is below that of one contrast shifted by a smooth 2-voxel deformation
(0.84, 0.82, 0.86), and a B-spline registration across contrasts with the encoder levels lowered the label
Dice from 0.68 to 0.27-0.33; the last decoder layer ranks them right (0.95 against 0.94; 0.88 for the other
contrast misaligned) and the same registration raised the Dice to 0.76 (engine) / 0.81 (network-style
optimisation; MI: 0.87). The default is therefore ``levels=("decoder",)``; ``levels=(0, 1, 2)`` is the
reference's choice (single-contrast data).

Frame and intensities (decided here, the same in every mode): images are scaled per item to their robust
[0.5, 99.5] % range and clipped to ``[0, 1]`` (``normalize=True``; the synthesised training images lie in
``[0, 1]``). Tensors given without a grid (:meth:`DeepSim.forward`, :meth:`DeepSim.scores`) are taken to be
in the segmenter's frame (tensor axes along its training directions); when their ``spacing`` differs from
the segmenter's by more than 10 % they are resampled (differentiably) to its spacing first. Images given
with a grid (:meth:`DeepSim.feature_level`, the registration engine) are resampled into the segmenter's
frame and spacing (:func:`omnireg.networks.segmenter.model_grid`), whatever their orientation.

Two modes:

- **Training loss** of registration networks (``--loss deepsim`` or ``deepsim:2,ncc:1`` in
  ``omnireg train registration``): :meth:`DeepSim.forward` computes the features of the fixed and of the
  warped moving image with the network at every step (as the reference does).
- **Registration engine** (``omnireg register --metric deepsim``): the engine-facing part below
  (:meth:`DeepSim.feature_level`, :meth:`DeepSim.feature_similarity`, :meth:`DeepSim.scores`; the same
  attributes DISA offers) computes the features of both images **once per pyramid level** and warps the
  moving features, not the image, at every iteration. All chosen levels are brought onto the grid of encoder
  level ``engine_level`` (default 1: stride 2, 4 mm for a 2 mm segmenter; finer levels and the decoder
  average-pooled, coarser ones interpolated linearly, each vector scaled to unit length first) and
  concatenated; :class:`DeepSimFeatures` takes the mean over levels of the per-level cosine of the
  interpolated vectors. Memory: ``sum C_l`` floats per node of that grid per image (16 for the decoder,
  224 for the three encoder levels: about 100 MB for a 2 mm brain).
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core import Grid, sample
from ._common import check_mask, check_pair, check_spacing, masks_per_moving
from .base import EngineTraits, SimilarityMeasure, register_similarity
from .enums import Metric, Sampling

__all__ = ["DeepSim", "DeepSimFeatures", "cosine_map", "deepsim_features", "pool_mask"]

log = logging.getLogger(__name__)

EPS = 1e-6
DEFAULT_LEVELS: tuple[int | str, ...] = ("decoder",)
"""The feature levels compared by default (module docstring: measured against the encoder levels)."""


def cosine_map(a: torch.Tensor, b: torch.Tensor, *, eps: float = EPS) -> torch.Tensor:
    """Cosine similarity of the feature vectors at every voxel: ``(N, C, *S)`` twice -> ``(N, 1, *S)``."""
    dot = (a * b).sum(1, keepdim=True)
    na = a.norm(dim=1, keepdim=True).clamp_min(eps)
    nb = b.norm(dim=1, keepdim=True).clamp_min(eps)
    return dot / (na * nb)


def pool_mask(mask: torch.Tensor, level: int) -> torch.Tensor:
    """Mask weights ``(N, 1, *S)`` averaged over the cells of encoder level ``level``: ``(N, 1, *ceil(S / 2**l))``.

    A cell that sticks out of the image (the segmenter zero-pads at the high end) gets the mean over its
    voxels inside the image, so a mask of ones stays ones (the same as no mask).
    """
    f = 2**int(level)
    if f == 1:
        return mask
    pad: list[int] = []
    for s in reversed(mask.shape[2:]):
        pad += [0, (-s) % f]
    pool = F.avg_pool3d if mask.ndim == 5 else F.avg_pool2d
    inside = pool(F.pad(torch.ones_like(mask[:1]), pad), f)
    return pool(F.pad(mask, pad), f) / inside


def deepsim_features(fixed_features: Sequence[torch.Tensor], moving_features: Sequence[torch.Tensor], *,
                     mask: torch.Tensor | None = None, eps: float = EPS) -> torch.Tensor:
    """DeepSim of two lists of feature maps (module docstring): ``(N,)``.

    Args:
        fixed_features, moving_features: per level ``(N, C_l, *S_l)``, the same levels in the same order
            (encoder level ``l`` has ``S_l = ceil(S / 2**l)``).
        mask: ``(N, 1, *S)`` weights on the image grid (pooled onto each level by :func:`pool_mask`; the
            level of a map is read from its size), or ``None``.
        eps: the norm floor of the cosine.

    Raises:
        ValueError: lists of different lengths or shapes; a mask whose support vanishes on a level.
    """
    if len(fixed_features) != len(moving_features) or not fixed_features:
        raise ValueError(f"moving_features: expected {len(fixed_features)} levels like fixed_features, got {len(moving_features)}")
    total = None
    for a, b in zip(fixed_features, moving_features):
        if a.shape[1:] != b.shape[1:]:
            raise ValueError(f"moving_features: level shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
        cos = cosine_map(a, b, eps=eps)
        if mask is None:
            value = cos.flatten(1).mean(1)
        else:
            w = _mask_for(mask, tuple(a.shape[2:]))
            support = w.flatten(1).sum(1)
            if bool((support.detach() <= 0).any()):
                raise ValueError("mask: empty support on a feature level")
            value = (cos * w).flatten(1).sum(1) / support
        total = value if total is None else total + value
    return total / len(fixed_features)


def _mask_for(mask: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``mask`` pooled onto the encoder level whose maps have ``shape`` (``ceil(S / 2**l)``)."""
    size = tuple(mask.shape[2:])
    for level in range(0, 1 + max(1, int(math.log2(max(size))) + 1)):
        if tuple(math.ceil(s / 2**level) for s in size) == shape:
            return pool_mask(mask, level)
    raise ValueError(f"mask: shape {tuple(mask.shape)} does not pool onto a feature map of spatial shape {shape}")


class DeepSimFeatures(SimilarityMeasure):
    """The similarity of precomputed, concatenated DeepSim feature maps (engine mode; module docstring).

    Args:
        groups: channels per level in the concatenation, e.g. ``(32, 64, 128)``.

    ``forward(fixed, moving, mask)`` is the weighted mean over voxels of the mean over groups of the
    per-group cosine of the feature vectors; ``(N,)``.
    """

    metric = "deepsim-features"
    #: a point-wise comparison (linear stages may use a random subset of the fixed voxels), averaged by the engine
    #: over the whole fixed domain (the cosine is 0 where warped features are missing)
    traits = EngineTraits(sampling=Sampling.POINTS, mean_over_fixed=True)

    def __init__(self, groups: Sequence[int]) -> None:
        super().__init__()
        self.groups = tuple(int(g) for g in groups)

    def options(self) -> dict:
        return {"groups": self.groups}

    def forward(self, fixed, moving, mask=None, *, spacing=None):
        """``(N,)``; see the class docstring."""
        a, b = check_pair(fixed, moving)
        if a.shape[1] != sum(self.groups):
            raise ValueError(f"fixed: expected {sum(self.groups)} feature channels, got {a.shape[1]}")
        w = check_mask(mask, a)
        cos = sum(cosine_map(x, y) for x, y in zip(a.split(self.groups, 1), b.split(self.groups, 1))) / len(self.groups)
        if w is None:
            return cos.flatten(1).mean(1)
        return (cos * w).flatten(1).sum(1) / w.flatten(1).sum(1)


def load_segmenter(weights: str | Path | None, ndim: int, device: torch.device | str = "cpu"):
    """The frozen segmenter for ``ndim``-D images (a file, a packaged name, or ``None``: shipped ``segmenter_<D>d``)."""
    from ..networks.store import load_cached_model, resolve_weights

    model = load_cached_model(weights, "segmenter", ndim, device=device)
    if model.config.ndim != ndim:
        raise ValueError(f"weights: {resolve_weights(weights, 'segmenter', ndim)} is a {model.config.ndim}D segmenter, the images are {ndim}D")
    return model


class DeepSim(SimilarityMeasure):
    """DeepSim similarity (module docstring): mean cosine of frozen segmenter features, in ``[-1, 1]``.

    Args:
        weights: a segmenter model file, a packaged model name, or ``None`` for the shipped
            ``segmenter_2d`` / ``segmenter_3d``.
        levels: feature levels compared: encoder levels (ints) and/or ``"decoder"`` (default
            ``("decoder",)``; the reference's choice is every encoder level, ``(0, 1, 2)``).
        normalize: scale every image to its robust ``[0, 1]`` range (clipped) before the segmenter.
        engine_level: the encoder level whose grid the registration engine compares features on.
    """

    metric = Metric.DEEPSIM.value

    def __init__(self, *, weights: str | Path | None = None, levels: Sequence[int | str] | None = None,
                 normalize: bool = True, engine_level: int = 1) -> None:
        super().__init__()
        if weights is not None and not isinstance(weights, (str, Path)):
            raise TypeError(f"weights: expected a path, a packaged model name or None, got {type(weights).__name__}")
        self.weights = None if weights in (None, "") else str(weights)
        if levels is not None:
            from ..networks.segmenter import parse_levels

            levels = parse_levels(levels)
        self.levels = DEFAULT_LEVELS if levels is None else levels
        self.normalize = bool(normalize)
        if isinstance(engine_level, bool) or not isinstance(engine_level, (int, np.integer)) or engine_level < 0:
            raise ValueError(f"engine_level: expected an encoder level >= 0, got {engine_level!r}")
        self.engine_level = int(engine_level)
        self._copies: dict = {}
        self._groups: tuple[int, ...] | None = None

    def options(self) -> dict:
        return {"weights": self.weights, "levels": self.levels, "normalize": self.normalize, "engine_level": self.engine_level}

    def network(self, ndim: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        """The frozen segmenter for ``ndim``-D images on ``device`` in ``dtype`` (loaded once, cached)."""
        model = load_segmenter(self.weights, ndim, device)
        if dtype == next(model.parameters()).dtype:
            return model
        key = (id(model), dtype)
        if key not in self._copies:
            self._copies[key] = copy.deepcopy(model).to(dtype).requires_grad_(False)
        return self._copies[key]

    # ------------------------------------------------------------------ features of tensors
    def _features(self, x: torch.Tensor, grid: Grid, target: Grid) -> list[torch.Tensor]:
        """Encoder features of ``x`` ``(N, 1, *S)`` on ``grid``, normalised and resampled onto ``target``."""
        from ..networks.segmenter import normalize_intensities, resample_to_grid

        net = self.network(grid.ndim, x.device, x.dtype)
        if self.normalize:
            x = normalize_intensities(x)
        x = resample_to_grid(x, grid, target)
        with torch.set_grad_enabled(torch.is_grad_enabled() and x.requires_grad):
            return net.features(x, net.check_levels(self.levels))

    def _grids(self, shape: Sequence[int], spacing: object, device: torch.device) -> tuple[Grid, Grid]:
        """The grid of tensors in the segmenter's frame with ``spacing``, and the grid the segmenter sees."""
        from ..networks.segmenter import model_grid

        d = len(shape)
        config = self.network(d, device).config
        grid = Grid(tuple(shape), spacing=check_spacing(spacing, d), direction=config.direction_matrix)
        return grid, model_grid(grid, config)

    def forward(self, fixed, moving, mask=None, *, spacing=None):
        """Similarity ``(N,)`` of two images ``(N, 1, *S)`` on the same grid (``spacing`` mm per axis; 1 mm if ``None``).

        The features of both images are computed by the network (with gradients for the inputs that require
        them); a batch of one is computed once and broadcast. ``mask`` ``(N, 1, *S)`` weights the voxels.
        """
        from ..networks.segmenter import resample_to_grid

        f, _ = check_pair(fixed, moving, channels=1)
        w = check_mask(mask, f)
        grid, target = self._grids(f.shape[2:], spacing, f.device)
        n = f.shape[0]
        ff = [a.expand(n, *a.shape[1:]) for a in self._features(fixed, grid, target)]
        mf = [b.expand(n, *b.shape[1:]) for b in self._features(moving, grid, target)]
        return deepsim_features(ff, mf, mask=None if w is None else resample_to_grid(w, grid, target))

    # ------------------------------------------------------------------ the engine's protocol (EngineTraits)
    #: linear stages: features of both images computed once per pyramid level, the moving features warped;
    #: deformable stages: the moving image warped and its features recomputed at every iteration (warped
    #: features let the optimiser match features without matching anatomy: on the phantom pair of
    #: tests/similarity/test_deepsim_trained.py, cosine 0.93 -> 0.99 while Dice went 0.68 -> 0.69; recomputed,
    #: 0.68 -> 0.74)
    traits = EngineTraits(sampling=Sampling.FEATURES, deformable_sampling=Sampling.DENSE)

    def features(self, data: torch.Tensor, grid: Grid, *, moving: bool) -> tuple[torch.Tensor, Grid]:
        """The engine's feature maps (:meth:`feature_level`), the same for the fixed and the moving image."""
        return self.feature_level(data, grid)

    @torch.no_grad()
    def evaluate(self, fixed, movings, masks, *, grid, fixed_mask=None) -> list[float]:
        """Before/after values on the fixed image's real grid (its orientation and spacing), the fixed image's
        features computed once."""
        from ..networks.segmenter import model_grid, resample_to_grid

        target = model_grid(grid, self.network(grid.ndim, fixed.device).config)
        ff = self._features(fixed[:, :1], grid, target)
        out = []
        for moving, mask in zip(movings, masks):
            mf = self._features(moving[:, :1], grid, target)
            out.append(float(deepsim_features(ff, mf, mask=None if mask is None else resample_to_grid(mask, grid, target))[0]))
        return out

    def feature_level(self, data: torch.Tensor, grid: Grid, *, dense: bool = False,
                      moving: bool = False) -> tuple[torch.Tensor, Grid]:
        """Concatenated unit feature vectors of an image ``(N, 1, *S)`` on ``grid`` and the grid they live on.

        Args:
            data, grid: the image (one pyramid level) and its grid (any orientation and spacing).
            dense: interpolate the features onto ``grid`` itself instead.
            moving: unused (the cosine needs no norm channel); accepted for the engine's call.

        Returns:
            ``(features (N, sum C_l, *S_e), grid_e)``: the chosen levels on the grid of encoder level
            ``engine_level`` of :func:`~omnireg.networks.segmenter.model_grid` ``(grid)`` (module docstring),
            or on ``grid`` when ``dense``. Computed without gradients.
        """
        from ..networks.segmenter import DECODER, feature_grid, model_grid

        with torch.no_grad():
            x = data[:, :1].float()
            net = self.network(grid.ndim, x.device)
            levels = net.check_levels(self.levels)
            level_e = min(self.engine_level, net.levels - 1)
            target = model_grid(grid, net.config)
            feats = self._features(x, grid, target)
            self._groups = net.level_channels(levels)
            egrid = feature_grid(target, level_e)
            parts = []
            for name, f in zip(levels, feats):
                level = 0 if name == DECODER else name
                f = f / f.norm(dim=1, keepdim=True).clamp_min(EPS)
                if level < level_e:
                    f = pool_mask(f, level_e - level)
                elif level > level_e:
                    lgrid = feature_grid(target, level)
                    pts = lgrid.transform_points(egrid.points("world", dtype=torch.float64, device=f.device), "world", "voxel")
                    f = sample(f, pts.to(f.dtype).unsqueeze(0).expand(f.shape[0], *pts.shape), interp="linear", padding="border")
                parts.append(f)
            out = torch.cat(parts, dim=1)
            if dense:
                pts = egrid.transform_points(grid.points("world", dtype=torch.float64, device=out.device), "world", "voxel")
                out = sample(out, pts.to(out.dtype).unsqueeze(0).expand(out.shape[0], *pts.shape), interp="linear", padding="border")
                return out.to(data.dtype if data.dtype.is_floating_point else out.dtype), grid
            return out.to(data.dtype if data.dtype.is_floating_point else out.dtype), egrid

    def feature_similarity(self) -> SimilarityMeasure:
        """The measure the engine applies to :meth:`feature_level` maps (:class:`DeepSimFeatures`).

        Raises:
            RuntimeError: called before :meth:`feature_level` (the channel groups come from the network used).
        """
        if self._groups is None:
            raise RuntimeError("feature_similarity: call feature_level first (it loads the network)")
        return DeepSimFeatures(self._groups)

    @torch.no_grad()
    def scores(self, fixed, movings, masks=None, *, spacing=None) -> list[torch.Tensor]:
        """``[forward(fixed, m, mask) for m, mask in zip(movings, masks)]`` without gradients, the fixed
        image's features computed once (the engine's similarity before and after registration)."""
        from ..networks.segmenter import resample_to_grid

        masks = masks_per_moving(masks, movings)
        out = []
        ff = None
        for moving, mask in zip(movings, masks):
            f, m = check_pair(fixed, moving, channels=1)
            w = check_mask(mask, f)
            if ff is None:
                grid, target = self._grids(f.shape[2:], spacing, f.device)
                ff = self._features(fixed, grid, target)
            mf = self._features(moving, grid, target)
            n = f.shape[0]
            out.append(deepsim_features([a.expand(n, *a.shape[1:]) for a in ff], [b.expand(n, *b.shape[1:]) for b in mf],
                                        mask=None if w is None else resample_to_grid(w, grid, target)))
        return out


register_similarity(Metric.DEEPSIM, DeepSim)
