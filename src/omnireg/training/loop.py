"""The training loop shared by omnireg's learned models: seeded batches, checkpoints, resume, progress.

:func:`fit` trains any network from a batch function and a loss function:

- **Seeded and resumable**: the batch of step ``t`` is drawn with a generator seeded from
  ``(seed, t)`` only, so a run resumed from a checkpoint sees exactly the batches an uninterrupted
  run would have seen (and, on the same machine, reaches the same weights).
- **Checkpoints**: every ``checkpoint_every`` steps (and at the end) the model, optimiser state,
  step and loss history are written atomically to ``checkpoint``; ``resume=True`` continues from it.
- **Progress**: ``progress(event)`` is called after every step with a :class:`TrainEvent`; the library
  never prints (the CLI turns events into a progress bar).
- **Budget, validation, log**: ``max_minutes`` stops the run after the step that exhausts the time
  budget (checkpoint written, so ``resume`` continues exactly); ``validate(model, step)`` runs every
  ``validate_every`` steps and at the end; ``log_path`` receives one JSON line per step (step, loss, loss
  terms, learning rate, time) and per validation.
- **Data parallel**: with a :class:`~omnireg.training.distributed.DistContext` of several processes the
  model is wrapped in DDP (gradients averaged), the logged loss is the mean over processes, the stop
  decision is shared, and only rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..networks.store import atomic_torch_save, save_model, to_plain
from .distributed import DistContext

__all__ = ["FitConfig", "FitResult", "TrainEvent", "fit", "item_generator", "run_files", "run_provenance", "step_generator",
           "write_final_model"]

log = logging.getLogger(__name__)


@dataclass
class FitConfig:
    """Optimisation settings of :func:`fit` (AdamW).

    Attributes:
        steps: total number of optimiser steps.
        lr: learning rate (cosine-decayed to ``lr * final_lr_fraction`` after ``warmup`` steps).
        weight_decay: AdamW weight decay.
        warmup: linear warm-up steps.
        final_lr_fraction: learning rate at the last step, as a fraction of ``lr``.
        grad_clip: maximal gradient norm (``0`` = no clipping).
        seed: seeds the weights' initialisation (by the caller) and every batch.
        checkpoint_every: steps between checkpoints.
    """

    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 1e-3
    warmup: int = 20
    final_lr_fraction: float = 0.05
    grad_clip: float = 5.0
    seed: int = 0
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        if int(self.steps) < 1:
            raise ValueError(f"steps: expected a positive number of steps, got {self.steps!r}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected a positive learning rate, got {self.lr!r}")
        if int(self.checkpoint_every) < 1:
            raise ValueError(f"checkpoint_every: expected >= 1, got {self.checkpoint_every!r}")


@dataclass
class TrainEvent:
    """Progress of :func:`fit` after one step."""

    step: int
    steps: int
    loss: float
    lr: float
    elapsed_s: float
    terms: dict = field(default_factory=dict)
    validation: dict | None = None


@dataclass
class FitResult:
    """What :func:`fit` did: per-step losses and validations (of the whole run, resumed parts included).

    ``stopped_early`` is true when ``max_minutes`` ended the run before ``config.steps``; ``step`` is the
    number of steps done (the checkpoint's step).
    """

    losses: list[float] = field(default_factory=list)
    steps_run: int = 0
    resumed_from: int = 0
    runtime_s: float = 0.0
    validations: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    step: int = 0


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step ``step``: seeded from ``(seed, step)`` only (module docstring)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step) * 7919 + 17) % (2**63 - 1))


def item_generator(seed: int, step: int, item: int) -> torch.Generator:
    """The generator of global batch item ``item`` at step ``step``: seeded from ``(seed, step, item)`` only.

    Items drawn from it do not depend on the batch size or on how the batch is split between processes.
    """
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step) * 7919 + int(item) * 104_729 + 29) % (2**63 - 1))


def run_files(out: str | Path, *, dist: DistContext, resume: bool) -> tuple[Path, Path, Path]:
    """The files of a training run that writes the model file ``out``: ``(out, checkpoint, log)``.

    The checkpoint is ``<out>.ckpt`` (for ``resume``), the log ``<out stem>.log.jsonl``. A fresh run (no
    ``resume``, or nothing to resume from) removes an old log on rank 0, so that the log is this run's.
    """
    out = Path(out)
    ckpt, log_path = out.with_name(out.name + ".ckpt"), out.with_name(out.stem + ".log.jsonl")
    if dist.is_main and (not resume or not ckpt.is_file()):
        log_path.unlink(missing_ok=True)
    return out, ckpt, log_path


def write_final_model(out: Path, model: nn.Module, *, kind: str, meta: dict, result: FitResult, dist: DistContext) -> None:
    """Write the model file at the end of a :func:`fit` run (rank 0). A run resumed from a finished checkpoint (no
    step taken) leaves an existing model file as it is, so it keeps the provenance of the run that made it."""
    if not dist.is_main:
        return
    if result.steps_run == 0 and out.is_file():
        log.info("%s: the checkpoint has all %d steps; nothing to train, the model file is left as it is", out, result.step)
        return
    save_model(out, model, kind=kind, meta=meta)


def run_provenance(device: torch.device, dist: DistContext, started: float) -> dict:
    """Where and how a training run ran, for its model file: device, processes, torch, python, wall time."""
    return {"device": str(device), "processes": dist.world_size, "torch": str(torch.__version__),
            "python": platform.python_version(), "wall_s_this_run": round(time.time() - started, 1)}


def _lr_at(config: FitConfig, step: int) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    span = max(1, config.steps - config.warmup)
    t = min(1.0, (step - config.warmup) / span)
    lo = config.final_lr_fraction
    return config.lr * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t)))


def fit(
    model: nn.Module,
    make_batch: Callable[[int, torch.Generator], object],
    loss_fn: Callable[[nn.Module, object], torch.Tensor | tuple[torch.Tensor, dict]],
    config: FitConfig,
    *,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    extra_state: dict | None = None,
    progress: Callable[[TrainEvent], None] | None = None,
    max_minutes: float | None = None,
    validate: Callable[[nn.Module, int], dict] | None = None,
    validate_every: int = 0,
    log_path: str | Path | None = None,
    on_checkpoint: Callable[[int, "FitResult"], None] | None = None,
    dist: DistContext | None = None,
) -> FitResult:
    """Train ``model`` for ``config.steps`` AdamW steps (or until ``max_minutes``).

    Args:
        model: the network (trained in place, on its own device).
        make_batch: ``make_batch(step, generator) -> batch``; must draw all randomness from ``generator``
            (or from :func:`item_generator` per item).
        loss_fn: ``loss_fn(model, batch) -> loss`` or ``(loss, {"term": value, ...})``; the model passed is
            the DDP wrapper when several processes run.
        config: the :class:`FitConfig`.
        checkpoint: file for checkpoints (``None``: none are written).
        resume: continue from ``checkpoint`` if it exists (its settings must match ``config``).
        extra_state: plain data saved in the checkpoint (e.g. the data split), checked on resume.
        progress: called with a :class:`TrainEvent` after every step (rank 0 only).
        max_minutes: time budget of this run in minutes (``None``: none); the run stops after the first step
            that ends past it, with a checkpoint.
        validate: ``validate(model, step) -> dict`` of plain numbers (rank 0 only; model in eval mode, no grad).
        validate_every: steps between validations (0: only at the end); also run at the end.
        log_path: JSON-lines file appended with ``{"step", "loss", "terms", "lr", "time_s"}`` per step and
            ``{"step", "validation": {...}}`` per validation (rank 0 only).
        on_checkpoint: ``on_checkpoint(step, result)`` after every checkpoint and at the end (rank 0 only),
            e.g. to write a usable model file.
        dist: the data-parallel context (``None``: one process).

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: ``resume`` with a checkpoint written for a different configuration or model.
        FloatingPointError: a non-finite loss.
    """
    dist = dist or DistContext()
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    result = FitResult()
    start = 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    fit_plain = to_plain(dataclasses.asdict(config))
    if resume and ckpt is not None and ckpt.is_file():
        start = _resume(ckpt, model, opt, result, fit_plain, extra_state)
    net = dist.wrap(model, device)
    writer = _JsonLines(log_path) if (log_path is not None and dist.is_main) else None

    def save(step: int) -> None:
        if ckpt is None or not dist.is_main:
            return
        atomic_torch_save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "losses": result.losses,
                "validations": result.validations,
                "fit_config": fit_plain,
                "extra": to_plain(extra_state) if extra_state is not None else None,
            },
            ckpt,
        )
        if on_checkpoint is not None:
            on_checkpoint(step, result)

    def run_validation(step: int) -> dict | None:
        if validate is None:
            return None
        record = None
        if dist.is_main:
            model.eval()
            with torch.no_grad():
                record = {"step": step, **validate(model, step)}
            model.train()
            result.validations.append(record)
            if writer is not None:
                writer.write({"step": step, "validation": record})
        dist.barrier()
        return record

    t0 = time.perf_counter()
    budget_s = None if max_minutes is None else float(max_minutes) * 60.0
    model.train()
    step = start
    for step in range(start, config.steps):
        lr = _lr_at(config, step)
        for group in opt.param_groups:
            group["lr"] = lr
        value, term_values = _optimizer_step(model, net, opt, loss_fn, make_batch(step, step_generator(config.seed, step)),
                                             config.grad_clip, dist, step)
        result.losses.append(value)
        result.steps_run += 1
        elapsed = time.perf_counter() - t0
        if writer is not None:
            writer.write({"step": step + 1, "loss": value, "terms": term_values, "lr": lr, "time_s": round(elapsed, 3)})
        last = step + 1 == config.steps
        over = dist.any(budget_s is not None and elapsed >= budget_s and not last, device)
        record = None
        if validate_every and (step + 1) % validate_every == 0 and not (last or over):
            record = run_validation(step + 1)
        if (step + 1) % config.checkpoint_every == 0 and not (last or over):
            save(step + 1)
        if progress is not None and dist.is_main:
            progress(TrainEvent(step + 1, config.steps, value, lr, elapsed, term_values, record))
        if over:
            result.stopped_early = True
            log.info("time budget of %.1f min reached after step %d", max_minutes, step + 1)
            break
    done = step + 1 if config.steps > start else start
    result.step = done
    if done > start:
        record = run_validation(done)
        if record is not None and progress is not None and dist.is_main:
            progress(TrainEvent(done, config.steps, result.losses[-1], _lr_at(config, done - 1), time.perf_counter() - t0, {}, record))
        save(done)
    model.eval()
    result.runtime_s = time.perf_counter() - t0
    if writer is not None:
        writer.close()
    return result


def _optimizer_step(model: nn.Module, net: nn.Module, opt: torch.optim.Optimizer, loss_fn, batch, grad_clip: float,
                    dist: DistContext, step: int) -> tuple[float, dict[str, float]]:
    """One AdamW step; returns the loss and its terms, averaged over the processes."""
    out = loss_fn(net, batch)
    loss, terms = out if isinstance(out, tuple) else (out, {})
    opt.zero_grad(set_to_none=True)
    loss.backward()
    names = sorted(terms)
    parts = [loss.detach().float()] + [torch.as_tensor(terms[k], device=loss.device).detach().float().reshape(()) for k in names]
    values = dist.mean(torch.stack(parts))
    value = float(values[0])
    if not math.isfinite(value):
        raise FloatingPointError(f"training diverged: loss {value} at step {step}")
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return value, {k: float(v) for k, v in zip(names, values[1:].tolist())}


def _resume(ckpt: Path, model: nn.Module, opt: torch.optim.Optimizer, result: FitResult, fit_plain: dict,
            extra_state: dict | None) -> int:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    saved = state.get("fit_config", {})
    differs = {k for k in fit_plain if k != "steps" and saved.get(k) != fit_plain[k]}
    if differs:
        raise ValueError(f"resume: checkpoint {ckpt} was written with different settings: {sorted(differs)}")
    if extra_state is not None and state.get("extra") != to_plain(extra_state):
        raise ValueError(f"resume: checkpoint {ckpt} was written for different data or model settings")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise ValueError(f"resume: checkpoint {ckpt} does not match the model: {str(exc).splitlines()[0]}") from None
    opt.load_state_dict(state["optimizer"])
    start = int(state["step"])
    result.losses = list(state.get("losses", []))
    result.validations = list(state.get("validations", []))
    result.resumed_from = start
    result.step = start
    log.info("resumed from %s at step %d", ckpt, start)
    return start


class _JsonLines:
    """Appends one JSON object per line and flushes (the log survives a killed run)."""

    def __init__(self, path: str | Path) -> None:
        self.file = open(path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(to_plain(record)) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()
