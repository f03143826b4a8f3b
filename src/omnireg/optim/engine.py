"""The per-pair registration engine: ``register(fixed, moving, config=...)``.

How a run proceeds:

1. Both images are brought to float32 on the requested device and (by default) rescaled to their
   robust [0.5, 99.5] percentile range, so step sizes and metric options mean the same for any scanner.
2. Initialisation (:mod:`omnireg.optim.initialize`): candidate matrices are scored with the first
   stage's metric at its coarsest level and the best one is kept.
3. Stages run in order. Stage ``k`` optimises a new transform ``S_k`` started at identity and the
   mapping used is ``T = T_prev ∘ S_k`` (``S_k`` acts on the fixed-space points first), so every stage
   starts exactly where the previous one ended. Linear stages are folded into one affine matrix;
   deformable stages (B-spline, SVF) are kept as a displacement on the fixed grid applied before it.
4. Each stage runs a Gaussian pyramid (coarse to fine). A linear stage with ``global_search`` first scores
   a multi-start over rotations about every axis at the coarsest level, refines the best ones with BOBYQA
   (nlopt, derivative-free) and continues from the best; then Adam or L-BFGS runs at every level until the
   iteration budget or the convergence rule (relative loss change below ``tolerance`` over ``window``
   iterations) stops it.

Parameters are optimised in scaled units: translations in mm, rotations, scales and shears multiplied by
the radius of the fixed image (so one unit moves the image's boundary by about one mm). Masks are weights in
fixed space; the similarity is computed over ``fixed_mask * warped(moving_mask) * overlap`` where ``overlap``
is the (interpolated) support of the warped moving image (see :mod:`omnireg.similarity`).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from ..core import Grid, Image, sample
from ..core.enums import as_enum
from .config import Init, Optimizer, RegistrationConfig, StageConfig, TransformKind, preset
from .initialize import fov_center, initial_candidates
from ..core.intensity import robust_normalize
from .optimizers import bobyqa, global_rotation_search, gradient_descent
from .pyramid import Level, pyramid_level
from .result import Callback, LevelHistory, ProgressEvent, RegistrationResult

__all__ = ["register"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- helpers
def _check_inputs(fixed: Image, moving: Image, fixed_mask: Image | None, moving_mask: Image | None) -> None:
    if not isinstance(fixed, Image):
        raise TypeError(f"fixed: expected an omnireg Image, got {type(fixed).__name__}")
    if not isinstance(moving, Image):
        raise TypeError(f"moving: expected an omnireg Image, got {type(moving).__name__}")
    if fixed.ndim != moving.ndim:
        raise ValueError(f"moving: expected a {fixed.ndim}D image like fixed, got {moving.ndim}D")
    if fixed.channels != moving.channels:
        raise ValueError(f"moving: expected {fixed.channels} channel(s) like fixed, got {moving.channels}")
    for name, img in (("fixed", fixed), ("moving", moving)):
        if not torch.isfinite(img.data.float()).all():
            raise ValueError(f"{name}: the image contains NaN or infinite values")
        if float(img.data.float().max() - img.data.float().min()) == 0.0:
            raise ValueError(f"{name}: the image is constant; nothing to register")
    for name, mask, ref in (("fixed_mask", fixed_mask, fixed), ("moving_mask", moving_mask, moving)):
        if mask is None:
            continue
        if not isinstance(mask, Image):
            raise TypeError(f"{name}: expected an omnireg Image, got {type(mask).__name__}")
        if not mask.grid.same_as(ref.grid, atol=1e-3):
            raise ValueError(f"{name}: expected the grid of the {name.split('_')[0]} image, got {mask.grid!r}")
        if float(mask.data.float().abs().sum()) == 0.0:
            raise ValueError(f"{name}: the mask is empty (all zero)")


def _matrix_tensor(m: np.ndarray, dtype, device) -> torch.Tensor:
    return torch.tensor(np.asarray(m, dtype=np.float64), dtype=dtype, device=device)


def _make_stage_transform(stage: StageConfig, grid: Grid, center: np.ndarray, dtype, device) -> nn.Module:
    """A new identity transform of the stage's kind, centred on the fixed image."""
    from .. import transforms as T

    kind = stage.kind
    d = grid.ndim
    c = torch.as_tensor(center, dtype=dtype)
    if kind is TransformKind.TRANSLATION:
        t = T.Translation(ndim=d, dtype=dtype)
    elif kind is TransformKind.RIGID:
        t = T.Rigid(ndim=d, center=c, dtype=dtype)
    elif kind is TransformKind.SIMILARITY:
        t = T.Similarity(ndim=d, center=c, dtype=dtype)
    elif kind is TransformKind.AFFINE:
        t = T.Affine(ndim=d, center=c, dtype=dtype)
    elif kind is TransformKind.BSPLINE:
        t = T.BSplineTransform.from_grid(grid, spacing_mm=stage.control_spacing_mm, dtype=dtype)
    else:
        spacing = stage.svf_spacing_mm or max(2.0 * min(grid.spacing), 2.0)
        vgrid = grid.with_spacing([max(spacing, s) for s in grid.spacing])
        t = T.StationaryVelocityField(
            torch.zeros(1, d, *vgrid.shape, dtype=dtype), vgrid, steps=int(stage.svf_steps)
        )
    return t.to(device)


def _scales(module: nn.Module, radius: float) -> dict[str, torch.Tensor]:
    """Per-parameter scale: optimisation variable z = parameter / scale (mm-like units)."""
    if hasattr(module, "parameter_scales_by_name"):
        return dict(module.parameter_scales_by_name(radius))
    out = {}
    for name, p in module.named_parameters():
        low = name.lower()
        if "trans" in low or "coeff" in low or "veloc" in low or "field" in low or "disp" in low:
            s = 1.0
        else:  # rotations (rad), log-scales, matrices: one unit ~ one mm at the image radius
            s = 1.0 / max(radius, 1e-6)
        out[name] = torch.full_like(p, s)
    return out


class _Scaled(nn.Module):
    """Holds optimisation variables z with ``parameter = z * scale`` and evaluates the wrapped transform."""

    def __init__(self, transform: nn.Module, scales: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.transform = transform
        self.names = [n for n, _ in transform.named_parameters()]
        self.scale = {n: scales[n].detach() for n in self.names}
        self.z = nn.ParameterList(
            [nn.Parameter((p.detach() / self.scale[n]).clone()) for n, p in transform.named_parameters()]
        )

    def params(self) -> dict[str, torch.Tensor]:
        return {n: z * self.scale[n] for n, z in zip(self.names, self.z)}

    def call(self, method: str, *args):
        params = self.params()
        module = self.transform

        class _Call(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.t = module

            def forward(self, *a):
                return getattr(self.t, method)(*a) if method != "forward" else self.t(*a)

        wrapper = _Call()
        return torch.func.functional_call(wrapper, {f"t.{k}": v for k, v in params.items()}, args)

    def flat(self) -> np.ndarray:
        return torch.cat([z.detach().reshape(-1) for z in self.z]).cpu().double().numpy()

    def set_flat(self, vec: np.ndarray) -> None:
        i = 0
        with torch.no_grad():
            for z in self.z:
                n = z.numel()
                z.copy_(torch.tensor(vec[i : i + n], dtype=z.dtype).reshape(z.shape))
                i += n

    def commit(self) -> nn.Module:
        """Write the optimised values back into the transform and return it (detached)."""
        with torch.no_grad():
            for n, v in self.params().items():
                _get_param(self.transform, n).copy_(v)
        return self.transform


def _get_param(module: nn.Module, name: str) -> torch.Tensor:
    obj = module
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


POINTWISE_METRICS = frozenset({"mse", "ncc", "mi", "nmi"})


def _mind_features(data: torch.Tensor, grid: Grid, options: dict) -> torch.Tensor:
    from ..similarity import mind_ssc_descriptor

    with torch.no_grad():
        return mind_ssc_descriptor(data, spacing=grid.spacing, **options)


#: metrics computed as a point-wise SSD of feature maps extracted once per pyramid level
FEATURE_METRICS: dict[str, Callable[[torch.Tensor, Grid, dict], torch.Tensor]] = {"mind": _mind_features}


class _LevelProblem:
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
        if 0 < points_subset < n_vox:
            d = fixed.grid.ndim
            if fixed_mask is not None:
                candidates = (fixed_mask.reshape(-1) > 0).nonzero().reshape(-1)
            else:
                candidates = torch.arange(n_vox, device=device)
            if points_subset < candidates.numel():
                perm = torch.randperm(candidates.numel(), generator=generator)[:points_subset].to(device)
                idx = candidates[perm].sort().values
                tail = (1,) * (d - 1)
                self.points = self.points.reshape(1, -1, d)[:, idx].reshape(1, -1, *tail, d)
                c = fixed.data.shape[1]
                self.fixed_data = fixed.data.reshape(1, c, -1)[:, :, idx].reshape(1, c, -1, *tail)
                self.fixed_mask = None  # the subset lies inside the mask
                self.spacing = None
        if locations is not None:
            # patch metrics: their own fixed-space world points and fixed values (the mask was used to
            # place them), laid out as an image (1, C, *L)
            self.points, self.fixed_data = locations[0].to(dtype=dtype, device=device), locations[1].to(dtype=dtype, device=device)
            self.fixed_mask = None
            self.spacing = None
        self.fixed_total = float(self.fixed_mask.sum()) if self.fixed_mask is not None else float(self.fixed_data[0, 0].numel())
        self.vox_from_world = _matrix_tensor(moving.grid.voxel_from_world(), dtype, device)
        # one sampling call per evaluation: moving channels, its support (ones) and its mask
        extra = [torch.ones(1, 1, *moving.grid.shape, dtype=dtype, device=device)]
        if moving_mask is not None:
            extra.append(moving_mask.to(dtype))
        self.moving_mask = moving_mask
        self.channels = moving.data.shape[1]
        self.stack = torch.cat([moving.data, *extra], dim=1)
        #: learned moving features recomputed in the fixed frame (:meth:`reorient`), or None
        self.reoriented = None

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

    def loss_from_voxels(self, vox: torch.Tensor) -> torch.Tensor:
        k = vox.shape[0]
        out = sample(self.stack, vox, interp="linear", padding="zeros")
        c = self.channels
        warped, mask = out[:, :c], out[:, c : c + 1]
        if self.moving_mask is not None:
            mask = mask * out[:, c + 1 : c + 2]
        if self.fixed_mask is not None:
            mask = mask * self.fixed_mask
        support = mask.detach().reshape(k, -1).sum(1)
        valid = support > 1e-3 * mask[0].numel()
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
        if getattr(self.metric, "mean_over_fixed", False):
            # the metric's overlap mean times overlap / fixed domain: the mean over the whole fixed domain
            # (no reward for shrinking the overlap onto the best-matching region); candidates without
            # overlap keep their constant
            loss = torch.where(valid, loss * mask.reshape(k, -1).sum(1) / self.fixed_total, loss)
        return loss


def _subset(stage: StageConfig, grid: Grid, metric: nn.Module) -> int:
    """Number of fixed points a linear stage of a point-wise metric samples (0: all)."""
    if not stage.kind.is_linear:
        return 0
    n = int(round(grid.numel * float(stage.sampling)))
    return min(n, int(stage.max_points)) if stage.max_points else n


def _regrid(data: torch.Tensor, src: Grid, dst: Grid, interp: str) -> torch.Tensor:
    """``data`` ``(1, C, *S)`` on ``src`` sampled at the voxel centres of ``dst`` (zeros outside)."""
    if src.same_as(dst):
        return data
    pts = src.transform_points(dst.points("world", dtype=torch.float64, device=data.device), "world", "voxel")
    return sample(data.float(), pts.unsqueeze(0).to(torch.float32), interp=interp, padding="zeros").to(data.dtype)


# ---------------------------------------------------------------------------------------------- engine
def register(
    fixed: Image,
    moving: Image,
    *,
    config: RegistrationConfig | str | dict = "affine",
    fixed_mask: Image | None = None,
    moving_mask: Image | None = None,
    initial: np.ndarray | None = None,
    callbacks: Iterable[Callback] = (),
) -> RegistrationResult:
    """Register ``moving`` to ``fixed``: find ``T`` with ``moving(T(x)) ≈ fixed(x)`` for fixed-space points x.

    Args:
        fixed: the fixed (reference) image; the result lives on its grid.
        moving: the moving image (any grid: spacing, origin, direction may differ).
        config: a :class:`RegistrationConfig`, a dict of one, or a preset name (``rigid``, ``affine``,
            ``deformable``, ``multimodal-affine``, ``multimodal-deformable``).
        fixed_mask: optional weights on the fixed grid (non-zero = used).
        moving_mask: optional weights on the moving grid; warped with the moving image.
        initial: optional ``(D+1, D+1)`` world matrix (fixed -> moving) replacing the automatic initialisation
            (e.g. from a landmark fit).
        callbacks: called with a :class:`ProgressEvent` at every iteration.

    Returns:
        A :class:`RegistrationResult`.

    Raises:
        TypeError, ValueError: on invalid images, masks or configuration.
    """
    from .. import transforms as T
    from ..similarity import get_similarity

    t_start = time.perf_counter()
    if isinstance(config, str):
        config = preset(config)
    elif isinstance(config, dict):
        config = RegistrationConfig.from_dict(config)
    config.validate()
    _check_inputs(fixed, moving, fixed_mask, moving_mask)
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was requested but no CUDA device is available")
    dtype = torch.float32
    generator = torch.Generator().manual_seed(int(config.seed))
    callbacks = list(callbacks)
    d = fixed.ndim

    def emit(**kw) -> None:
        ev = ProgressEvent(**kw)
        for cb in callbacks:
            cb(ev)

    fdata = fixed.batch().detach().to(device=device, dtype=dtype)
    mdata = moving.batch().detach().to(device=device, dtype=dtype)
    fmask = None if fixed_mask is None else (fixed_mask.batch().to(device=device, dtype=dtype)[:, :1] != 0).to(dtype)
    mmask = None if moving_mask is None else (moving_mask.batch().to(device=device, dtype=dtype)[:, :1] != 0).to(dtype)
    if config.normalize:
        fdata = robust_normalize(fdata, fmask)
        mdata = robust_normalize(mdata, mmask)

    center = fov_center(fixed.grid)
    radius = 0.5 * float(np.linalg.norm(fixed.grid.extent_mm()))

    linear = np.eye(d + 1)  # fixed world -> moving world
    deformable: nn.Module | None = None  # applied to fixed points before `linear`
    history: list[LevelHistory] = []
    stage_times: list[float] = []
    n_stages = len(config.stages)

    metric_cache: dict = {}

    def options_key(stage: StageConfig) -> tuple:
        return tuple(sorted((k, str(v)) for k, v in stage.metric_options.items()))

    def metric_for(stage: StageConfig) -> nn.Module:
        key = (stage.metric, options_key(stage))
        if key not in metric_cache:
            options = dict(stage.metric_options)
            if config.normalize and stage.metric.lower() in ("mi", "nmi"):
                # both images are already on their robust [0, 1] range: fixed histogram ranges spare a
                # quantile (a sort of every sample) at every evaluation
                options.setdefault("fixed_range", (0.0, 1.0))
                options.setdefault("moving_range", (0.0, 1.0))
            metric_cache[key] = get_similarity(stage.metric, **options)
        return metric_cache[key]

    level_cache: dict = {}

    def levels_for(stage: StageConfig, li: int) -> tuple[Level, Level, torch.Tensor | None, torch.Tensor | None]:
        shrink = float(stage.shrink[li])
        sigma = None if stage.smoothing_mm is None else float(stage.smoothing_mm[li])
        key = (shrink, sigma)
        if key not in level_cache:
            fl = pyramid_level(fdata, fixed.grid, shrink=shrink, sigma_mm=sigma)
            ml = pyramid_level(mdata, moving.grid, shrink=shrink, sigma_mm=sigma)
            fm = None if fmask is None else (pyramid_level(fmask, fixed.grid, shrink=shrink, sigma_mm=0.0).data > 0.5).to(dtype)
            mm = None if mmask is None else pyramid_level(mmask, moving.grid, shrink=shrink, sigma_mm=0.0).data
            level_cache[key] = (fl, ml, fm, mm)
        return level_cache[key]

    feature_cache: dict = {}

    def problem(stage: StageConfig, li: int, current: np.ndarray | None = None) -> _LevelProblem:
        fl, ml, fm, mm = levels_for(stage, li)
        metric = metric_for(stage)
        name = stage.metric.lower()
        key = (name, float(stage.shrink[li]), options_key(stage))
        if name in FEATURE_METRICS:
            # descriptor metrics: features computed once per level and warped (not recomputed) at every
            # iteration; the similarity is then a point-wise SSD between feature vectors
            if key not in feature_cache:
                extract = FEATURE_METRICS[name]
                feature_cache[key] = (
                    Level(extract(fl.data, fl.grid, stage.metric_options), fl.grid),
                    Level(extract(ml.data, ml.grid, stage.metric_options), ml.grid),
                )
            fl, ml = feature_cache[key]
            metric = metric_for(StageConfig(metric="mse"))
            name = "mse"
        elif hasattr(metric, "feature_level"):
            # learned feature metrics (DISA): feature maps computed once per level on their own grid
            # (e.g. stride 4); masks follow onto that grid
            reorient = int(getattr(metric, "reorient", 0) or 0) > 0
            if key not in feature_cache:
                ff, fgrid = metric.feature_level(fl.data[:, :1], fl.grid, dense=getattr(metric, "fixed_points", "") == "dense")
                fm2 = None if fm is None else (_regrid(fm, fl.grid, fgrid, "nearest") > 0.5).to(dtype)
                if reorient:
                    from .reorient import ReorientedMoving

                    frame = ReorientedMoving(metric, fgrid, ml.data, ml.grid, mm)
                    mf, extra, mgrid, _ = frame.features(np.eye(d + 1))
                    feature_cache[key] = (Level(ff, fgrid), Level(mf, mgrid), fm2, extra[:, 1:] if extra.shape[1] > 1 else None, frame)
                else:
                    mf, mgrid = metric.feature_level(ml.data[:, :1], ml.grid, dense=False, moving=True)
                    mm2 = None if mm is None else _regrid(mm, ml.grid, mgrid, "linear")
                    feature_cache[key] = (Level(ff, fgrid), Level(mf, mgrid), fm2, mm2, None)
            fl, ml, fm, mm, frame = feature_cache[key]
            metric = metric.feature_similarity()
            if frame is not None:
                prob = _LevelProblem(fl, ml, fm, None, metric, _regularizers(stage), generator=generator,
                                     points_subset=_subset(stage, fl.grid, metric))
                prob.reoriented = frame
                prob.reorient(np.eye(d + 1) if current is None else current)
                return prob
        elif hasattr(metric, "sample_locations") and stage.kind.is_linear:
            # patch metrics (MAD): fixed-space patches placed once per level (seeded), resampled from the
            # moving image through the transform at every evaluation
            locations = metric.sample_locations(fl.data[:, :1], fl.grid, fm, generator)
            return _LevelProblem(fl, ml, None, mm, metric, _regularizers(stage), locations=locations)
        subset = _subset(stage, fl.grid, metric) if name in POINTWISE_METRICS or getattr(metric, "pointwise", False) else 0
        return _LevelProblem(fl, ml, fm, mm, metric, _regularizers(stage), points_subset=subset, generator=generator)

    def deform_points(points: torch.Tensor) -> torch.Tensor:
        return points if deformable is None else deformable(points)

    # -------------------------------------------------------------- initialisation
    first = config.stages[0]
    if initial is not None:
        init = np.asarray(initial, dtype=np.float64)
        if init.shape != (d + 1, d + 1):
            raise ValueError(f"initial: expected a ({d + 1}, {d + 1}) matrix, got {init.shape}")
        linear = init
    else:
        cands = initial_candidates(fdata, fixed.grid, mdata, moving.grid, as_enum(config.init, Init, "init").value)
        if len(cands) > 1:
            prob = problem(first, 0)
            with torch.no_grad():
                mats = torch.stack([_matrix_tensor(c, dtype, device) for c in cands])
                pts = prob.points.reshape(1, -1, d)
                moved = pts @ mats[:, :d, :d].transpose(1, 2) + mats[:, None, :d, d]
                losses = prob.loss_from_points(moved.reshape(len(cands), *prob.points.shape[1:])).cpu().numpy()
            best = int(np.argmin(losses))
            log.info("initialisation %s: %d candidates, best %d (loss %.4g)", config.init, len(cands), best, losses[best])
            linear = cands[best]
        else:
            linear = cands[0]
    emit(stage=0, n_stages=n_stages, level=0, n_levels=len(first.shrink), iteration=0, max_iterations=0, loss=float("nan"), phase="init")

    # -------------------------------------------------------------- stages
    for si, stage in enumerate(config.stages):
        t0 = time.perf_counter()
        kind = stage.kind
        new = _make_stage_transform(stage, fixed.grid, center, dtype, device)
        scaled = _Scaled(new, _scales(new, radius))
        lin_t = _matrix_tensor(linear, dtype, device)
        n_levels = len(stage.shrink)
        reg_grids: dict[str, Grid] = {}
        if not kind.is_linear:
            # penalties on a coarse grid (half the control spacing), so their cost does not grow with the
            # image size; the recovery test checks for folds at full resolution
            base = 0.5 * stage.control_spacing_mm if kind is TransformKind.BSPLINE else max(new.grid.spacing)
            reg_grid = fixed.grid.with_spacing([max(base, sp) for sp in fixed.grid.spacing])
            reg_grids = {"smooth": reg_grid, "folding": reg_grid}  # one shared grid: one evaluation per step

        def stage_loss(prob: _LevelProblem) -> torch.Tensor:
            if kind.is_linear:
                mat = lin_t @ scaled.call("matrix")  # (K, D+1, D+1)
                pts = deform_points(prob.points) if deformable is not None else prob.points
                full = prob.vox_from_world @ mat
                flat = pts.reshape(pts.shape[0], -1, d)
                vox = flat @ full[:, :d, :d].transpose(1, 2) + full[:, None, :d, d]
                return prob.loss_from_voxels(vox.reshape(mat.shape[0], *prob.points.shape[1:]))
            disp = scaled.call("displacement", prob.fixed.grid)  # (1, D, *S) world mm, fast whole-grid path
            moved = deform_points(prob.points + disp.movedim(1, -1))
            moved = moved @ lin_t[:d, :d].T + lin_t[:d, d]
            loss = prob.loss_from_points(moved)
            if prob.sim_scale is None:
                # the similarity is divided by its magnitude at the start of the level, so regularisation
                # weights mean the same for every metric (MIND's SSD is ~0.02, LNCC's ~-0.8)
                prob.sim_scale = max(abs(float(loss.detach().sum())), 1e-6)
            loss = loss / prob.sim_scale
            if prob.regularizers:
                fields: dict[int, torch.Tensor] = {}
                for key, weight, fn in prob.regularizers:
                    g = reg_grids[key]
                    if id(g) not in fields:
                        fields[id(g)] = scaled.call("displacement", g)
                    loss = loss + weight * fn(fields[id(g)], g)
            return loss

        def current_matrix() -> np.ndarray:
            """The current estimate fixed world -> moving world (the linear part in deformable stages)."""
            if not kind.is_linear:
                return linear
            with torch.no_grad():
                return (lin_t @ scaled.call("matrix"))[0].detach().cpu().double().numpy()

        for li in range(n_levels):
            tl = time.perf_counter()
            prob = problem(stage, li, current_matrix())  # reoriented problems: features at the current estimate
            hist = LevelHistory(si, li, kind.value, stage.metric, float(stage.shrink[li]))
            history.append(hist)
            # learned moving features recomputed in the fixed frame (DISA ``reorient``): before every start
            # of the global search and every ``every`` iterations of a linear stage
            every = int(getattr(prob.reoriented.metric, "reorient", 0)) if prob.reoriented is not None and kind.is_linear else 0
            # (skipped while the fixed field of view moved less than a voxel since the last computation)
            tol = float(min(prob.reoriented.ref.spacing)) if every else 0.0
            refresh = (lambda: prob.reorient(current_matrix(), tol)) if every else None
            if li == 0 and stage.global_search and kind.is_linear:
                global_rotation_search(scaled, stage, prob, stage_loss, d, hist, emit, si, n_stages, n_levels, refresh=refresh)
            iters = int(stage.iterations[li])
            if iters > 0:
                opt = as_enum(stage.optimizer, Optimizer, "optimizer")
                chunks = [iters] if not every else [min(every, iters - i) for i in range(0, iters, every)]
                for ci, n_it in enumerate(chunks):
                    if refresh is not None:
                        refresh()
                    if opt is Optimizer.BOBYQA:
                        bobyqa(scaled, lambda: stage_loss(prob), n_it, hist, step=2.0)
                    else:
                        gradient_descent(scaled, lambda: stage_loss(prob).sum(), opt, n_it, stage, hist, emit, si, n_stages, li, n_levels)
                    if ci > 0 and hist.converged:
                        break
            hist.runtime_s = time.perf_counter() - tl
            log.info(
                "stage %d (%s, %s) level %d/%d: loss %.5g -> %.5g in %d iterations (%.2fs)",
                si + 1, kind.value, stage.metric, li + 1, n_levels,
                hist.losses[0] if hist.losses else float("nan"), hist.losses[-1] if hist.losses else float("nan"),
                len(hist.losses), hist.runtime_s,
            )
        new = scaled.commit().detach()
        if kind.is_linear:
            linear = linear @ new.matrix()[0].detach().cpu().double().numpy()
        else:
            deformable = new if deformable is None else T.compose(deformable, new)
        stage_times.append(time.perf_counter() - t0)

    # -------------------------------------------------------------- result
    affine = T.Affine.from_matrix(torch.as_tensor(linear, dtype=torch.float64))
    field = None
    if deformable is not None:
        u = deformable.displacement(fixed.grid, dtype=torch.float32) if hasattr(deformable, "displacement") else None
        field = T.DisplacementField(u.detach().cpu(), fixed.grid)
        total = T.compose(affine.to(torch.float32), field)
    else:
        total = affine
    warped = T.resample(moving, total, onto=fixed.grid, interp="linear")
    last = config.stages[-1]
    before, after = _final_metrics(fixed, moving, total, last, metric_for(last), fmask, device)
    emit(stage=n_stages - 1, n_stages=n_stages, level=0, n_levels=1, iteration=0, max_iterations=0, loss=after[last.metric], phase="done")
    return RegistrationResult(
        transform=total,
        linear=affine,
        deformable=field,
        warped=warped,
        history=history,
        metric_before=before,
        metric_after=after,
        runtime_s=time.perf_counter() - t_start,
        stage_runtimes_s=stage_times,
        config=config.to_dict(),
    )


def _regularizers(stage: StageConfig) -> list[tuple[str, float, Callable]]:
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


def _final_metrics(fixed, moving, total, stage, metric, fmask, device) -> tuple[dict, dict]:
    """The last stage's similarity at full resolution, before (identity mapping) and after registration.

    Both are computed over ``fixed_mask * support`` where ``support`` is where the (warped) moving image
    has data, on robustly normalised intensities as during the optimisation.
    """
    from .. import transforms as T

    out = []
    with torch.no_grad():
        f = robust_normalize(fixed.batch().float().to(device), fmask)
        # the moving channels and a channel of ones (its support) are warped together: one resampling each
        data = moving.data.to(torch.float32)
        stacked = moving.with_data(torch.cat([data, torch.ones_like(data[:1])]))
        c = data.shape[0]
        pairs = []
        for t in (T.Affine(ndim=fixed.ndim, dtype=torch.float32), total):
            both = T.resample(stacked, t, onto=fixed.grid, interp="linear").batch().to(device)
            img, support = both[:, :c], both[:, c:]
            mask = support if fmask is None else support * fmask
            try:
                pairs.append((robust_normalize(img, (mask > 0.5).float()), mask))
            except (ValueError, RuntimeError):  # no overlap left
                pairs.append((None, mask))
        if hasattr(metric, "scores") and all(m is not None for m, _ in pairs):
            # learned feature metrics (DISA): the fixed image's features computed once for both
            try:
                vals = metric.scores(f, [m for m, _ in pairs], [w for _, w in pairs], spacing=fixed.grid.spacing)
                return {stage.metric: float(vals[0][0])}, {stage.metric: float(vals[1][0])}
            except (ValueError, RuntimeError):  # no overlap left for one of them: each on its own below
                pass
        for m, mask in pairs:
            if m is None:
                out.append({stage.metric: float("nan")})
                continue
            try:
                if hasattr(metric, "sample_locations"):
                    # patch metrics: the same seeded patches before and after, read from the warped image
                    pts, fvals = metric.sample_locations(f[:, :1], fixed.grid, fmask, torch.Generator().manual_seed(0))
                    vox = fixed.grid.transform_points(pts.double(), "world", "voxel").to(m.dtype)
                    both = sample(torch.cat([m[:, :1], mask], 1), vox, interp="linear", padding="zeros")
                    val = float(metric(fvals, both[:, :1], mask=both[:, 1:])[0])
                else:
                    val = float(metric(f, m, mask=mask, spacing=fixed.grid.spacing)[0])
            except (ValueError, RuntimeError):  # no overlap left
                val = float("nan")
            out.append({stage.metric: val})
    return out[0], out[1]
