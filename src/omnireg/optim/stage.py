"""One stage of a registration: its pyramid levels, multi-start tracks, local optimisers and the guard.

A stage optimises a new transform ``S`` (started at identity) and the mapping used is ``T = B ∘ S`` for
linear stages (``B``: the stage's start matrix) or ``T = L ∘ D_prev ∘ S`` for deformable ones, so every
stage starts exactly where the previous one ended.

**Multi-start (linear stages).** A stage can start from several poses (the initialiser's best
candidates, and the finalists of the global search). Every start is optimised at the coarsest level;
the two best (by the loss at that level) go on to the next level and only the best to the finer ones.
So a start chosen at a coarse level, where the similarity of small or partial images is noisy, must
still win at a finer level.

**Guard.** After the last level the similarity of the result is compared with the similarity of the
stage's start pose(s), on the same level with the same sampling. A result worse than its start is
discarded (the run continues from the start), a warning is logged, and the check is recorded in
:class:`StageCheck` (``result.json["stages"]``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ..core import Grid
from .config import Optimizer, StageConfig, TransformKind
from .optimizers import bobyqa, global_rotation_search, gradient_descent
from .params import Scaled, make_stage_transform, matrix_tensor, parameter_scales, velocity_grid
from .problem import MIN_OVERLAP_OF_START, LevelProblem, ProblemBuilder
from .pyramid import regrid
from .result import LevelHistory

__all__ = ["StageCheck", "StageContext", "run_stage"]

log = logging.getLogger(__name__)


@dataclass
class StageCheck:
    """The guard's record of one stage (losses: lower is better; the similarity only, no regularisation).

    Attributes:
        stage: 0-based stage index.
        transform, metric: the stage's transform kind and similarity.
        loss_start: the similarity loss of the best start pose, at the stage's finest level.
        loss_end: the similarity loss of the stage's result, on the same level and sampling.
        kept: whether the result was kept (False: worse than the start, discarded).
        starts: how many start poses the stage optimised (multi-start and global search).
    """

    stage: int
    transform: str
    metric: str
    loss_start: float
    loss_end: float
    kept: bool
    starts: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StageContext:
    """What every stage of one registration shares."""

    builder: ProblemBuilder
    fixed_grid: Grid
    center: np.ndarray
    radius: float
    dtype: torch.dtype
    device: torch.device
    emit: object
    n_stages: int
    history: list = field(default_factory=list)
    #: rotation angles of the global search when the fields of view are partial (None: the stage's own)
    search_angles_deg: list | None = None


@dataclass
class _Track:
    base: np.ndarray  # the stage's start matrix B (fixed world -> moving world)
    z: np.ndarray  # optimisation variables of the stage transform
    loss: float = math.inf


class _Stage:
    """Evaluation of one stage's transform: the similarity loss and the optimised objective."""

    def __init__(self, ctx: StageContext, si: int, stage: StageConfig, linear: np.ndarray, deformable,
                 vgrid: Grid | None = None) -> None:
        self.ctx, self.si, self.stage, self.kind = ctx, si, stage, stage.kind
        self.d = ctx.fixed_grid.ndim
        self.deformable = deformable
        self.set_base(linear)
        self._hold(make_stage_transform(stage, ctx.fixed_grid, ctx.center, ctx.dtype, ctx.device, vgrid))

    def _hold(self, new: nn.Module) -> None:
        """Optimise ``new`` (the stage's transform) from now on."""
        stage, ctx = self.stage, self.ctx
        self.scaled = Scaled(new, parameter_scales(new, ctx.radius))
        self.z0 = self.scaled.flat()  # the variables of ``new`` (identity, for a new stage transform)
        self.reg_grids: dict[str, Grid] = {}
        if self.kind is TransformKind.SVF:
            # an SVF is regularised on its velocity (own grid): smooth velocities give smooth diffeomorphisms,
            # and no integration is needed for the penalty
            self.reg_grids = {"smooth": new.grid}
        elif not self.kind.is_linear:
            # penalties on a coarse grid (half the control spacing), so their cost does not grow with the
            # image size; one shared grid: one field evaluation per step
            base = 0.5 * stage.control_spacing_mm if self.kind is TransformKind.BSPLINE else max(new.grid.spacing)
            reg_grid = ctx.fixed_grid.with_spacing([max(base, sp) for sp in ctx.fixed_grid.spacing])
            self.reg_grids = {"smooth": reg_grid, "folding": reg_grid}

    def regrid_velocity(self, vgrid: Grid) -> None:
        """Move an SVF stage's current velocity onto ``vgrid`` (the next level's velocity grid)."""
        from .. import transforms as T

        old = self.scaled.commit()
        if old.grid.same_as(vgrid):
            return
        v = regrid(old.velocity.detach(), old.grid, vgrid, "linear", "border")  # world-mm vectors, border beyond
        self._hold(T.StationaryVelocityField(v, vgrid, steps=old.steps).to(self.ctx.device))
        self.z0 = np.zeros_like(self.z0)  # the stage's start (identity) on the new grid, for the guard

    def set_base(self, matrix: np.ndarray) -> None:
        self.base = np.asarray(matrix, dtype=np.float64)
        self.lin_t = matrix_tensor(self.base, self.ctx.dtype, self.ctx.device)

    def deform_points(self, points: torch.Tensor) -> torch.Tensor:
        return points if self.deformable is None else self.deformable(points)

    def _linear_voxels(self, prob: LevelProblem) -> torch.Tensor:
        """Moving voxel coordinates ``(K, *S, D)`` of the fixed level's points under the current linear variables."""
        d = self.d
        mat = self.lin_t @ self.scaled.call("matrix")  # (K, D+1, D+1)
        pts = self.deform_points(prob.points)
        full = prob.vox_from_world @ mat
        flat = pts.reshape(pts.shape[0], -1, d)
        vox = flat @ full[:, :d, :d].transpose(1, 2) + full[:, None, :d, d]
        return vox.reshape(mat.shape[0], *prob.points.shape[1:])

    def bound_overlap(self, prob: LevelProblem) -> None:
        """Linear stages: from now on, score only poses that keep :data:`MIN_OVERLAP_OF_START` of the current
        pose's overlap (called with the level's start pose loaded)."""
        if self.kind.is_linear:
            with torch.no_grad():
                prob.min_overlap = MIN_OVERLAP_OF_START * float(prob.overlap_from_voxels(self._linear_voxels(prob)).min())

    def similarity(self, prob: LevelProblem) -> torch.Tensor:
        """The similarity loss ``(K,)`` of the current variables (K candidates for batched linear searches)."""
        d = self.d
        if self.kind.is_linear:
            return prob.loss_from_voxels(self._linear_voxels(prob))
        if prob.on_grid:
            disp = self.scaled.call("displacement", prob.fixed.grid)  # (1, D, *S) world mm, whole-grid path
            moved = self.deform_points(prob.points + disp.movedim(1, -1))
        else:  # the fixed mask's points only (point-wise measures)
            flat = prob.points.reshape(1, -1, d)
            moved = self.deform_points(self.scaled.call("forward", flat).reshape(prob.points.shape))
        moved = moved @ self.lin_t[:d, :d].T + self.lin_t[:d, d]
        return prob.loss_from_points(moved)

    def objective(self, prob: LevelProblem) -> torch.Tensor:
        """What the optimiser minimises: the similarity, plus (deformable stages) the weighted penalties."""
        loss = self.similarity(prob)
        if self.kind.is_linear:
            return loss
        if prob.sim_scale is None:
            # the similarity is divided by its magnitude at the start of the level, so regularisation
            # weights mean the same for every metric (MIND's SSD is ~0.02, LNCC's ~-0.8)
            prob.sim_scale = max(abs(float(loss.detach().sum())), 1e-6)
        loss = loss / prob.sim_scale
        fields: dict[int, torch.Tensor] = {}
        for key, weight, fn in prob.regularizers:
            if key not in self.reg_grids:  # folding penalties do not apply to velocities (diffeomorphic)
                continue
            g = self.reg_grids[key]
            if id(g) not in fields:
                fields[id(g)] = (self.scaled.params()["velocity"] if self.kind is TransformKind.SVF
                                 else self.scaled.call("displacement", g))
            loss = loss + weight * fn(fields[id(g)], g)
        return loss

    def current_matrix(self) -> np.ndarray:
        """The current estimate fixed world -> moving world (the linear part in deformable stages)."""
        if not self.kind.is_linear:
            return self.base
        with torch.no_grad():
            return (self.lin_t @ self.scaled.call("matrix"))[0].detach().cpu().double().numpy()

    def value(self, prob: LevelProblem) -> float:
        with torch.no_grad():
            return float(self.similarity(prob).sum())

    def load(self, track: _Track) -> None:
        self.set_base(track.base)
        self.scaled.set_flat(track.z)


def _optimise_level(st: _Stage, prob: LevelProblem, li: int, hist: LevelHistory, every: int, refresh) -> None:
    """The stage's local optimiser at one level, from the current variables."""
    stage, ctx = st.stage, st.ctx
    iters = int(stage.iterations[li])
    if iters <= 0:
        return
    opt = stage.optimizer if isinstance(stage.optimizer, Optimizer) else Optimizer(stage.optimizer)
    chunks = [iters] if not every else [min(every, iters - i) for i in range(0, iters, every)]
    for ci, n_it in enumerate(chunks):
        if refresh is not None:
            refresh()
        if opt is Optimizer.BOBYQA:
            bobyqa(st.scaled, lambda: st.objective(prob), n_it, hist, step=2.0)
        else:
            gradient_descent(st.scaled, lambda: st.objective(prob).sum(), opt, n_it, stage, hist, ctx.emit,
                             st.si, ctx.n_stages, li, len(stage.shrink))
        if ci > 0 and hist.converged:
            break


def _keep_after(i: int, n_levels: int, n_tracks: int) -> int:
    """Tracks that go on after the ``i``-th level run: two after the coarsest level, then one."""
    if i == n_levels - 1:
        return 1
    return min(n_tracks, 2 if i == 0 else 1)


def _levels_to_run(ctx: StageContext, stage: StageConfig) -> list[int]:
    """The stage's levels, without a level that ``max_level_voxels`` made (nearly) as coarse as the one before
    (a 1 mm image whose finest level is bounded to about 2 mm runs its 2x level once, not twice)."""
    out: list[int] = []
    for li in range(len(stage.shrink)):
        if out and ctx.builder.shrink(stage, li) > 0.95 * ctx.builder.shrink(stage, out[-1]):
            continue
        out.append(li)
    return out


def run_stage(ctx: StageContext, si: int, stage: StageConfig, starts: list[np.ndarray], deformable
              ) -> tuple[np.ndarray, nn.Module | None, StageCheck]:
    """Run one stage from the start matrices ``starts`` (best first; one for every stage but the first).

    Returns:
        ``(linear, stage_transform, check)``: the linear matrix after the stage (fixed world -> moving world),
        the stage's own deformable transform (None for linear stages or a discarded result) and the guard's
        record.
    """
    kind, n_levels = stage.kind, len(stage.shrink)
    levels = _levels_to_run(ctx, stage)
    vgrids = None
    if kind is TransformKind.SVF:  # coarse to fine: the velocity on each level's grid
        finest = ctx.builder.shrink(stage, levels[-1])
        vgrids = [velocity_grid(stage, ctx.fixed_grid, ctx.builder.shrink(stage, li), finest) for li in levels]
    st = _Stage(ctx, si, stage, starts[0], deformable, vgrids[0] if vgrids else None)
    tracks = [_Track(np.asarray(m, dtype=np.float64), st.z0.copy()) for m in starts]
    n_starts = len(tracks)
    prob = None
    for i, li in enumerate(levels):
        tl = time.perf_counter()
        st.load(tracks[0])
        if vgrids and i > 0:
            st.regrid_velocity(vgrids[i])
            tracks[0].z = st.scaled.flat()
        prob = ctx.builder.problem(stage, li, st.current_matrix())
        st.bound_overlap(prob)
        hist = LevelHistory(si, li, kind.value, stage.metric, float(stage.shrink[li]))
        ctx.history.append(hist)
        # learned moving features recomputed in the fixed frame (DISA ``reorient``): before every start of the
        # global search and every ``every`` iterations of a linear stage (skipped while the fixed field of view
        # moved less than a voxel since the last computation)
        every = prob.reoriented.metric.traits.reorient if prob.reoriented is not None and kind.is_linear else 0
        tol = float(min(prob.reoriented.ref.spacing)) if every else 0.0
        refresh = (lambda: prob.reorient(st.current_matrix(), tol)) if every else None
        if li == 0 and stage.global_search and kind.is_linear:
            search_stage = stage
            if ctx.search_angles_deg is not None:
                search_stage = StageConfig(**{**stage.__dict__, "search_angles_deg": list(ctx.search_angles_deg)})
            finalists = global_rotation_search(st.scaled, search_stage, prob, st.objective, st.d, hist, ctx.emit, si,
                                               ctx.n_stages, n_levels, refresh=refresh)
            tracks += [_Track(tracks[0].base, z) for z in finalists]
            n_starts = len(tracks)
        for tr in tracks:
            st.load(tr)
            _optimise_level(st, prob, li, hist, every, refresh)
            tr.z = st.scaled.flat()
            tr.loss = st.value(prob)
        tracks.sort(key=lambda t: t.loss)
        tracks = tracks[: _keep_after(i, len(levels), len(tracks))]
        hist.runtime_s = time.perf_counter() - tl
        log.info("stage %d (%s, %s) level %d/%d: loss %.5g -> %.5g in %d evaluations, %d start(s) (%.2fs)",
                 si + 1, kind.value, stage.metric, li + 1, n_levels, hist.losses[0] if hist.losses else float("nan"),
                 tracks[0].loss, len(hist.losses), n_starts if li == 0 else len(tracks), hist.runtime_s)
    best = tracks[0]
    # the guard: the result against every start pose, on the finest level with the same sampling
    start_losses = []
    for m in starts:
        st.load(_Track(np.asarray(m, dtype=np.float64), st.z0.copy()))
        start_losses.append(st.value(prob))
    i0 = int(np.argmin(start_losses))
    loss_start = float(start_losses[i0])
    kept = not best.loss > loss_start + 1e-7 * max(abs(loss_start), 1.0)
    check = StageCheck(si, kind.value, stage.metric, loss_start, float(best.loss), kept, n_starts)
    if not kept:
        log.warning("stage %d (%s, %s) made the similarity worse (loss %.5g -> %.5g): its result is discarded and "
                    "the registration goes on from the stage's start", si + 1, kind.value, stage.metric, loss_start,
                    best.loss)
        return np.asarray(starts[i0], dtype=np.float64), None, check
    st.load(best)
    new = st.scaled.commit().detach()
    if kind.is_linear:
        return best.base @ new.matrix()[0].detach().cpu().double().numpy(), None, check
    return best.base, new, check
