"""Local and global optimisers of the engine: Adam / L-BFGS on gradients, BOBYQA (nlopt) without, and the
multi-start over rotations that gives linear stages their capture range.

All work on a ``_Scaled`` parameter holder (optimisation variables in mm-like units, see
:mod:`omnireg.optim.engine`) and record every loss value in a :class:`~omnireg.optim.result.LevelHistory`.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np
import torch

from .config import Optimizer

__all__ = ["gradient_descent", "bobyqa", "global_rotation_search"]

log = logging.getLogger(__name__)


def gradient_descent(scaled, closure_loss, opt, iters, stage, hist, emit, si, n_stages, li, n_levels) -> None:
    params = list(scaled.z)
    tol, window = float(stage.tolerance), int(stage.window)

    def converged() -> bool:
        h = hist.losses
        if len(h) <= window:
            return False
        old, new = h[-window - 1], h[-1]
        return abs(old - new) <= tol * max(abs(old), 1e-12)

    if opt is Optimizer.ADAM:
        optim = torch.optim.Adam(params, lr=float(stage.learning_rate))
        for it in range(iters):
            optim.zero_grad(set_to_none=True)
            loss = closure_loss()
            loss.backward()
            optim.step()
            hist.losses.append(float(loss.detach()))
            emit(stage=si, n_stages=n_stages, level=li, n_levels=n_levels, iteration=it + 1, max_iterations=iters, loss=hist.losses[-1])
            if converged():
                hist.converged = True
                break
        return
    if opt is Optimizer.GRADIENT:
        _normalised_descent(params, closure_loss, iters, float(stage.learning_rate), hist, converged,
                            lambda it, loss: emit(stage=si, n_stages=n_stages, level=li, n_levels=n_levels,
                                                  iteration=it + 1, max_iterations=iters, loss=loss))
        return
    max_eval = int(iters * 1.5) + 5
    optim = torch.optim.LBFGS(params, lr=1.0, max_iter=iters, max_eval=max_eval, history_size=10,
                              tolerance_grad=1e-9, tolerance_change=float(stage.tolerance) * 1e-3, line_search_fn="strong_wolfe")
    count = [0]

    def closure():
        optim.zero_grad(set_to_none=True)
        loss = closure_loss()
        loss.backward()
        count[0] += 1
        hist.losses.append(float(loss.detach()))
        # L-BFGS evaluates the loss up to max_eval times (line search included): progress counts evaluations
        emit(stage=si, n_stages=n_stages, level=li, n_levels=n_levels, iteration=count[0], max_iterations=max_eval, loss=hist.losses[-1])
        return loss

    optim.step(closure)
    hist.converged = count[0] < iters


def _largest_step(g: torch.Tensor) -> torch.Tensor:
    """The largest per-point length of a gradient: the vector norm over the component axis of a dense field
    ``(N, D, *S)``, the largest magnitude otherwise."""
    if g.ndim >= 3:
        return g.square().sum(dim=1).sqrt().max()
    return g.abs().max()


def _normalised_descent(params, closure_loss, iters: int, step: float, hist, converged, emit) -> None:
    """Steepest descent whose update is scaled so its largest point moves ``step`` (mm-like units), as ANTs'
    SyN and the demons scale their update fields: the direction and the relative sizes of the gradient are
    kept, so where the similarity has no signal the field does not move (Adam's per-parameter normalisation
    turns weak, noisy gradients into full-sized steps). The step is halved whenever the loss went up."""
    prev = math.inf
    for it in range(iters):
        for p in params:
            p.grad = None
        loss = closure_loss()
        loss.backward()
        value = float(loss.detach())
        if value > prev:
            step *= 0.5
        prev = value
        with torch.no_grad():
            big = max(float(_largest_step(p.grad)) for p in params if p.grad is not None)
            if big > 0:
                for p in params:
                    if p.grad is not None:
                        p.sub_(p.grad * (step / big))
        hist.losses.append(value)
        emit(it, value)
        if converged():
            hist.converged = True
            break


def bobyqa(scaled, loss_fn, max_eval, hist, *, step: float) -> float:
    """Derivative-free local refinement with nlopt's BOBYQA in the scaled parameter units."""
    import nlopt

    x0 = scaled.flat()
    n = x0.size

    def f(x, grad):
        scaled.set_flat(x)
        with torch.no_grad():
            val = float(loss_fn().sum())
        hist.losses.append(val)
        return val

    opt = nlopt.opt(nlopt.LN_BOBYQA, n)
    opt.set_min_objective(f)
    opt.set_initial_step(step)
    opt.set_maxeval(int(max_eval))
    opt.set_xtol_abs(1e-3)
    opt.set_ftol_rel(1e-7)
    try:
        x = opt.optimize(x0)
        val = opt.last_optimum_value()
    except (nlopt.RoundoffLimited, RuntimeError, ValueError):
        x, val = x0, f(x0, None)
    scaled.set_flat(x)
    return float(val)


def _rotation_candidates(d: int, angles_deg: Sequence[float]) -> list[np.ndarray]:
    """Rotation vectors (3D: about each world axis) or angles (2D) for the multi-start search."""
    cands: list[np.ndarray] = []
    for a in angles_deg:
        r = math.radians(float(a))
        if d == 2:
            cands.append(np.array([r]))
        else:
            for axis in range(3):
                v = np.zeros(3)
                v[axis] = r
                if r != 0 or axis == 0:
                    cands.append(v)
    return cands


def global_rotation_search(scaled, stage, prob, stage_loss, d, hist, emit, si, n_stages, n_levels, keep: int = 3,
                           refresh=None) -> list[np.ndarray]:
    """Multi-start over rotations about each axis, scored one by one, then BOBYQA on the best ``keep``.

    The variables are left as they were; the caller optimises the returned finalists (flat variable
    vectors, best first) beside its own start and keeps the best (so a search never loses the start).
    ``refresh`` (optional) is called at every start pose before it is scored or refined (learned moving
    features recomputed in the fixed frame through that pose).
    """
    names = scaled.names
    rot_name = next((n for n in names if "rot" in n.lower() or "angle" in n.lower()), None)
    if rot_name is None:
        log.debug("global search skipped: the transform has no rotation parameter")
        return []
    idx = names.index(rot_name)
    z0 = scaled.flat()
    scale = scaled.scale[rot_name]
    results = []
    cands = _rotation_candidates(d, stage.search_angles_deg)
    for c in cands:
        scaled.set_flat(z0)
        with torch.no_grad():
            scaled.z[idx].copy_(torch.as_tensor(c, dtype=scale.dtype).reshape(scale.shape) / scale)
            if refresh is not None:
                refresh()
            val = float(stage_loss(prob).sum())
        results.append((val, scaled.flat()))
        hist.losses.append(val)
    results.sort(key=lambda r: r[0])
    finalists = []
    for val, zs in results[:keep]:
        scaled.set_flat(zs)
        if refresh is not None:
            refresh()
        refined = bobyqa(scaled, lambda: stage_loss(prob), 60 * len(z0) // 6 + 40, hist, step=4.0)
        finalists.append((refined, scaled.flat()))
    finalists.sort(key=lambda r: r[0])
    scaled.set_flat(z0)
    if refresh is not None:
        refresh()
    best = finalists[0][0] if finalists else math.inf
    emit(stage=si, n_stages=n_stages, level=0, n_levels=n_levels, iteration=0, max_iterations=0, loss=best, phase="search")
    log.info("global search: %d starts, best loss %.5g", len(cands), best)
    return [z for _, z in finalists]
