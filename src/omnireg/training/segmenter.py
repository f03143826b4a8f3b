"""Training the anatomy segmenter (DeepSim's feature network) on images synthesised from label maps.

``train_segmenter(config, out, label_maps=...)`` trains a :class:`~omnireg.networks.segmenter.Segmenter`
on single images synthesised from the ``train`` subjects of a prepared label-map folder
(:class:`~omnireg.training.pairs.LabelMapImages`: a random deformation and, in ``random`` mode, a new
contrast per image, as SynthSeg), with the soft Dice loss over the 32 named structures
(:func:`~omnireg.training.losses.soft_dice_loss` on the softmax probabilities; background excluded) plus
``ce_weight`` (default 1) times the cross-entropy over all 33 classes, through
the shared loop :func:`omnireg.training.loop.fit` (AdamW, atomic checkpoints, exact resume, time budget,
JSON-lines log, DDP). The ``test`` subjects of the folder are never read. It writes, like the registration
trainer:

- ``out``: the model file (config with the class table, frame and spacing; weights; ``meta`` with the
  training settings, command, data provenance and the last validation), rewritten at every checkpoint so a
  run stopped by its budget always leaves a usable model;
- ``out.ckpt``: the checkpoint for ``resume``;
- ``<out stem>.log.jsonl``: one JSON line per step and per validation.

Data parallel: with several processes each one normalises its batch-normalisation layers over its own share
of the batch (no SyncBatchNorm), so a DDP run equals one process with the same global batch only
approximately (measured: weights 2.6e-3 apart after 4 steps of a tiny 2D model with 2 processes).

Validation: every ``validation`` subject is synthesised once per contrast mode of ``val_modes`` (no
deformation, fixed seeds; in 2D at the ``val_slices`` fractions of the labelled slice range) and segmented;
the hard Dice of each of the 32 named structures present is averaged over those images. Recorded: ``dice``
(mean over structures), ``dice_<mode>`` per contrast mode, ``dice_worst_structure`` and ``per_structure``
(FreeSurfer name -> Dice).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..networks.segmenter import Segmenter, SegmenterConfig
from ..networks.store import save_model, to_plain
from .distributed import DistContext
from .labelmaps import NAMED_STRUCTURES, LabelMapSet, read_prepared_index, structure_lookup
from .loop import FitConfig, FitResult, TrainEvent, fit, run_files, run_provenance, write_final_model, item_generator
from .losses import one_hot, soft_dice_loss
from .pairs import LabelMapImages, brain_slice_range
from .registration import dice_per_structure
from .synthesis import ContrastMode, SynthesisConfig, check_synthetic_run, synthesize

__all__ = ["SegmenterTrainConfig", "segmenter_synthesis", "train_segmenter", "validate_segmenter", "validation_images"]

log = logging.getLogger(__name__)

LABELS: tuple[int, ...] = (0,) + tuple(NAMED_STRUCTURES)
"""The segmenter's classes: background and the 32 named structures, in the order of the structure indices."""


def segmenter_synthesis(mode: str = "random", **overrides) -> SynthesisConfig:
    """The synthesis defaults for segmenters: SynthSeg-like spatial augmentation (random rotation up to 10 deg,
    scaling up to 10 %, translation up to 4 voxels, the default smooth deformation) and a 20 % chance that the
    extra-cerebral labels become background (skull-stripped images), on top of :class:`SynthesisConfig`."""
    base = {"mode": mode, "rotation_max_deg": 10.0, "scale_max": 0.1, "translation_max_vox": 4.0, "strip_prob": 0.2}
    return SynthesisConfig(**{**base, **overrides})


@dataclass
class SegmenterTrainConfig:
    """Everything that defines a segmenter training run (saved in the model file's ``meta``).

    Attributes:
        ndim: 3, or 2 (slices of the 3D maps along ``axis``).
        model_options: :class:`SegmenterConfig` fields, e.g. ``{"enc_channels": [16, 32, 64]}``.
        synthesis: :class:`SynthesisConfig` (default :func:`segmenter_synthesis`; ``mode`` random or t1).
        batch_size: images per step (the global batch, split between processes).
        axis, slice_margin: 2D slicing (see :class:`~omnireg.training.pairs.LabelMapPairs`).
        val_every: steps between validations (0: at the end only).
        val_modes: contrast modes of the validation images.
        val_slices: fractions of the labelled slice range where 2D validation images are cut.
        ce_weight: weight of a cross-entropy term added to the soft Dice loss (0: Dice only). Default 1: with the
            soft Dice alone a 2D run (random contrasts, 20000 steps) ended with the right putamen's class covering
            the background (its validation Dice 0.0001, the black background of a real T1 labelled putamen); with
            cross-entropy added the same run (24000 steps) reached a validation Dice of 0.613 against 0.586.
        fit: optimisation settings (steps, lr, seed, checkpoint_every, ...).
    """

    ndim: int = 3
    model_options: dict = field(default_factory=dict)
    synthesis: SynthesisConfig = field(default_factory=segmenter_synthesis)
    batch_size: int = 1
    axis: int = 2
    slice_margin: float = 0.2
    val_every: int = 100
    val_modes: tuple[str, ...] = ("random", "t1")
    val_slices: tuple[float, ...] = (0.3, 0.5, 0.7)
    ce_weight: float = 1.0
    fit: FitConfig = field(default_factory=lambda: FitConfig(lr=3e-3, weight_decay=0.0))

    def __post_init__(self) -> None:
        check_synthetic_run(self)
        if not float(self.ce_weight) >= 0:
            raise ValueError(f"ce_weight: expected a weight >= 0, got {self.ce_weight!r}")
        self.val_modes = tuple(ContrastMode(str(m).lower()).value for m in self.val_modes)
        self.val_slices = tuple(float(f) for f in self.val_slices)
        unknown = set(self.model_options) - {f.name for f in dataclasses.fields(SegmenterConfig)} | (
            set(self.model_options) & {"ndim", "labels", "spacing_mm", "direction"})
        if unknown:
            raise ValueError(f"model_options: unknown or reserved fields {sorted(unknown)} (the data set ndim, labels, spacing and frame)")


# ------------------------------------------------------------------------------------------- validation
def validation_images(maps: LabelMapSet, synthesis: SynthesisConfig, *, modes: tuple[str, ...], seed: int, ndim: int = 3,
                      axis: int = 2, slice_fractions: tuple[float, ...] = (0.3, 0.5, 0.7),
                      slice_margin: float = 0.2) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Held-out images with their structure labels: ``[(mode, image (1, 1, *S), labels (1, 1, *S)), ...]``.

    Every subject of ``maps`` is synthesised once per contrast mode without deformation and without skull
    stripping, from generators seeded by ``seed`` (the same images at every validation); in 2D at
    ``slice_fractions`` of the trimmed labelled slice range along ``axis``.
    """
    lut = structure_lookup(maps.values)
    slices: list[int | None] = [None]
    if ndim == 2:
        lo, hi = brain_slice_range(maps.labels, axis, slice_margin)
        slices = [min(hi - 1, lo + int(round(f * (hi - lo)))) for f in slice_fractions]
    out = []
    n = 0
    for mode in modes:
        settings = dataclasses.replace(synthesis, mode=mode, strip_prob=0.0)
        for a in range(len(maps.names)):
            for z in slices:
                src = maps.labels[a : a + 1]
                if z is not None:
                    src = src.select(axis + 2, z)
                g = item_generator(seed, -1, n)
                n += 1
                img = synthesize(src, maps.values, settings, [g], deform=False)
                out.append((mode, img.image, lut[img.labels.long()]))
    return out


def validate_segmenter(model: nn.Module, images: list[tuple[str, torch.Tensor, torch.Tensor]], labels: tuple[int, ...]) -> dict:
    """Hard Dice per structure on the validation images (module docstring); ``labels`` are the FreeSurfer numbers."""
    classes = len(labels)
    per_mode: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for mode, image, target in images:
            pred = model(image).argmax(1, keepdim=True)
            per_mode.setdefault(mode, []).append(dice_per_structure(pred, target, classes))
    every = torch.cat([d for ds in per_mode.values() for d in ds])
    structs = torch.nanmean(every, dim=0)
    names = [NAMED_STRUCTURES.get(v, str(v)) for v in labels[1:]]
    present = ~torch.isnan(structs)
    record = {"dice": float(structs[present].mean()) if present.any() else float("nan"),
              "dice_worst_structure": float(structs[present].min()) if present.any() else float("nan"),
              "images": len(images)}
    for mode, ds in per_mode.items():
        record[f"dice_{mode}"] = float(torch.nanmean(torch.nanmean(torch.cat(ds), dim=0)))
    record["per_structure"] = {name: round(float(v), 4) for name, v, p in zip(names, structs, present) if p}
    return record


# ------------------------------------------------------------------------------------------- training
def _model_config(config: SegmenterTrainConfig, maps: LabelMapSet) -> SegmenterConfig:
    spacing = maps.grid.spacing if config.ndim == 3 else tuple(s for a, s in enumerate(maps.grid.spacing) if a != config.axis)
    if max(spacing) > 1.01 * min(spacing):
        raise ValueError(f"label_maps: expected isotropic voxels, got spacing {maps.grid.spacing}")
    direction = tuple(map(tuple, maps.grid.direction.tolist())) if config.ndim == 3 else None
    return SegmenterConfig(ndim=config.ndim, labels=LABELS, spacing_mm=float(spacing[0]), direction=direction,
                           **config.model_options)


def _training_data(config: SegmenterTrainConfig, label_maps: str | Path, device: torch.device):
    """``(training maps, image source, validation images, data provenance)`` of a run (test subjects never read)."""
    split = read_prepared_index(label_maps)["split"]
    test = set(split.get("test", []))
    if test & (set(split.get("train", [])) | set(split.get("validation", []))):
        raise ValueError("label_maps: the index's split puts a test subject into training or validation")
    train_set = LabelMapSet.load(label_maps, split["train"], device=device)
    val_set = None
    if split.get("validation"):
        val_set = LabelMapSet.load(label_maps, split["validation"], values=train_set.values.tolist(), device=device)
    source = LabelMapImages(train_set, config.synthesis, config.ndim, config.axis, config.slice_margin)
    val = []
    if val_set is not None and config.val_modes:
        val = validation_images(val_set, config.synthesis, modes=config.val_modes, seed=int(config.fit.seed) + 11,
                                ndim=config.ndim, axis=config.axis, slice_fractions=config.val_slices,
                                slice_margin=config.slice_margin)
    data_meta = {"label_maps": str(label_maps), "prepared_json_sha256": train_set.index_sha256,
                 "train_subjects": train_set.names, "validation_subjects": val_set.names if val_set else [],
                 "test_subjects_never_read": sorted(test)}
    return train_set, source, val, data_meta


def train_segmenter(
    config: SegmenterTrainConfig,
    out: str | Path,
    *,
    label_maps: str | Path,
    device: str | torch.device = "cpu",
    resume: bool = False,
    max_minutes: float | None = None,
    progress: Callable[[TrainEvent], None] | None = None,
    dist: DistContext | None = None,
    meta: dict | None = None,
) -> dict:
    """Train a segmenter; returns the model file's ``meta`` (module docstring for the outputs).

    Args:
        config: the run's :class:`SegmenterTrainConfig`.
        out: the model file to write.
        label_maps: a prepared label-map folder (``prepared.json``; its ``test`` subjects are never read).
        device: where the model, the data and the synthesis live.
        resume: continue from ``out.ckpt``.
        max_minutes: time budget of this run.
        progress: called with each :class:`TrainEvent` (rank 0).
        dist: the data-parallel context.
        meta: extra provenance (e.g. ``{"command": ...}``) stored in the model file.

    Raises:
        ValueError, FileNotFoundError: bad settings or data (a split that puts a test subject into training).
    """
    dist = dist or DistContext()
    device = torch.device(device)
    train_set, source, val, data_meta = _training_data(config, label_maps, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config.fit.seed))
        model = Segmenter(_model_config(config, train_set)).to(device)
    classes = model.num_classes
    out, ckpt, log_path = run_files(out, dist=dist, resume=resume)  # a fresh run starts a fresh log
    settings = to_plain(config)
    extra = {"training": {k: v for k, v in settings.items() if k != "fit"},
             "data": {k: data_meta[k] for k in ("prepared_json_sha256", "train_subjects", "validation_subjects")}}
    t0 = time.time()

    def loss_fn(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        images, labels = batch
        logits = net(images)
        probs = torch.softmax(logits, dim=1)
        dice = soft_dice_loss(probs, one_hot(labels, classes, probs.dtype)).mean()
        if config.ce_weight == 0:
            return dice, {"dice_loss": dice.detach()}
        ce = torch.nn.functional.cross_entropy(logits, labels[:, 0].long())
        return dice + config.ce_weight * ce, {"dice_loss": dice.detach(), "cross_entropy": ce.detach()}

    def make_batch(step: int, _g: torch.Generator):
        return source.batch(int(config.fit.seed), step, int(config.batch_size), dist)

    def model_meta(step: int, result: FitResult) -> dict:
        last = result.validations[-1] if result.validations else None
        return {"kind": "segmenter", "training": settings, "data": data_meta, "steps_done": step, "validation": last,
                "validation_history": [{k: v for k, v in r.items() if k != "per_structure"} for r in result.validations],
                "loss_last": result.losses[-1] if result.losses else None, **run_provenance(device, dist, t0),
                **(meta or {})}

    def on_checkpoint(step: int, result: FitResult) -> None:
        save_model(out, model, kind="segmenter", meta=model_meta(step, result))

    validate = (lambda m, step: validate_segmenter(m, val, model.config.labels)) if val else None
    result = fit(model, make_batch, loss_fn, config.fit, checkpoint=ckpt, resume=resume, extra_state=extra,
                 progress=progress, max_minutes=max_minutes, validate=validate, validate_every=config.val_every,
                 log_path=log_path, on_checkpoint=on_checkpoint, dist=dist)
    final = model_meta(result.step, result)
    final["stopped_early"] = result.stopped_early
    write_final_model(out, model, kind="segmenter", meta=final, result=result, dist=dist)
    return final
