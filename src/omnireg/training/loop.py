"""The training loop shared by omnireg's learned models: seeded batches, checkpoints, resume, progress.

:func:`fit` trains any network from a batch function and a loss function:

- **Seeded and resumable**: the batch of step ``t`` is drawn with a generator seeded from
  ``(seed, t)`` only, so a run resumed from a checkpoint sees exactly the batches an uninterrupted
  run would have seen (and, on the same machine, reaches the same weights).
- **Checkpoints**: every ``checkpoint_every`` steps (and at the end) the model, optimiser state,
  step and loss history are written atomically to ``checkpoint``; ``resume=True`` continues from it.
- **Progress**: ``progress(event)`` is called after every step with a :class:`TrainEvent`; the library
  never prints (the CLI turns events into a progress bar).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..networks.store import atomic_torch_save, to_plain

__all__ = ["FitConfig", "FitResult", "TrainEvent", "fit", "step_generator"]

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


@dataclass
class FitResult:
    """What :func:`fit` did: per-step losses (of the whole run, resumed parts included)."""

    losses: list[float] = field(default_factory=list)
    steps_run: int = 0
    resumed_from: int = 0
    runtime_s: float = 0.0


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step ``step``: seeded from ``(seed, step)`` only (module docstring)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step) * 7919 + 17) % (2**63 - 1))


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
    loss_fn: Callable[[nn.Module, object], torch.Tensor],
    config: FitConfig,
    *,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    extra_state: dict | None = None,
    progress: Callable[[TrainEvent], None] | None = None,
) -> FitResult:
    """Train ``model`` for ``config.steps`` AdamW steps.

    Args:
        model: the network (trained in place).
        make_batch: ``make_batch(step, generator) -> batch``; must draw all randomness from ``generator``.
        loss_fn: ``loss_fn(model, batch) -> scalar loss``.
        config: the :class:`FitConfig`.
        checkpoint: file for checkpoints (``None``: none are written).
        resume: continue from ``checkpoint`` if it exists (its settings must match ``config``).
        extra_state: plain data saved in the checkpoint (e.g. the data split), checked on resume.
        progress: called with a :class:`TrainEvent` after every step.

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: ``resume`` with a checkpoint written for a different configuration or model.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    result = FitResult()
    start = 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    fit_plain = to_plain(dataclasses.asdict(config))
    if resume and ckpt is not None and ckpt.is_file():
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
        result.resumed_from = start
        log.info("resumed from %s at step %d", ckpt, start)

    def save(step: int) -> None:
        if ckpt is None:
            return
        atomic_torch_save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "losses": result.losses,
                "fit_config": fit_plain,
                "extra": to_plain(extra_state) if extra_state is not None else None,
            },
            ckpt,
        )

    t0 = time.perf_counter()
    model.train()
    for step in range(start, config.steps):
        lr = _lr_at(config, step)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = make_batch(step, step_generator(config.seed, step))
        loss = loss_fn(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training diverged: loss {float(loss)} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        value = float(loss.detach())
        result.losses.append(value)
        result.steps_run += 1
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            save(step + 1)
        if progress is not None:
            progress(TrainEvent(step + 1, config.steps, value, lr, time.perf_counter() - t0))
    model.eval()
    result.runtime_s = time.perf_counter() - t0
    return result
