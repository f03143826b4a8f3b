"""The loss of a transform at one pyramid level, and the caches that build it per stage and level.

A :class:`LevelProblem` holds one pyramid level of both images (or their feature maps, or patch locations)
and evaluates the similarity loss of a batch of candidate mappings given as moving-space world points of
the fixed level grid. :class:`ProblemBuilder` creates them for a stage and a level, computing pyramid
levels, metric modules and feature maps once and reusing them across stages.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from ..core import Grid, sample
from ..similarity.enums import Sampling
from .config import RegistrationConfig, StageConfig, TransformKind
from .params import matrix_tensor
from .pyramid import Level, pyramid_level, regrid

__all__ = ["FOREGROUND_DILATION_MM", "MIN_OVERLAP_OF_START", "LevelProblem", "ProblemBuilder", "regularizers_of"]

#: dilation of the fixed image's foreground (:attr:`StageConfig.foreground_mask`): wide enough that the edge of the
#: head (or of a skull-stripped brain) is measured from both sides, narrow enough that background voxels do not
#: drive the field (5 mm let ``multimodal-deformable`` move ch2 -> MNI at 1 mm 2.8 mm outside the brain against
#: 2.7 mm inside; 2 mm: 3.1 mm outside against 3.6 mm inside, AFIDs unchanged within 0.05 mm; README "Real data")
FOREGROUND_DILATION_MM = 2.0
#: a linear stage scores only poses that keep at least this fraction of its start pose's overlap (fixed points,
#: within the fixed mask, that sample the moving image); elastix similarly refuses poses with fewer than 25 % of the
#: samples inside the moving image. Without it, NMI rose (1.044 -> 1.092) while an affine stage scaled a 2D
#: brain slice 16-fold, leaving about 30 fixed pixels inside the moving image, from whose few values NMI is high
#: (a pre-aligned pair of the DeepSim benchmark; Dice 0.367 -> 0.001)
MIN_OVERLAP_OF_START = 0.5

class LevelProblem:
    """Loss of a transform at one pyramid level.

    With ``points_subset`` the fixed level is reduced to a fixed random subset of its voxels, laid out
    as a ``(1, C, P, 1, 1)`` image (valid for point-wise metrics only).
    """

    def __init__(
        self,
        fixed: Level,
        moving: Level,
        fixed_mask: torch.Tensor | None,
        moving_mask: torch.Tensor | None,
        metric: nn.Module,
        regularizers: list[tuple[float, Callable]],
        *,
        points_subset: int = 0,
        generator: torch.Generator | None = None,
        locations: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask_points: bool = False,
    ) -> None:
        self.fixed = fixed
        self.moving = moving
        self.sim_scale: float | None = None
        self.metric = metric
        self.regularizers = regularizers
        dtype, device = fixed.data.dtype, fixed.data.device
        self.points = fixed.grid.points("world", dtype=dtype, device=device).unsqueeze(0)
        self.fixed_data = fixed.data
        self.fixed_mask = fixed_mask
        self.spacing = fixed.grid.spacing
        n_vox = fixed.grid.numel
        if mask_points and fixed_mask is not None and points_subset == 0 and locations is None:
            # a point-wise measure in a deformable stage: only the fixed mask's voxels are compared (the
            # others have weight 0), with their weights
            idx = (fixed_mask.reshape(-1) > 0).nonzero().reshape(-1)
            if 0 < idx.numel() < n_vox:
                self._keep_points(idx, keep_mask=True)
        if 0 < points_subset < n_vox:
            if fixed_mask is not None:
                candidates = (fixed_mask.reshape(-1) > 0).nonzero().reshape(-1)
            else:
                candidates = torch.arange(n_vox, device=device)
            if points_subset < candidates.numel():
                perm = torch.randperm(candidates.numel(), generator=generator)[:points_subset].to(device)
                self._keep_points(candidates[perm].sort().values, keep_mask=False)  # the subset lies inside the mask
        if locations is not None:
            # patch metrics: their own fixed-space world points and fixed values (the mask was used to
            # place them), laid out as an image (1, C, *L)
            self.points, self.fixed_data = locations[0].to(dtype=dtype, device=device), locations[1].to(dtype=dtype, device=device)
            self.fixed_mask = None
            self.spacing = None
        self.fixed_total = float(self.fixed_mask.sum()) if self.fixed_mask is not None else float(self.fixed_data[0, 0].numel())
        self.vox_from_world = matrix_tensor(moving.grid.voxel_from_world(), dtype, device)
        # one sampling call per evaluation: moving channels, its support (ones) and its mask
        extra = [torch.ones(1, 1, *moving.grid.shape, dtype=dtype, device=device)]
        if moving_mask is not None:
            extra.append(moving_mask.to(dtype))
        self.moving_mask = moving_mask
        self.channels = moving.data.shape[1]
        self.stack = torch.cat([moving.data, *extra], dim=1)
        #: learned moving features recomputed in the fixed frame (:meth:`reorient`), or None
        self.reoriented = None
        #: the least overlap (weighted count of fixed points that sample the moving image) a candidate needs to
        #: be scored; below it the loss is a large constant (linear stages set it from their start:
        #: :data:`MIN_OVERLAP_OF_START`)
        self.min_overlap = 0.0

    def _keep_points(self, idx: torch.Tensor, *, keep_mask: bool) -> None:
        """Reduce the fixed level to the voxels ``idx`` (flat indices), laid out as a ``(1, C, P, 1, 1)`` image;
        the fixed mask's weights follow them (``keep_mask``) or are dropped."""
        d, c = self.fixed.grid.ndim, self.fixed_data.shape[1]
        tail = (1,) * (d - 1)
        self.points = self.points.reshape(1, -1, d)[:, idx].reshape(1, -1, *tail, d)
        self.fixed_data = self.fixed_data.reshape(1, c, -1)[:, :, idx].reshape(1, c, -1, *tail)
        self.fixed_mask = self.fixed_mask.reshape(1, 1, -1)[:, :, idx].reshape(1, 1, -1, *tail) if keep_mask else None
        self.spacing = None

    @property
    def on_grid(self) -> bool:
        """Whether :attr:`points` is the whole fixed level grid ``(1, *S, D)`` (else a list of points)."""
        return tuple(self.points.shape[1:-1]) == tuple(self.fixed.grid.shape)

    def reorient(self, matrix: np.ndarray, tol_mm: float = 0.0) -> bool:
        """Recompute the moving features in the fixed frame through ``matrix`` (fixed world -> moving world;
        :class:`omnireg.optim.reorient.ReorientedMoving`) unless the field of view moved at most ``tol_mm``
        since they were computed. Returns whether they were recomputed (always False for other problems)."""
        if self.reoriented is None or self.reoriented.moved_mm(matrix) <= tol_mm:
            return False
        feats, extra, _, vox_from_world = self.reoriented.features(matrix)
        dtype = self.fixed_data.dtype
        self.channels = feats.shape[1]
        self.stack = torch.cat([feats, extra], dim=1).to(dtype)
        self.moving_mask = extra[:, 1:] if extra.shape[1] > 1 else None
        self.vox_from_world = torch.as_tensor(vox_from_world, dtype=dtype, device=self.stack.device)
        return True

    def loss_from_points(self, moving_world: torch.Tensor) -> torch.Tensor:
        """Loss (K,) for moving-space world points ``(K, *S, D)`` of the fixed level grid."""
        d = self.fixed.grid.ndim
        m = self.vox_from_world
        vox = moving_world @ m[:d, :d].T + m[:d, d]
        return self.loss_from_voxels(vox)

    def _weights(self, sampled_extra: torch.Tensor) -> torch.Tensor:
        """The comparison weights ``(K, 1, ...)`` from the sampled extra channels of :attr:`stack` (the moving
        support, then the moving mask if any): support x moving mask x fixed mask."""
        mask = sampled_extra[:, :1]
        if self.moving_mask is not None:
            mask = mask * sampled_extra[:, 1:2]
        return mask if self.fixed_mask is None else mask * self.fixed_mask

    def overlap_from_voxels(self, vox: torch.Tensor) -> torch.Tensor:
        """The overlap ``(K,)`` of candidates given as moving voxel coordinates (what :attr:`min_overlap` bounds)."""
        with torch.no_grad():
            extra = sample(self.stack[:, self.channels :], vox, interp="linear", padding="zeros")
            return self._weights(extra).reshape(vox.shape[0], -1).sum(1)

    def loss_from_voxels(self, vox: torch.Tensor) -> torch.Tensor:
        k = vox.shape[0]
        out = sample(self.stack, vox, interp="linear", padding="zeros")
        c = self.channels
        warped, mask = out[:, :c], self._weights(out[:, c:])
        support = mask.detach().reshape(k, -1).sum(1)
        valid = (support > 1e-3 * mask[0].numel()) & (support >= self.min_overlap)
        fixed = self.fixed_data.expand(k, *self.fixed_data.shape[1:])
        spacing = self.spacing
        if bool(valid.all()):
            loss = self.metric.loss(fixed, warped, mask=mask, spacing=spacing)
        else:
            # candidates without overlap get a large constant loss (no gradient): the optimiser stays away
            loss = torch.full((k,), 1e3, dtype=vox.dtype, device=vox.device) + 0.0 * warped.sum()
            if bool(valid.any()):
                idx = valid.nonzero().reshape(-1)
                part = self.metric.loss(fixed[idx], warped[idx], mask=mask[idx], spacing=spacing)
                loss = loss.index_put((idx,), part)
        if self.metric.traits.mean_over_fixed:
            # the metric's overlap mean times overlap / fixed domain: the mean over the whole fixed domain
            # (no reward for shrinking the overlap onto the best-matching region); candidates without
            # overlap keep their constant
            loss = torch.where(valid, loss * mask.reshape(k, -1).sum(1) / self.fixed_total, loss)
        return loss


def _mask_points(stage: StageConfig, metric: nn.Module) -> bool:
    """Whether a level compares only the fixed mask's voxels: point-wise measures (MIND-SSC's descriptors,
    MSE, NCC, MI) in deformable stages, where the whole grid would be warped at every iteration for nothing
    (a brain fills about half of its image)."""
    return not stage.kind.is_linear and metric.traits.sampling_for(False) is Sampling.POINTS


def _subset(stage: StageConfig, grid: Grid, metric: nn.Module) -> int:
    """Number of fixed points a linear stage of a point-wise measure samples (0: all)."""
    if not stage.kind.is_linear or metric.traits.sampling is not Sampling.POINTS:
        return 0
    n = int(round(grid.numel * float(stage.sampling)))
    return min(n, int(stage.max_points)) if stage.max_points else n


class ProblemBuilder:
    """Builds the :class:`LevelProblem` of a stage at a pyramid level; caches levels, metrics and features.

    Args:
        config: the registration configuration (``normalize`` sets MI's histogram ranges).
        fixed, moving: ``(1, C, *S)`` normalised image data and their grids.
        fixed_mask, moving_mask: optional binary masks ``(1, 1, *S)`` on those grids.
        generator: the run's seeded generator (point subsets, patch locations).
    """

    def __init__(self, config: RegistrationConfig, fixed: torch.Tensor, fixed_grid: Grid, moving: torch.Tensor,
                 moving_grid: Grid, fixed_mask: torch.Tensor | None, moving_mask: torch.Tensor | None,
                 generator: torch.Generator) -> None:
        self.config = config
        self.fixed, self.fixed_grid, self.moving, self.moving_grid = fixed, fixed_grid, moving, moving_grid
        self.fixed_mask, self.moving_mask = fixed_mask, moving_mask
        self.generator = generator
        self._metrics: dict = {}
        self._levels: dict = {}
        self._features: dict = {}
        self._foreground: torch.Tensor | None = None

    @staticmethod
    def _options_key(stage: StageConfig) -> tuple:
        return tuple(sorted((k, str(v)) for k, v in stage.metric_options.items()))

    def metric(self, stage: StageConfig) -> nn.Module:
        """The stage's similarity module (one instance per metric and options)."""
        from ..similarity import get_similarity

        key = (stage.metric, self._options_key(stage))
        if key not in self._metrics:
            metric = get_similarity(stage.metric, **stage.metric_options)
            # both images are on their robust [0, 1] range: histogram measures fix their ranges
            self._metrics[key] = metric.for_unit_range() if self.config.normalize else metric
        return self._metrics[key]

    def shrink(self, stage: StageConfig, li: int) -> float:
        """The shrink factor of level ``li``, coarsened so the level has at most ``stage.max_level_voxels``."""
        shrink = float(stage.shrink[li])
        bound = int(stage.max_level_voxels)
        if bound > 0:
            n = self.fixed_grid.numel
            shrink = max(shrink, (n / bound) ** (1.0 / self.fixed_grid.ndim))
        return shrink

    def foreground(self) -> torch.Tensor:
        """The fixed image's foreground mask ``(1, 1, *S)`` (:attr:`StageConfig.foreground_mask`), computed once."""
        if self._foreground is None:
            from .initialize import foreground_region

            self._foreground = foreground_region(self.fixed, self.fixed_grid, dilate_mm=FOREGROUND_DILATION_MM).to(self.fixed)
        return self._foreground

    def levels(self, stage: StageConfig, li: int) -> tuple[Level, Level, torch.Tensor | None, torch.Tensor | None]:
        """Fixed and moving pyramid levels and masks of level ``li`` of ``stage``."""
        shrink = self.shrink(stage, li)
        sigma = None if stage.smoothing_mm is None else float(stage.smoothing_mm[li])
        fixed_mask = self.fixed_mask
        if fixed_mask is None and stage.foreground_mask:
            fixed_mask = self.foreground()
        key = (shrink, sigma, fixed_mask is not None)
        if key not in self._levels:
            dtype = self.fixed.dtype
            # one physical resolution per level for both images: shrink x the fixed image's finest spacing
            ref = float(min(self.fixed_grid.spacing))
            fl = pyramid_level(self.fixed, self.fixed_grid, shrink=shrink, sigma_mm=sigma, reference_mm=ref)
            ml = pyramid_level(self.moving, self.moving_grid, shrink=shrink, sigma_mm=sigma, reference_mm=ref)
            fm = None if fixed_mask is None else (pyramid_level(
                fixed_mask, self.fixed_grid, shrink=shrink, sigma_mm=0.0, reference_mm=ref).data > 0.5).to(dtype)
            mm = None if self.moving_mask is None else pyramid_level(
                self.moving_mask, self.moving_grid, shrink=shrink, sigma_mm=0.0, reference_mm=ref).data
            self._levels[key] = (fl, ml, fm, mm)
        return self._levels[key]

    def problem(self, stage: StageConfig, li: int, current: np.ndarray | None = None) -> "LevelProblem":
        """The loss of level ``li`` of ``stage``, built as the stage's measure declares
        (:class:`omnireg.similarity.EngineTraits`); ``current`` (fixed world -> moving world) places
        reoriented learned features."""
        fl, ml, fm, mm = self.levels(stage, li)
        metric = self.metric(stage)
        regs = regularizers_of(stage)
        sampling = metric.traits.sampling_for(stage.kind.is_linear)
        if sampling is Sampling.PATCHES:
            if not stage.kind.is_linear:
                raise ValueError(f"metric: {stage.metric} works in rigid and affine stages only, not {stage.transform}")
            # fixed-space patches placed once per level (seeded), resampled from the moving image at every evaluation
            locations = metric.sample_locations(fl.data[:, :1], fl.grid, fm, self.generator)
            return LevelProblem(fl, ml, None, mm, metric, regs, locations=locations)
        if sampling is Sampling.FEATURES:
            return self._feature_problem(stage, li, metric, regs, current)
        return LevelProblem(fl, ml, fm, mm, metric, regs, points_subset=_subset(stage, fl.grid, metric),
                            generator=self.generator, mask_points=_mask_points(stage, metric))

    def _feature_problem(self, stage: StageConfig, li: int, metric: nn.Module, regs: list, current) -> "LevelProblem":
        """Feature maps computed once per level (cached) and warped at every iteration; masks follow onto
        the feature grids."""
        fl, ml, fm, mm = self.levels(stage, li)
        d = self.fixed_grid.ndim
        key = (stage.metric, self.shrink(stage, li), fm is not None, self._options_key(stage))
        reorient = metric.traits.reorient > 0
        if key not in self._features:
            ff, fgrid = metric.features(fl.data, fl.grid, moving=False)
            fm2 = None if fm is None else (regrid(fm, fl.grid, fgrid, "nearest") > 0.5).to(self.fixed.dtype)
            if reorient:
                from .reorient import ReorientedMoving

                frame = ReorientedMoving(metric, fgrid, ml.data, ml.grid, mm)
                mf, extra, mgrid, _ = frame.features(np.eye(d + 1))
                mm2 = extra[:, 1:] if extra.shape[1] > 1 else None
            else:
                frame = None
                mf, mgrid = metric.features(ml.data, ml.grid, moving=True)
                mm2 = None if mm is None else regrid(mm, ml.grid, mgrid, "linear")
            self._features[key] = (Level(ff, fgrid), Level(mf, mgrid), fm2, mm2, frame)
        fl, ml, fm, mm, frame = self._features[key]
        compare = metric.feature_similarity()
        subset = _subset(stage, fl.grid, compare)
        if frame is None:
            return LevelProblem(fl, ml, fm, mm, compare, regs, points_subset=subset, generator=self.generator,
                                mask_points=_mask_points(stage, compare))
        prob = LevelProblem(fl, ml, fm, None, compare, regs, generator=self.generator, points_subset=subset)
        prob.reoriented = frame
        prob.reorient(np.eye(d + 1) if current is None else current)
        return prob


def regularizers_of(stage: StageConfig) -> list[tuple[str, float, Callable]]:
    """(grid key, weight, penalty(u, grid)) for the stage's non-zero regularisation terms."""
    if stage.kind.is_linear or not stage.regularization:
        return []
    from .. import regularizers as R

    out = []
    reg = stage.regularization
    if reg.get("bending", 0):
        out.append(("smooth", float(reg["bending"]), R.bending_energy))
    if reg.get("diffusion", 0):
        out.append(("smooth", float(reg["diffusion"]), R.diffusion_penalty))
    if reg.get("elastic", 0):
        mu, lam = float(reg.get("elastic_mu", 1.0)), float(reg.get("elastic_lambda", 1.0))
        out.append(("smooth", float(reg["elastic"]), lambda u, g: R.elastic_penalty(u, g, mu=mu, lam=lam)))
    if reg.get("folding", 0):
        out.append(("folding", float(reg["folding"]), R.folding_penalty))
    return out

