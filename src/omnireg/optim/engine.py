"""The per-pair registration engine: ``register(fixed, moving, config=...)``.

How a run proceeds:

1. Both images are brought to float32 on the requested device and (by default) rescaled to their
   robust [0.5, 99.5] percentile range, so step sizes and metric options mean the same for any scanner.
2. Initialisation (:mod:`omnireg.optim.initialize`): candidate matrices (``auto``: chosen by how the two
   fields of view compare) are scored with the first stage's metric at its coarsest level; the best few,
   the identity always among them, are the first stage's start poses.
3. Stages run in order (:mod:`omnireg.optim.stage`). Stage ``k`` optimises a new transform ``S_k`` started
   at identity and the mapping used is ``T = T_prev ∘ S_k`` (``S_k`` acts on the fixed-space points first),
   so every stage starts exactly where the previous one ended. Linear stages are folded into one affine
   matrix; deformable stages (B-spline, SVF) are kept as a transform applied before it. A stage whose
   result has a worse similarity than its start is discarded, with a warning (the guard).
4. Each stage runs a Gaussian pyramid (coarse to fine). A linear stage with ``global_search`` first scores
   a multi-start over rotations about every axis at the coarsest level, refines the best ones with BOBYQA
   (nlopt, derivative-free); those finalists and the stage's own start are optimised (Adam or L-BFGS) and
   the best continues to the finer levels.

Parameters are optimised in scaled units (:mod:`omnireg.optim.params`). Masks are weights in fixed space;
the similarity is computed over ``fixed_mask * warped(moving_mask) * overlap`` where ``overlap`` is the
(interpolated) support of the warped moving image (see :mod:`omnireg.similarity`).
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Iterable

import numpy as np
import torch
from torch import nn

from ..core import Image
from ..core.enums import as_enum
from ..core.intensity import robust_normalize
from .config import Init, RegistrationConfig, StageConfig
from .presets import DEFAULT_PRESET, preset
from .initialize import field_of_view, fov_center, initial_candidates
from .params import matrix_tensor
from .problem import ProblemBuilder
from .result import Callback, ProgressEvent, RegistrationResult
from .stage import StageContext, run_stage

__all__ = ["register", "similarity_before_after"]

log = logging.getLogger(__name__)

#: start poses of the first stage: the best-scored initial candidates (the identity is added to them)
INIT_STARTS = 3
#: rotations tried by the global search when the fields of view are partial (degrees)
PARTIAL_SEARCH_ANGLES_DEG = (-15.0, 0.0, 15.0)


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



def _as_config(config: RegistrationConfig | str | dict) -> RegistrationConfig:
    if isinstance(config, str):
        config = preset(config)
    elif isinstance(config, dict):
        config = RegistrationConfig.from_dict(config)
    config = copy.deepcopy(config.validate())
    config.stages = config.effective_stages()
    return config


def _initial_starts(config, builder: ProblemBuilder, ctx: StageContext, fdata, mdata, fixed: Image, moving: Image,
                    initial) -> tuple[list[np.ndarray], dict]:
    """The first stage's start matrices (best first) and a record of the initialisation for result.json."""
    d = fixed.ndim
    first = config.stages[0]
    if initial is not None:
        init = np.asarray(initial, dtype=np.float64)
        if init.shape != (d + 1, d + 1):
            raise ValueError(f"initial: expected a ({d + 1}, {d + 1}) matrix, got {init.shape}")
        return [init], {"method": "given"}
    method = as_enum(config.init, Init, "init").value
    record: dict = {"method": method}
    fov = None
    if method == "auto":
        fov = field_of_view(fdata, fixed.grid, mdata, moving.grid)
        record["field_of_view"] = fov.to_dict()
        if fov.partial:
            ctx.search_angles_deg = list(PARTIAL_SEARCH_ANGLES_DEG)
    cands = initial_candidates(fdata, fixed.grid, mdata, moving.grid, method, fov=fov)
    if len(cands) == 1:
        record["chosen"] = cands[0].name
        return [cands[0].matrix], record
    prob = builder.problem(first, 0)
    with torch.no_grad():
        mats = torch.stack([matrix_tensor(c.matrix, ctx.dtype, ctx.device) for c in cands])
        pts = prob.points.reshape(1, -1, d)
        moved = pts @ mats[:, :d, :d].transpose(1, 2) + mats[:, None, :d, d]
        losses = prob.loss_from_points(moved.reshape(len(cands), *prob.points.shape[1:])).cpu().numpy()
    order = [int(i) for i in np.argsort(losses, kind="stable")]
    keep = order[:INIT_STARTS] if first.kind.is_linear else order[:1]
    if first.kind.is_linear and cands[0].name == "identity" and 0 not in keep:
        keep.append(0)  # an initialisation is kept only if it beats the identity start
    record.update(candidates=len(cands), starts=[cands[i].name for i in keep],
                  scores={cands[i].name: float(losses[i]) for i in order[:8]})
    log.info("initialisation %s: %d candidates, starts %s", method, len(cands), record["starts"])
    return [cands[i].matrix for i in keep], record


def _deformable_output(deformable: nn.Module | None, n_parts: int, last_deformable: StageConfig | None, fixed: Image):
    """The deformable part as returned: the given initial part as it is when no stage added to it, an SVF as
    it is (exact inverse), anything else as a displacement field on the grid of the finest level it was
    optimised on (written at that resolution)."""
    from .. import transforms as T

    if deformable is None or last_deformable is None:
        return deformable
    if n_parts == 1 and isinstance(deformable, T.StationaryVelocityField):
        return T.StationaryVelocityField(deformable.velocity.detach().float(), deformable.grid,
                                         steps=deformable.steps, learnable=False)
    shrink = float(last_deformable.shrink[-1]) if last_deformable is not None else 1.0
    grid = fixed.grid if shrink == 1 else fixed.grid.with_spacing([s * shrink for s in fixed.grid.spacing])
    u = deformable.displacement(grid, dtype=torch.float32)
    return T.DisplacementField(u.detach().cpu(), grid, learnable=False)


# ---------------------------------------------------------------------------------------------- engine
def _device(config: RegistrationConfig) -> torch.device:
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was requested but no CUDA device is available")
    return device


def _engine_data(image: Image, mask: Image | None, normalize: bool, device, dtype):
    """An image as a ``(1, C, *S)`` tensor (robustly normalised inside its mask if asked) and its 0/1 mask or None."""
    data = image.batch().detach().to(device=device, dtype=dtype)
    weights = None if mask is None else (mask.batch().to(device=device, dtype=dtype)[:, :1] != 0).to(dtype)
    return (robust_normalize(data, weights) if normalize else data), weights


def _result(fixed, moving, config, builder, ctx, fmask, device, *, linear, deformable, parts, last_def,
            stage_times, checks, init_record, t_start) -> RegistrationResult:
    """The :class:`RegistrationResult` of the stages' end state: output transform, warped image, final metrics."""
    from .. import transforms as T

    n_stages = len(config.stages)
    affine = T.Affine.from_matrix(torch.as_tensor(linear, dtype=torch.float64))
    field = _deformable_output(deformable, parts, last_def, fixed)
    total = affine if field is None else T.compose(affine.to(torch.float32), field)
    warped = T.resample(moving, total, onto=fixed.grid, interp="linear")
    last = config.stages[-1]
    before, after = _final_metrics(fixed, moving, total, last.metric, builder.metric(last), fmask, device)
    b, a = before[last.metric], after[last.metric]
    if a < b - 1e-6 * max(abs(b), 1.0):  # similarities are higher-is-better (SimilarityMeasure.forward); NaN: no warning
        # the stages' guards compare losses on their own pyramid levels and sampling; a learned measure's engine form
        # (warped feature maps) can disagree with its full-resolution value (DeepSim on the aligned ITK T1/PD slices)
        log.warning("the result scores lower than the unregistered images by %s at full resolution (%.4g -> %.4g): "
                    "check it before use (a different --metric, or --init / --no-global-search)", last.metric, b, a)
    ctx.emit(stage=n_stages - 1, n_stages=n_stages, level=0, n_levels=1, iteration=0, max_iterations=0,
             loss=after[last.metric], phase="done")
    return RegistrationResult(
        transform=total,
        linear=affine,
        deformable=field,
        warped=warped,
        history=ctx.history,
        metric_before=before,
        metric_after=after,
        runtime_s=time.perf_counter() - t_start,
        stage_runtimes_s=stage_times,
        config=config.to_dict(),
        stage_checks=[c.to_dict() for c in checks],
        initialization=init_record,
    )


def register(
    fixed: Image,
    moving: Image,
    *,
    config: RegistrationConfig | str | dict = DEFAULT_PRESET,
    fixed_mask: Image | None = None,
    moving_mask: Image | None = None,
    initial: np.ndarray | None = None,
    initial_deformable: nn.Module | None = None,
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
        initial_deformable: optional deformable transform ``D_0`` (fixed world -> fixed world, e.g. a network's
            field) that acts on the fixed-space points before everything the stages find: the mapping is
            ``L ∘ D_0 ∘ S_1 ∘ ...``, so deformable stages refine ``D_0`` (instance optimisation) and the guard
            compares them with it. Returned as ``deformable`` unchanged when no deformable stage adds to it.
        callbacks: called with a :class:`ProgressEvent` at every iteration.

    Returns:
        A :class:`RegistrationResult`.

    Raises:
        TypeError, ValueError: on invalid images, masks or configuration.
    """
    from .. import transforms as T

    t_start = time.perf_counter()
    config = _as_config(config)
    _check_inputs(fixed, moving, fixed_mask, moving_mask)
    if initial_deformable is not None and (not isinstance(initial_deformable, T.Transform)
                                           or initial_deformable.ndim != fixed.ndim):
        raise TypeError(f"initial_deformable: expected a {fixed.ndim}D omnireg Transform, got {initial_deformable!r}")
    device, dtype = _device(config), torch.float32
    callbacks = list(callbacks)

    def emit(**kw) -> None:
        ev = ProgressEvent(**kw)
        for cb in callbacks:
            cb(ev)

    fdata, fmask = _engine_data(fixed, fixed_mask, config.normalize, device, dtype)
    mdata, mmask = _engine_data(moving, moving_mask, config.normalize, device, dtype)
    builder = ProblemBuilder(config, fdata, fixed.grid, mdata, moving.grid, fmask, mmask,
                             torch.Generator().manual_seed(int(config.seed)))
    n_stages = len(config.stages)
    ctx = StageContext(builder, fixed.grid, fov_center(fixed.grid), 0.5 * float(np.linalg.norm(fixed.grid.extent_mm())),
                       dtype, device, emit, n_stages)

    starts, init_record = _initial_starts(config, builder, ctx, fdata, mdata, fixed, moving, initial)
    first = config.stages[0]
    emit(stage=0, n_stages=n_stages, level=0, n_levels=len(first.shrink), iteration=0, max_iterations=0,
         loss=float("nan"), phase="init")
    linear, deformable, last_def = starts[0], initial_deformable, None
    parts = 0 if initial_deformable is None else 1
    stage_times, checks = [], []
    for si, stage in enumerate(config.stages):
        t0 = time.perf_counter()
        linear, new, check = run_stage(ctx, si, stage, starts if si == 0 else [linear], deformable)
        if new is not None:
            deformable = new if deformable is None else T.compose(deformable, new)
            parts, last_def = parts + 1, stage
        checks.append(check)
        stage_times.append(time.perf_counter() - t0)

    return _result(fixed, moving, config, builder, ctx, fmask, device, linear=linear, deformable=deformable,
                   parts=parts, last_def=last_def, stage_times=stage_times, checks=checks, init_record=init_record,
                   t_start=t_start)


def similarity_before_after(
    fixed: Image,
    moving: Image,
    transform,
    *,
    metric: str,
    metric_options: dict | None = None,
    fixed_mask: Image | None = None,
    device: str = "cpu",
) -> tuple[dict, dict]:
    """The similarity ``metric`` of ``fixed`` with ``moving`` before (identity) and after ``transform``, as the
    engine reports them (``metric_before``/``metric_after``): full resolution, robustly normalised intensities.

    For methods other than the engine (a network), so their results report the same numbers.

    Args:
        fixed, moving: the images.
        transform: the fixed -> moving mapping (pull).
        metric: a registered similarity name; ``metric_options`` its options.
        fixed_mask: optional weights on the fixed grid.
        device: where to compute.

    Returns:
        ``({metric: before}, {metric: after})`` (NaN where a mapping leaves no overlap).
    """
    from ..similarity import get_similarity

    dev = torch.device(device)
    fmask = None if fixed_mask is None else (fixed_mask.batch().to(device=dev, dtype=torch.float32)[:, :1] != 0).float()
    measure = get_similarity(metric, **dict(metric_options or {})).for_unit_range()
    return _final_metrics(fixed, moving, transform, metric, measure, fmask, dev)


def _final_metrics(fixed, moving, total, name, metric, fmask, device) -> tuple[dict, dict]:
    """The last stage's similarity at full resolution, before (identity mapping) and after registration.

    Both are computed over ``fixed_mask * support`` where ``support`` is where the (warped) moving image
    has data, on robustly normalised intensities as during the optimisation; a mapping that leaves no overlap
    has NaN (said in a warning).
    """
    from .. import transforms as T

    with torch.no_grad():
        f = robust_normalize(fixed.batch().float().to(device), fmask)
        # the moving channels and a channel of ones (its support) are warped together: one resampling each
        data = moving.data.to(torch.float32)
        stacked = moving.with_data(torch.cat([data, torch.ones_like(data[:1])]))
        c = data.shape[0]
        warped, masks = [], []
        for t in (T.Affine(ndim=fixed.ndim, dtype=torch.float32), total):
            both = T.resample(stacked, t, onto=fixed.grid, interp="linear").batch().to(device)
            img, support = both[:, :c], both[:, c:]
            mask = support if fmask is None else support * fmask
            warped.append(robust_normalize(img, (mask > 0.5).float()) if float((mask > 0.5).sum()) > 0 else None)
            masks.append(mask)
        ok = [i for i, w in enumerate(warped) if w is not None]
        values = [float("nan")] * 2
        if ok:
            got = metric.evaluate(f, [warped[i] for i in ok], [masks[i] for i in ok], grid=fixed.grid, fixed_mask=fmask)
            for i, v in zip(ok, got):
                values[i] = v
        if len(ok) < 2:
            log.warning("the %s mapping leaves no overlap between the images: its similarity is NaN",
                        "identity" if 0 not in ok else "registered")
    return {name: values[0]}, {name: values[1]}
