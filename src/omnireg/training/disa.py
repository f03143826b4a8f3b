"""Training DISA feature networks: patch pairs from unaligned image pairs, an exact teacher, L2 loss.

For every training step (all randomness from the step's generator, :mod:`omnireg.training.loop`):

1. draw ``2 x batch_size`` candidate pairs: an image pair, a centre ``c`` in the first image (a
   foreground voxel, or with probability ``background_fraction`` any voxel, so that the features of
   flat background learn the teacher's 0 there), an offset ``o`` (a mixture: 35 % Gaussian with 1 mm sd per axis, 35 % uniform in a ball of
   ``max_offset_mm / 3``, 30 % uniform up to ``max_offset_mm``), one random frame (rotation and
   reflection) shared by both patches and a patch spacing jittered log-uniformly by
   ``1 +- scale_jitter`` around ``patch_spacing_mm``;
2. cut patch ``P1`` of the first image at ``c`` and ``P2`` of the second at ``c + o`` (world mm), each
   ``patch_size`` points per axis; swap the roles with probability 1/2;
3. compute the teacher ``s(P1, P2)`` in ``[0, 1]`` (:func:`teacher_similarity`, LC2 by default) and keep
   all pairs with ``s >= low_target`` but at most ``low_fraction`` of the batch below it;
4. augment each patch's intensities independently (sign flip with probability ``sign_flip``, scale
   in ``intensity_scale``, shift up to ``+-intensity_shift``), which none of the teachers can see (LC2,
   MI and NMI are invariant to them);
5. loss = mean squared error between ``<f(P1), f(P2)>`` (centre feature vectors, norm at most 1) and ``s``.

Differences from the published recipe (scaled to 2 CPU cores): 3D patches of 21^3 and 2D patches of
41^2 (not 33^3 cut from 51^3; 21^3 is the smallest size holding LC2's radius-7 window with a margin and
is 4x cheaper), a batch of 24 (3D) / 32 (2D) for a few thousand steps (minutes to half an hour on one
core instead of many GPU epochs); the frame is applied while sampling in world space, so no larger
patch is cut first; a cosine learning-rate schedule after a short warm-up; a quarter of the centres
anywhere in the image (background included).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from ..networks.disa import DISAConfig, DISANet
from ..networks.store import save_model, to_plain
from .loop import FitConfig, FitResult, TrainEvent, fit
from .patches import TrainingVolume, load_training_volume, random_frames, read_pairs_csv, sample_patches

__all__ = ["DISATrainConfig", "TEACHERS", "disa_validation", "teacher_similarity", "train_disa", "DISAPairSampler"]

log = logging.getLogger(__name__)

TEACHERS = ("lc2", "mi", "nmi", "mind")


@dataclass
class DISATrainConfig:
    """Settings of :func:`train_disa` (module docstring for their meaning)."""

    ndim: int = 3
    patch_size: int = 21
    patch_spacing_mm: float = 2.0
    scale_jitter: float = 0.25
    max_offset_mm: float = 24.0
    background_fraction: float = 0.25
    batch_size: int = 24
    teacher: str = "lc2"
    radii: tuple[int, ...] = (3, 5, 7)
    low_target: float = 0.1
    low_fraction: float = 0.1
    sign_flip: float = 0.3
    intensity_scale: tuple[float, float] = (0.7, 1.3)
    intensity_shift: float = 0.1
    channels: tuple[int, int, int] = (8, 16, 32)
    out_channels: int = 16
    validation_patches: int = 1000
    fit: FitConfig = field(default_factory=FitConfig)

    def __post_init__(self) -> None:
        if self.ndim not in (2, 3):
            raise ValueError(f"ndim: expected 2 or 3, got {self.ndim!r}")
        if self.patch_size % 4 != 1 or self.patch_size < 9:
            raise ValueError(f"patch_size: expected 4 m + 1 >= 9 (centre on the stride-4 grid), got {self.patch_size!r}")
        if self.teacher not in TEACHERS:
            raise ValueError(f"teacher: expected one of {', '.join(TEACHERS)}, got {self.teacher!r}")
        if max(self.radii) > self.patch_size // 2:
            raise ValueError(f"radii: windows up to radius {max(self.radii)} do not fit in patches of {self.patch_size}")
        if not self.patch_spacing_mm > 0:
            raise ValueError(f"patch_spacing_mm: expected > 0, got {self.patch_spacing_mm!r}")
        if int(self.batch_size) < 2:
            raise ValueError(f"batch_size: expected >= 2, got {self.batch_size!r}")
        if isinstance(self.fit, dict):
            self.fit = FitConfig(**self.fit)


def teacher_similarity(
    name: str, fixed: torch.Tensor, moving: torch.Tensor, *, spacing_mm: float = 1.0, radii: Sequence[int] = (3, 5, 7)
) -> torch.Tensor:
    """The exact patch similarity that DISA learns, in ``[0, 1]``, for patch pairs ``(B, 1, *P)`` -> ``(B,)``.

    - ``lc2``: :func:`omnireg.similarity.lc2_patch` (the mean over centred windows of ``radii``).
    - ``nmi``: ``NMI - 1`` over the whole patches (32 bins, cubic B-spline Parzen windows).
    - ``mi``: ``MI / ln 32`` (mutual information over the ``ln(bins)`` upper bound), clamped to ``[0, 1]``.
    - ``mind``: ``exp(-10 SSD)`` of MIND-SSC descriptors (``SSD`` = mean squared descriptor difference).
    """
    from .. import similarity as S

    d = fixed.ndim - 2
    spacing = [float(spacing_mm)] * d
    with torch.no_grad():
        if name == "lc2":
            return S.lc2_patch(fixed, moving, radii=radii, spacing=spacing)
        if name == "nmi":
            return (S.nmi(fixed, moving, bins=32) - 1.0).clamp(0.0, 1.0)
        if name == "mi":
            return (S.mi(fixed, moving, bins=32) / math.log(32)).clamp(0.0, 1.0)
        if name == "mind":
            return torch.exp(10.0 * S.mind(fixed, moving))
    raise ValueError(f"teacher: expected one of {', '.join(TEACHERS)}, got {name!r}")


class DISAPairSampler:
    """Draws training batches ``(P1, P2, target)`` from image pairs (module docstring)."""

    def __init__(self, pairs: Sequence[tuple[TrainingVolume, TrainingVolume]], config: DISATrainConfig) -> None:
        if not pairs:
            raise ValueError("pairs: no usable image pair")
        self.pairs = list(pairs)
        self.config = config

    def _candidates(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.config
        which = torch.randint(len(self.pairs), (n,), generator=g)
        p1 = torch.empty(n, 1, *([cfg.patch_size] * cfg.ndim))
        p2 = torch.empty_like(p1)
        spacing = cfg.patch_spacing_mm * torch.exp(
            (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * math.log1p(cfg.scale_jitter)
        )
        for k in range(len(self.pairs)):
            idx = (which == k).nonzero().reshape(-1)
            if idx.numel() == 0:
                continue
            a, b = self.pairs[k]
            m = idx.numel()
            centres = a.random_centres(m, g, anywhere=cfg.background_fraction)
            offsets = self._offsets(m, a.ndim, g)
            frames = random_frames(m, a.ndim, cfg.ndim, g)
            p1[idx] = sample_patches(a, centres, frames, size=cfg.patch_size, spacing_mm=spacing[idx])
            p2[idx] = sample_patches(b, centres + offsets, frames, size=cfg.patch_size, spacing_mm=spacing[idx])
        swap = torch.rand(n, generator=g) < 0.5
        p1, p2 = torch.where(swap.reshape(-1, *[1] * (p1.ndim - 1)), p2, p1), torch.where(
            swap.reshape(-1, *[1] * (p1.ndim - 1)), p1, p2
        )
        target = torch.cat([
            teacher_similarity(cfg.teacher, p1[i : i + 64], p2[i : i + 64], spacing_mm=1.0, radii=cfg.radii)
            for i in range(0, n, 64)
        ])
        return p1, p2, target.float()

    def _offsets(self, m: int, d: int, g: torch.Generator) -> torch.Tensor:
        cfg = self.config
        kind = torch.rand(m, generator=g, dtype=torch.float64)
        direction = torch.randn(m, d, generator=g, dtype=torch.float64)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        u = torch.rand(m, generator=g, dtype=torch.float64)
        near = (cfg.max_offset_mm / 3) * u.pow(1.0 / d)
        far = cfg.max_offset_mm * u
        radius = torch.where(kind < 0.7, near, far)
        gauss = torch.randn(m, d, generator=g, dtype=torch.float64)
        return torch.where((kind < 0.35).unsqueeze(1), gauss, direction * radius.unsqueeze(1))

    def _augment(self, p: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        cfg = self.config
        n = p.shape[0]
        shape = (n,) + (1,) * (p.ndim - 1)
        sign = torch.where(torch.rand(n, generator=g) < cfg.sign_flip, -1.0, 1.0).reshape(shape)
        lo, hi = cfg.intensity_scale
        scale = (lo + (hi - lo) * torch.rand(n, generator=g)).reshape(shape)
        shift = ((torch.rand(n, generator=g) * 2 - 1) * cfg.intensity_shift).reshape(shape)
        return sign * scale * p + shift

    def batch(self, step: int, g: torch.Generator, *, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch ``(P1, P2, target)``: ``(B, 1, *P)`` twice and ``(B,)``."""
        cfg = self.config
        b = cfg.batch_size
        p1, p2, t = self._candidates(2 * b, g)
        low = (t < cfg.low_target).nonzero().reshape(-1)
        high = (t >= cfg.low_target).nonzero().reshape(-1)
        n_low = min(low.numel(), max(int(round(cfg.low_fraction * b)), b - high.numel()))
        keep = torch.cat([high[: b - n_low], low[:n_low]])
        p1, p2, t = p1[keep], p2[keep], t[keep]
        if augment:
            p1, p2 = self._augment(p1, g), self._augment(p2, g)
        return p1, p2, t


def _predict(model: DISANet, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    f = model.centre_features(torch.cat([p1, p2]))
    n = p1.shape[0]
    return (f[:n] * f[n:]).sum(1)


def disa_loss(model: DISANet, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean squared error between the feature dot product and the teacher's similarity."""
    p1, p2, t = batch
    return F.mse_loss(_predict(model, p1, p2), t)


@torch.no_grad()
def disa_validation(
    model: DISANet, sampler: DISAPairSampler, *, n: int = 1000, seed: int = 12345, plot: str | Path | None = None
) -> dict:
    """Correlation of predicted and exact similarity on ``n`` patch pairs drawn (seeded) by ``sampler``.

    Returns:
        ``{"n", "pearson", "spearman", "mae", "rmse", "target_mean"}``; with ``plot`` a scatter PNG is written.
    """
    from scipy import stats

    model.eval()
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    while sum(len(t) for t in targets) < n:
        p1, p2, t = sampler.batch(0, g, augment=True)
        preds.append(_predict(model, p1, p2))
        targets.append(t)
    pred = torch.cat(preds)[:n].numpy().astype(np.float64)
    target = torch.cat(targets)[:n].numpy().astype(np.float64)
    out = {
        "n": int(len(pred)),
        "pearson": float(stats.pearsonr(pred, target)[0]),
        "spearman": float(stats.spearmanr(pred, target)[0]),
        "mae": float(np.mean(np.abs(pred - target))),
        "rmse": float(np.sqrt(np.mean((pred - target) ** 2))),
        "target_mean": float(target.mean()),
    }
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
        ax.scatter(target, pred, s=4, alpha=0.4)
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlabel(f"exact {sampler.config.teacher.upper()}")
        ax.set_ylabel("DISA feature dot product")
        ax.set_title(f"held-out: Pearson {out['pearson']:.3f}, Spearman {out['spearman']:.3f}", fontsize=9)
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.3, 1.05)
        fig.tight_layout()
        tmp = Path(plot).with_name(Path(plot).name + ".tmp.png")
        fig.savefig(tmp)
        plt.close(fig)
        tmp.replace(plot)
    return out


def _load_pairs(rows: Sequence[dict], ndim: int) -> list[tuple[TrainingVolume, TrainingVolume]]:
    pairs = []
    for row in rows:
        a, b = load_training_volume(row["fixed"]), load_training_volume(row["moving"])
        if a.ndim != b.ndim:
            raise ValueError(f"pairs: {row['fixed']} is {a.ndim}D but {row['moving']} is {b.ndim}D")
        if a.ndim < ndim:
            log.warning("skipping the %dD pair %s / %s for a %dD model", a.ndim, row["fixed"], row["moving"], ndim)
            continue
        pairs.append((a, b))
    return pairs


def _name(source: object) -> str:
    return source if isinstance(source, str) else str(source) if isinstance(source, Path) else "<in-memory image>"


def train_disa(
    pairs: str | Path | Sequence[dict],
    out: str | Path,
    *,
    config: DISATrainConfig | None = None,
    validation_pairs: str | Path | Sequence[dict] | None = None,
    resume: bool = False,
    progress: Callable[[TrainEvent], None] | None = None,
    command: str = "",
) -> dict:
    """Train a DISA feature network on image pairs and write it (with its validation report) to ``out``.

    Args:
        pairs: a pairs CSV (:func:`omnireg.training.patches.read_pairs_csv`) or its rows (dicts with
            ``fixed``, ``moving`` (paths or :class:`omnireg.core.Image`) and ``split``). Rows with
            ``split = val`` are held out for validation (with ``validation_pairs``, that file's rows are).
        out: the model file; beside it ``<out>.ckpt`` (checkpoint), ``<out stem>.validation.json`` and
            ``.validation.png`` (scatter of predicted vs exact similarity on held-out pairs).
        config: a :class:`DISATrainConfig`.
        validation_pairs: another pairs CSV (or rows) used as the held-out set.
        resume: continue from ``<out>.ckpt``.
        progress: called after every step.
        command: the command line, recorded in the model's metadata.

    Returns:
        The metadata saved with the model (data, settings, losses, validation figures).
    """
    config = config or DISATrainConfig()
    out = Path(out)
    rows = read_pairs_csv(pairs) if isinstance(pairs, (str, Path)) else list(pairs)
    if validation_pairs is not None:
        val_rows = read_pairs_csv(validation_pairs) if isinstance(validation_pairs, (str, Path)) else list(validation_pairs)
        train_rows = [r for r in rows if r["split"] == "train"]
    else:
        train_rows = [r for r in rows if r["split"] == "train"]
        val_rows = [r for r in rows if r["split"] == "val"]
    if not train_rows:
        raise ValueError("pairs: no training pair (every row has split 'val')")
    torch.manual_seed(config.fit.seed)  # the network's initial weights
    model = DISANet(
        DISAConfig(
            ndim=config.ndim, channels=config.channels, out_channels=config.out_channels,
            teacher=config.teacher, patch_spacing_mm=config.patch_spacing_mm,
        )
    )
    t0 = time.perf_counter()
    sampler = DISAPairSampler(_load_pairs(train_rows, config.ndim), config)
    extra = {"train": [(_name(r["fixed"]), _name(r["moving"])) for r in train_rows], "config": {k: v for k, v in to_plain(config).items() if k not in ("fit", "validation_patches")}}
    result: FitResult = fit(
        model, sampler.batch, disa_loss, config.fit,
        checkpoint=out.with_name(out.name + ".ckpt"), resume=resume, extra_state=extra, progress=progress,
    )
    validation = {}
    if val_rows:
        val_sampler = DISAPairSampler(_load_pairs(val_rows, config.ndim), config)
        validation = disa_validation(
            model, val_sampler, n=config.validation_patches, plot=out.with_name(out.stem + ".validation.png")
        )
        log.info("validation on %d held-out patch pairs: Pearson %.3f, Spearman %.3f", validation["n"],
                 validation["pearson"], validation["spearman"])
    losses = result.losses
    tail = max(1, len(losses) // 10)
    meta = {
        "method": "DISA (arXiv 2307.09931): dot product of CNN features approximating a patch similarity",
        "command": command,
        "train_pairs": [{"fixed": _name(r["fixed"]), "moving": _name(r["moving"])} for r in train_rows],
        "validation_pairs": [{"fixed": _name(r["fixed"]), "moving": _name(r["moving"])} for r in val_rows],
        "train_config": to_plain(config),
        "steps": len(losses),
        "loss_first_10pct": float(np.mean(losses[:tail])),
        "loss_last_10pct": float(np.mean(losses[-tail:])),
        "train_seconds": round(time.perf_counter() - t0, 1),
        "torch_threads": torch.get_num_threads(),
        "validation": validation,
    }
    save_model(out, model, kind="disa", meta=meta)
    report = out.with_name(out.stem + ".validation.json")
    tmp = report.with_name(report.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(report)
    return meta
