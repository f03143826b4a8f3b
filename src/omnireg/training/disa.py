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

Two options change what one step teaches (both off by default, both measured in
``src/omnireg/data/weights/DISA.md``):

- **Groups** (``group_size`` K > 1, ``relative_weight`` > 0): the pairs come in groups of K that share
  one anchor patch and differ only by their offsets, and the loss adds ``relative_weight`` times the
  squared error of the within-group deviations (prediction and target minus their group means). The
  plain loss is dominated by how similar two places are at all; registration needs how the similarity
  changes with the offset at one place (:func:`offset_profile` measures exactly that). With
  ``relative_norm`` each place's within-group error is divided by its targets' variance over the group
  (:func:`_within_group_error`).
- **Dense crops** (``crop_size`` > 0): instead of one centre feature per patch, whole crops of
  ``crop_size`` voxels are compared at every interior feature node (:meth:`DISAPairSampler.dense_batch`,
  :func:`disa_dense_loss`): the target at a node is the teacher's score of the patches centred there
  (:func:`omnireg.similarity.lc2_patch_map`), so one network evaluation yields hundreds of targets instead
  of one, and the features are computed in context as at registration time (no patch border a few
  voxels from the compared node).

Differences from the published recipe (scaled to 2 CPU cores): 3D patches of 25^3 (21^3 before this was
found: with ``4 m + 1`` voxels and ``m`` odd the centre voxel is not a feature node, and the "centre"
feature sat 2 voxels off-centre per axis; sizes are now ``8 m + 1``) and 2D patches of 41^2 (not 33^3 cut
from 51^3), a batch of 24 (3D) / 32 (2D) for a few thousand steps (minutes to an hour on one or two cores
instead of many GPU epochs); the frame is applied while sampling in world space, so no larger patch is cut
first; a cosine learning-rate schedule after a short warm-up; a quarter of the centres anywhere in the
image (background included); optionally the groups and dense crops above.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from ..core.files import write_json_atomic
from ..networks.disa import DISAConfig, DISANet, clip_norm
from ..networks.store import save_model, to_plain
from .loop import FitConfig, FitResult, TrainEvent, fit
from .patches import TrainingVolume, load_training_volume, random_frames, read_pairs_csv, sample_patches

__all__ = ["DISATrainConfig", "TEACHERS", "disa_validation", "offset_profile", "teacher_similarity", "train_disa", "DISAPairSampler"]

log = logging.getLogger(__name__)

TEACHERS = ("lc2", "mi", "nmi", "mind")


@dataclass
class DISATrainConfig:
    """Settings of :func:`train_disa` (module docstring for their meaning)."""

    ndim: int = 3
    patch_size: int = 25
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
    group_size: int = 1
    relative_weight: float = 0.0
    relative_norm: bool = False
    crop_size: int = 0
    fit: FitConfig = field(default_factory=FitConfig)

    def __post_init__(self) -> None:
        if self.ndim not in (2, 3):
            raise ValueError(f"ndim: expected 2 or 3, got {self.ndim!r}")
        if self.patch_size % 8 != 1:
            raise ValueError(f"patch_size: expected 8 m + 1 >= 9 (the centre voxel 4 m on the stride-4 feature grid), "
                             f"got {self.patch_size!r}")
        if self.teacher not in TEACHERS:
            raise ValueError(f"teacher: expected one of {', '.join(TEACHERS)}, got {self.teacher!r}")
        if max(self.radii) > self.patch_size // 2:
            raise ValueError(f"radii: windows up to radius {max(self.radii)} do not fit in patches of {self.patch_size}")
        if not self.patch_spacing_mm > 0:
            raise ValueError(f"patch_spacing_mm: expected > 0, got {self.patch_spacing_mm!r}")
        if int(self.batch_size) < 2:
            raise ValueError(f"batch_size: expected >= 2, got {self.batch_size!r}")
        if int(self.group_size) < 1 or int(self.batch_size) % int(self.group_size):
            raise ValueError(f"group_size: expected a positive divisor of batch_size ({self.batch_size}), got {self.group_size!r}")
        if self.crop_size and (self.crop_size % 4 != 1 or dense_nodes(self.crop_size, max(self.radii)).numel() == 0):
            raise ValueError(f"crop_size: expected 0 (centre patches) or 4 m + 1 with a feature node {max(self.radii) + 1} "
                             f"voxels inside every border, got {self.crop_size!r}")
        if self.relative_weight < 0 or (self.relative_weight > 0 and self.group_size < 2):
            raise ValueError(f"relative_weight: expected >= 0, and 0 unless group_size >= 2, got {self.relative_weight!r}")
        if isinstance(self.fit, dict):
            self.fit = FitConfig(**self.fit)


def dense_nodes(size: int, radius: int) -> torch.Tensor:
    """Feature-node indices (per axis) of a crop of ``size`` voxels whose windows of ``radius`` (and the
    gradient stencil) stay inside it: nodes ``k`` with ``radius + 1 <= 4 k <= size - 2 - radius``."""
    return torch.tensor([k for k in range(-(-size // 4)) if radius + 1 <= 4 * k <= size - 2 - radius], dtype=torch.long)


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

    def _candidates(self, groups: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``groups x group_size`` candidate pairs, in blocks of ``group_size`` rows sharing one anchor patch."""
        cfg = self.config
        k_members = int(cfg.group_size)
        n = groups * k_members
        which = torch.randint(len(self.pairs), (groups,), generator=g)
        p1 = torch.empty(n, 1, *([cfg.patch_size] * cfg.ndim))
        p2 = torch.empty_like(p1)
        spacing = cfg.patch_spacing_mm * torch.exp(
            (torch.rand(groups, generator=g, dtype=torch.float64) * 2 - 1) * math.log1p(cfg.scale_jitter)
        )
        for k in range(len(self.pairs)):
            idx = (which == k).nonzero().reshape(-1)
            if idx.numel() == 0:
                continue
            a, b = self.pairs[k]
            m = idx.numel()
            rows = (idx.unsqueeze(1) * k_members + torch.arange(k_members)).reshape(-1)
            centres = a.random_centres(m, g, anywhere=cfg.background_fraction)
            offsets = self._offsets(m * k_members, a.ndim, g)
            frames = random_frames(m, a.ndim, cfg.ndim, g)
            anchors = sample_patches(a, centres, frames, size=cfg.patch_size, spacing_mm=spacing[idx])
            p1[rows] = anchors.repeat_interleave(k_members, dim=0)
            p2[rows] = sample_patches(
                b, centres.repeat_interleave(k_members, dim=0) + offsets, frames.repeat_interleave(k_members, dim=0),
                size=cfg.patch_size, spacing_mm=spacing[idx].repeat_interleave(k_members),
            )
        # the teacher sees either image as the first ("fixed") one; the dot product is symmetric
        swap = (torch.rand(groups, generator=g) < 0.5).repeat_interleave(k_members).reshape(-1, *[1] * (p1.ndim - 1))
        first, second = torch.where(swap, p2, p1), torch.where(swap, p1, p2)
        target = torch.cat([
            teacher_similarity(cfg.teacher, first[i : i + 64], second[i : i + 64], spacing_mm=1.0, radii=cfg.radii)
            for i in range(0, n, 64)
        ])
        if k_members == 1:  # single pairs: the swapped patches (as the shipped models were trained)
            return first, second, target.float()
        return p1, p2, target.float()

    def dense_batch(self, step: int, g: torch.Generator, *, augment: bool = True) -> tuple[torch.Tensor, ...]:
        """One batch of whole crops ``(A, B, target, weight)`` for dense training (``crop_size > 0``).

        ``batch_size / group_size`` groups: one anchor crop ``A`` ``(G, 1, *C)`` (a centre, one random
        frame and spacing, either volume of a pair as the anchor) and ``group_size`` crops ``B``
        ``(G K, 1, *C)`` of the other volume through the same frame, shifted by their own offsets.
        ``target`` ``(G K, n)``: the teacher's patch score (:func:`omnireg.similarity.lc2_patch_map`, the
        anchor as the regressor image) at the ``n`` interior feature nodes (:func:`dense_nodes`), i.e. the
        score of the patch pair centred at each node. ``weight`` ``(G K, n)`` caps the nodes below
        ``low_target`` at about ``low_fraction`` of the total weight.
        """
        from ..similarity.lc2 import lc2_patch_map

        cfg = self.config
        if cfg.teacher != "lc2":
            raise ValueError(f"teacher: dense crop training supports lc2, got {cfg.teacher!r}")
        k_members = int(cfg.group_size)
        groups = cfg.batch_size // k_members
        size, d = cfg.crop_size, cfg.ndim
        which = torch.randint(len(self.pairs), (groups,), generator=g)
        flip = torch.rand(groups, generator=g) < 0.5
        spacing = cfg.patch_spacing_mm * torch.exp(
            (torch.rand(groups, generator=g, dtype=torch.float64) * 2 - 1) * math.log1p(cfg.scale_jitter))
        a_crops = torch.empty(groups, 1, *([size] * d))
        b_crops = torch.empty(groups * k_members, 1, *([size] * d))
        for i in range(groups):
            a, b = self.pairs[int(which[i])]
            if bool(flip[i]):
                a, b = b, a
            centre = a.random_centres(1, g, anywhere=cfg.background_fraction)
            frame = random_frames(1, a.ndim, d, g)
            offsets = self._offsets(k_members, a.ndim, g)
            a_crops[i] = sample_patches(a, centre, frame, size=size, spacing_mm=spacing[i : i + 1])[0]
            b_crops[i * k_members : (i + 1) * k_members] = sample_patches(
                b, centre + offsets, frame.expand(k_members, -1, -1), size=size, spacing_mm=spacing[i].repeat(k_members))
        nodes = dense_nodes(size, max(cfg.radii))
        index = 4 * nodes
        with torch.no_grad():
            score = lc2_patch_map(a_crops.repeat_interleave(k_members, dim=0).double(), b_crops.double(), radii=cfg.radii)
        target = score[(slice(None), 0) + torch.meshgrid(*([index] * d), indexing="ij")].reshape(groups * k_members, -1).float()
        low = target < cfg.low_target
        n_low, n_high = int(low.sum()), int((~low).sum())
        w_low = min(1.0, cfg.low_fraction / (1 - cfg.low_fraction) * n_high / max(n_low, 1)) if n_high else 1.0
        weight = torch.where(low, torch.full_like(target, w_low), torch.ones_like(target))
        if augment:
            a_crops, b_crops = self._augment(a_crops, g), self._augment(b_crops, g)
        return a_crops, b_crops, target, weight

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
        """One batch ``(P1, P2, target)``: ``(B, 1, *P)`` twice and ``(B,)``.

        With ``group_size`` K > 1 the rows come in groups of K consecutive pairs that share one anchor
        patch: the K rows of ``P1`` in a group are the same (augmented once), the ``P2`` rows are cut at
        K offsets from the anchor's centre (one frame and spacing per group). The low-target cap counts
        groups: a group is low when all its targets are below ``low_target``.
        """
        cfg = self.config
        k_members = int(cfg.group_size)
        b = cfg.batch_size // k_members
        p1, p2, t = self._candidates(2 * b, g)
        group_max = t.reshape(-1, k_members).amax(1)
        low = (group_max < cfg.low_target).nonzero().reshape(-1)
        high = (group_max >= cfg.low_target).nonzero().reshape(-1)
        n_low = min(low.numel(), max(int(round(cfg.low_fraction * b)), b - high.numel()))
        keep = torch.cat([high[: b - n_low], low[:n_low]])
        keep = (keep.unsqueeze(1) * k_members + torch.arange(k_members)).reshape(-1)
        p1, p2, t = p1[keep], p2[keep], t[keep]
        if augment and k_members == 1:
            p1, p2 = self._augment(p1, g), self._augment(p2, g)
        elif augment:
            p1 = self._augment(p1[::k_members], g).repeat_interleave(k_members, dim=0)
            p2 = self._augment(p2, g)
        return p1, p2, t


def _predict(model: DISANet, p1: torch.Tensor, p2: torch.Tensor, group_size: int = 1) -> torch.Tensor:
    """Dot products ``(B,)``; with ``group_size`` K > 1 the anchor of each group (``p1[::K]``) is evaluated once."""
    anchors = p1[::group_size] if group_size > 1 else p1
    f = model.centre_features(torch.cat([anchors, p2]))
    n = anchors.shape[0]
    f1 = f[:n].repeat_interleave(group_size, dim=0) if group_size > 1 else f[:n]
    return (f1 * f[n:]).sum(1)


#: variance floor of :func:`_within_group_error` with ``normalize`` (a standard deviation of about 0.03 in LC2)
RELATIVE_NORM_FLOOR = 1e-3


def _within_group_error(pred: torch.Tensor, target: torch.Tensor, group_size: int, normalize: bool = False) -> torch.Tensor:
    """Mean squared error of the deviations from their group means (groups of ``group_size`` consecutive rows).

    With ``normalize`` each place's error (a group's, or a group's at one node) is divided by the variance of its
    targets over the group plus :data:`RELATIVE_NORM_FLOOR`: a place where the teacher falls by 8 % under a small
    shift weighs as much as one where it falls by half, so the small differences that put the optimum in place are
    not drowned by the large ones (a scale-free form of the within-place fit that the offset profile reports).
    """
    dp = pred.reshape(-1, group_size, *pred.shape[1:])
    dt = target.reshape(dp.shape)
    err = ((dp - dp.mean(1, keepdim=True)) - (dt - dt.mean(1, keepdim=True))) ** 2
    if not normalize:
        return err.mean()
    var = dt.var(1, unbiased=False, keepdim=True)
    return (err / (var + RELATIVE_NORM_FLOOR)).mean()


def disa_loss(
    model: DISANet, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], *, group_size: int = 1, relative_weight: float = 0.0,
    relative_norm: bool = False,
) -> torch.Tensor:
    """Mean squared error between the feature dot product and the teacher's similarity, plus
    ``relative_weight`` times the same error after subtracting each group's mean (groups of ``group_size``
    consecutive pairs sharing an anchor patch, :meth:`DISAPairSampler.batch`).

    The relative term asks the dot product to follow how the similarity changes with the **offset** at one
    place, which is what registration optimises; the plain term alone was measured to learn mostly how
    similar patches are at all (a 3D model at Pearson 0.69 predicted 0.366 at 0 mm and 0.370 at 4 mm where
    exact LC2 fell from 0.66 to 0.41).
    """
    p1, p2, t = batch
    pred = _predict(model, p1, p2, group_size)
    loss = F.mse_loss(pred, t)
    if relative_weight > 0 and group_size > 1:
        loss = loss + relative_weight * _within_group_error(pred, t, group_size, relative_norm)
    return loss


def disa_dense_loss(
    model: DISANet, batch: tuple[torch.Tensor, ...], *, radius: int, group_size: int = 1, relative_weight: float = 0.0,
    relative_norm: bool = False,
) -> torch.Tensor:
    """:func:`disa_loss` on whole crops (:meth:`DISAPairSampler.dense_batch`): the weighted squared error
    between the dot products of the anchor's and each shifted crop's feature vectors at every interior
    node (:func:`dense_nodes` for the teacher's largest window ``radius``) and the teacher's score of the
    patches centred there, plus ``relative_weight`` times the error of their deviations from the mean
    over the group's ``group_size`` offsets (per node)."""
    a, b, t, w = batch
    d = a.ndim - 2
    nodes = torch.meshgrid(*([dense_nodes(a.shape[2], radius)] * d), indexing="ij")
    feats = clip_norm(model(torch.cat([a, b])), dim=1)
    n_a, c = a.shape[0], feats.shape[1]
    fa = feats[:n_a][(slice(None), slice(None)) + nodes].reshape(n_a, c, -1)
    fb = feats[n_a:][(slice(None), slice(None)) + nodes].reshape(b.shape[0], c, -1)
    pred = (fa.repeat_interleave(group_size, dim=0) * fb).sum(1)  # (G K, n)
    loss = (w * (pred - t) ** 2).sum() / w.sum()
    if relative_weight > 0 and group_size > 1:
        loss = loss + relative_weight * _within_group_error(pred, t, group_size, relative_norm)
    return loss


@torch.no_grad()
def disa_validation(
    model: DISANet, sampler: DISAPairSampler, *, n: int = 1000, seed: int = 12345, plot: str | Path | None = None
) -> dict:
    """Correlation of predicted and exact similarity on ``n`` patch pairs drawn (seeded) by ``sampler``.

    Returns:
        ``{"n", "pearson", "spearman", "mae", "rmse", "target_mean", "offset_profile"}`` (the last from
        :func:`offset_profile`); with ``plot`` a scatter PNG is written.
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
        "offset_profile": offset_profile(model, sampler),
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
        from ..core.files import atomic_output

        with atomic_output(Path(plot), force=True) as tmp:
            fig.savefig(tmp)
        plt.close(fig)
    return out


OFFSETS_MM = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)


@torch.no_grad()
def offset_profile(
    model: DISANet, sampler: DISAPairSampler, *, centres: int = 128, offsets_mm: Sequence[float] = OFFSETS_MM, seed: int = 54321
) -> dict:
    """How the prediction follows the teacher as the second patch moves away from the first's place.

    For ``centres`` foreground centres drawn (seeded) from the sampler's pairs, one random frame and
    direction each, the second patch is cut at offsets ``offsets_mm`` along that direction (model
    spacing, no intensity augmentation). This is what registration sees; a model can correlate well over
    many places (:func:`disa_validation`) and still barely change with the offset.

    Returns:
        ``{"offsets_mm", "teacher_mean", "pred_mean", "within_pearson"}``: the mean teacher and prediction
        per offset, and the mean over centres of the Pearson correlation across offsets (centres whose
        teacher is constant are skipped).
    """
    cfg = sampler.config
    g = torch.Generator().manual_seed(seed)
    per_pair = torch.randint(len(sampler.pairs), (centres,), generator=g)
    teacher, pred = [], []
    for k, (a, b) in enumerate(sampler.pairs):
        m = int((per_pair == k).sum())
        if m == 0:
            continue
        c = a.random_centres(m, g)
        frames = random_frames(m, a.ndim, cfg.ndim, g)
        direction = torch.randn(m, a.ndim, generator=g, dtype=torch.float64)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        p1 = sample_patches(a, c, frames, size=cfg.patch_size, spacing_mm=cfg.patch_spacing_mm)
        f1 = model.centre_features(p1)
        t_k, p_k = [], []
        for off in offsets_mm:
            p2 = sample_patches(b, c + float(off) * direction, frames, size=cfg.patch_size, spacing_mm=cfg.patch_spacing_mm)
            t_k.append(teacher_similarity(cfg.teacher, p1, p2, spacing_mm=1.0, radii=cfg.radii))
            p_k.append((f1 * model.centre_features(p2)).sum(1))
        teacher.append(torch.stack(t_k, 1))
        pred.append(torch.stack(p_k, 1))
    t = torch.cat(teacher).double()
    p = torch.cat(pred).double()
    tc, pc = t - t.mean(1, keepdim=True), p - p.mean(1, keepdim=True)
    denom = (tc.norm(dim=1) * pc.norm(dim=1))
    ok = denom > 1e-9
    within = float(((tc * pc).sum(1)[ok] / denom[ok]).mean()) if bool(ok.any()) else float("nan")
    return {"offsets_mm": [float(o) for o in offsets_mm], "teacher_mean": [round(float(v), 4) for v in t.mean(0)],
            "pred_mean": [round(float(v), 4) for v in p.mean(0)], "within_pearson": within}


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
    init: str | Path | None = None,
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
        init: a DISA model file to start from (fine-tuning): its architecture must equal the one ``config``
            asks for; its weights replace the random initial ones (the optimiser starts afresh). Recorded
            in the metadata. Ignored when ``resume`` finds a checkpoint (the checkpoint's weights win).

    Raises:
        ValueError: no training pair, or an ``init`` model of another architecture.

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
    if init is not None:
        from ..networks.store import load_model

        start, _ = load_model(init, kind="disa")
        if to_plain(start.config) != to_plain(model.config):
            raise ValueError(f"init: {init} is a DISA model with config {to_plain(start.config)}, "
                             f"the training asks for {to_plain(model.config)}")
        model.load_state_dict(start.state_dict())
    t0 = time.perf_counter()
    sampler = DISAPairSampler(_load_pairs(train_rows, config.ndim), config)
    extra = {"train": [(_name(r["fixed"]), _name(r["moving"])) for r in train_rows], "config": {k: v for k, v in to_plain(config).items() if k not in ("fit", "validation_patches")}}
    if config.crop_size:
        batch_fn = sampler.dense_batch
        loss_fn = functools.partial(disa_dense_loss, radius=max(config.radii), group_size=config.group_size,
                                    relative_weight=config.relative_weight, relative_norm=config.relative_norm)
    else:
        batch_fn = sampler.batch
        loss_fn = functools.partial(disa_loss, group_size=config.group_size, relative_weight=config.relative_weight,
                                    relative_norm=config.relative_norm)
    result: FitResult = fit(
        model, batch_fn, loss_fn, config.fit,
        checkpoint=out.with_name(out.name + ".ckpt"), resume=resume, extra_state=extra, progress=progress,
    )
    validation = {}
    if val_rows:
        # validation draws single pairs (group_size 1), so figures compare across training settings
        val_sampler = DISAPairSampler(_load_pairs(val_rows, config.ndim),
                                      dataclasses.replace(config, group_size=1, relative_weight=0.0, relative_norm=False, crop_size=0))
        validation = disa_validation(
            model, val_sampler, n=config.validation_patches, plot=out.with_name(out.stem + ".validation.png")
        )
        prof = validation["offset_profile"]
        log.info("validation on %d held-out patch pairs: Pearson %.3f, Spearman %.3f; within-place Pearson over offsets "
                 "%.3f (prediction %s vs teacher %s at %s mm)", validation["n"], validation["pearson"], validation["spearman"],
                 prof["within_pearson"], prof["pred_mean"], prof["teacher_mean"], prof["offsets_mm"])
    losses = result.losses
    tail = max(1, len(losses) // 10)
    meta = {
        "method": "DISA (arXiv 2307.09931): dot product of CNN features approximating a patch similarity",
        "command": command,
        "init": None if init is None else str(init),
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
    write_json_atomic(report, meta, force=True)
    return meta
