"""Training registration networks (VoxelMorph, VoxelMorph-diff, the pyramid network, ...).

``train_registration(config, out, ...)`` trains a model named in the registry
(:func:`register_registration_model`) on synthesised pairs from a prepared label-map set (or on real
images), with the loss of :class:`~omnireg.training.losses.RegistrationLoss`, the shared loop
:func:`omnireg.training.loop.fit` (AdamW, atomic checkpoints, exact resume, time budget, JSON-lines log,
DDP) and validation Dice on held-out *training* subjects. It writes:

- ``out``: the model file (:func:`omnireg.networks.store.save_model`: architecture config, weights, and
  ``meta`` with the training settings, command, data provenance and validation Dice), rewritten at every
  checkpoint so a stopped run always leaves a usable model;
- ``out.ckpt``: the checkpoint (model, optimiser, step) for ``resume``;
- ``<out stem>.log.jsonl``: one JSON line per step and per validation.

Validation Dice: for every ordered pair of validation subjects (synthesised once, undeformed, with the
training contrast mode) the moving structure labels are pulled through the predicted displacement
(nearest neighbour) and compared with the fixed ones; the Dice of each of the 32 named structures present
in the fixed map is averaged, then over the pairs. ``dice_identity`` is the same without warping (the
maps are affinely aligned: the affine-only Dice).
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

from ..core.enums import as_enum
from ..networks.store import read_model_file, save_model, to_plain
from .distributed import DistContext
from .labelmaps import LabelMapSet, read_prepared_index, sha256_file
from .loop import FitConfig, FitResult, TrainEvent, fit, run_files, run_provenance, write_final_model
from .losses import RegistrationBatch, RegistrationLoss, RegTarget
from .pairs import ImagePairs, LabelMapPairs, validation_pairs
from ..networks.registration import warp_voxels
from .synthesis import PairMode, SynthesisConfig, check_synthetic_run

__all__ = [
    "RegistrationTrainConfig",
    "available_registration_models",
    "build_registration_model",
    "dice_per_structure",
    "load_initial_weights",
    "register_registration_model",
    "train_registration",
    "validate_registration",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- registry
_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_registration_model(name: str, build: Callable[..., nn.Module]) -> None:
    """Make ``name`` trainable: ``build(ndim, **options)`` returns a new ``RegistrationNetwork``.

    The network must have a dataclass ``config`` and be saveable with :func:`omnireg.networks.store.save_model`
    under its ``kind`` attribute (or ``name`` when it has none).
    """
    if not callable(build):
        raise TypeError(f"build: expected a callable, got {build!r}")
    _MODELS[str(name).lower()] = build


def _voxelmorph(kind: str) -> Callable[..., nn.Module]:
    def build(ndim: int, **options) -> nn.Module:
        from ..networks.voxelmorph import VoxelMorph, VoxelMorphConfig

        return VoxelMorph(VoxelMorphConfig.from_kind(kind, ndim=ndim, **options))

    return build


def _pyramid(ndim: int, **options) -> nn.Module:
    from ..networks.pyramid import PyramidConfig, PyramidNet

    return PyramidNet(PyramidConfig(ndim=ndim, **options))


register_registration_model("voxelmorph", _voxelmorph("voxelmorph"))
register_registration_model("voxelmorph-diff", _voxelmorph("voxelmorph-diff"))
register_registration_model("pyramid", _pyramid)


def available_registration_models() -> list[str]:
    """Names accepted by :func:`build_registration_model` (and ``--model``), sorted."""
    return sorted(_MODELS)


def build_registration_model(name: str, ndim: int, **options) -> nn.Module:
    """A new network of the registered model ``name``.

    Raises:
        ValueError: unknown name (the message lists the registered ones); invalid options.
    """
    key = str(name).lower()
    if key not in _MODELS:
        raise ValueError(f"model: expected one of {', '.join(available_registration_models())}, got {name!r}")
    return _MODELS[key](ndim, **options)


# ------------------------------------------------------------------------------------------- config
@dataclass
class RegistrationTrainConfig:
    """Everything that defines a registration training run (saved in the model file's ``meta``).

    Attributes:
        model: registered model name (``voxelmorph``, ``voxelmorph-diff``, ``pyramid``, ...).
        model_options: keyword options of the model's config (e.g. ``{"enc_channels": [8, 16]}``).
        ndim: 3, or 2 (slices of the 3D maps along ``axis``).
        loss: loss spec (:func:`omnireg.training.losses.parse_spec`), e.g. ``"lncc"``, ``"dice"``, ``"mse:1,dice:1"``.
        reg: regulariser spec, e.g. ``"diffusion:1"``.
        reg_target: ``displacement`` or ``velocity``.
        similarity_options: keyword options per similarity, e.g. ``{"lncc": {"window": 9}}``.
        deep_supervision: weight of the coarser scales (models that return ``scales``).
        symmetric: also train the inverse direction (diffeomorphic models).
        pairs: ``inter`` (two subjects) or ``intra`` (one subject, two deformations).
        synthesis: :class:`SynthesisConfig` (contrast ``mode``: ``random`` or ``t1``).
        batch_size: pairs per step (the global batch, split between processes).
        axis, slice_margin: 2D slicing (see :class:`~omnireg.training.pairs.LabelMapPairs`).
        val_every: steps between validations (0: at the end only).
        fit: optimisation settings (steps, lr, seed, checkpoint_every, ...).
    """

    model: str = "voxelmorph-diff"
    model_options: dict = field(default_factory=dict)
    ndim: int = 3
    loss: str = "lncc"
    reg: str = "diffusion:1"
    reg_target: str = "displacement"
    similarity_options: dict = field(default_factory=dict)
    deep_supervision: float = 0.0
    symmetric: bool = False
    pairs: str = "inter"
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    batch_size: int = 1
    axis: int = 2
    slice_margin: float = 0.2
    val_every: int = 50
    fit: FitConfig = field(default_factory=FitConfig)

    def __post_init__(self) -> None:
        check_synthetic_run(self)
        self.pairs = as_enum(self.pairs, PairMode, "pairs").value
        self.reg_target = as_enum(self.reg_target, RegTarget, "reg_target").value


# ------------------------------------------------------------------------------------------- validation
def dice_per_structure(warped: torch.Tensor, fixed: torch.Tensor, classes: int) -> torch.Tensor:
    """Hard Dice of every structure ``1 .. classes-1`` per item: ``(N, classes - 1)``, NaN where absent in ``fixed``.

    Args:
        warped, fixed: ``(N, 1, *S)`` integer structure maps.
        classes: number of structure classes (background 0 included).
    """
    n = fixed.shape[0]
    w, f = warped.reshape(n, -1).long(), fixed.reshape(n, -1).long()
    cols = []
    for c in range(1, classes):
        a, b = w == c, f == c
        nb = b.sum(1)
        dice = 2 * (a & b).sum(1).double() / (a.sum(1) + nb).clamp_min(1).double()
        cols.append(torch.where(nb > 0, dice, torch.full_like(dice, float("nan"))))
    return torch.stack(cols, dim=1).cpu() if cols else torch.zeros(n, 0, dtype=torch.float64)


def validate_registration(model: nn.Module, pairs: list[RegistrationBatch], classes: int) -> dict:
    """Mean Dice over structures and pairs after warping (and without: ``dice_identity``), and the worst structure."""
    per_pair, ident, per_struct = [], [], []
    with torch.no_grad():
        for p in pairs:
            out = model(p.moving, p.fixed)
            warped = warp_voxels(p.moving_labels, out.displacement, interp="nearest")
            d = dice_per_structure(warped, p.fixed_labels, classes)
            per_struct.append(d)
            per_pair.append(float(torch.nanmean(d)))
            ident.append(float(torch.nanmean(dice_per_structure(p.moving_labels, p.fixed_labels, classes))))
    structs = torch.nanmean(torch.cat(per_struct), dim=0)
    return {"dice": sum(per_pair) / len(per_pair), "dice_identity": sum(ident) / len(ident),
            "dice_worst_structure": float(torch.min(torch.nan_to_num(structs, nan=1.0))), "pairs": len(pairs)}


# ------------------------------------------------------------------------------------------- training
def _build(config: RegistrationTrainConfig, device: torch.device) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # seeded initialisation; the global CPU generator is restored after
        torch.random.default_generator.manual_seed(int(config.fit.seed))
        model = build_registration_model(config.model, config.ndim, **config.model_options)
    return model.to(device)


def load_initial_weights(model: nn.Module, kind: str, path: str | Path, *, name: str = "init_from") -> dict:
    """Copy the weights of the model file ``path`` into ``model`` (same kind and architecture config);
    returns the provenance recorded in the new model file. Errors name ``name`` (the option or flag)."""
    obj = read_model_file(path, name=name)
    if obj.get("kind") != kind:
        raise ValueError(f"{name}: {path} holds a {obj.get('kind')!r} model, expected {kind!r}")
    mine = to_plain(model.config)
    if obj.get("config") != mine:
        diff = sorted(k for k in set(mine) | set(obj.get("config", {})) if mine.get(k) != obj["config"].get(k))
        raise ValueError(f"{name}: {path} has another architecture ({', '.join(diff)} differ)")
    model.load_state_dict(obj["state_dict"])
    meta = obj.get("meta", {})
    return {"path": str(path), "sha256": sha256_file(path),
            "steps_done": meta.get("steps_done"), "training": meta.get("training"),
            "validation": meta.get("validation")}


def _training_data(config: RegistrationTrainConfig, label_maps, images, image_spacing, device: torch.device):
    """``(pair source, validation pairs, structure classes, data provenance)`` of a run."""
    data_meta: dict = {}
    val: list[RegistrationBatch] = []
    source = None
    classes = 0
    if label_maps is not None:
        split = read_prepared_index(label_maps)["split"]
        test = set(split.get("test", []))
        if test & (set(split.get("train", [])) | set(split.get("validation", []))):
            raise ValueError("label_maps: the index's split puts a test subject into training or validation")
        train_set = LabelMapSet.load(label_maps, split["train"], device=device)
        val_set = None
        if split.get("validation"):
            val_set = LabelMapSet.load(label_maps, split["validation"], values=train_set.values.tolist(), device=device)
        source = LabelMapPairs(train_set, config.synthesis, config.pairs, config.ndim, config.axis, config.slice_margin)
        classes = source.classes
        if val_set is not None and len(val_set.names) >= 2:
            val = validation_pairs(val_set, config.synthesis, seed=int(config.fit.seed) + 7, ndim=config.ndim,
                                   axis=config.axis, slice_margin=config.slice_margin)
        data_meta = {"label_maps": str(label_maps), "prepared_json_sha256": train_set.index_sha256,
                     "train_subjects": train_set.names, "validation_subjects": val_set.names if val_set else [],
                     "test_subjects_never_read": split.get("test", [])}
    if images is not None:
        source = ImagePairs(images.to(device), tuple(image_spacing or (1.0,) * (images.ndim - 2)), config.synthesis)
        data_meta["images"] = int(images.shape[0])
    if source is None:
        raise ValueError("label_maps: expected prepared label maps or training images")
    return source, val, classes, data_meta


def train_registration(
    config: RegistrationTrainConfig,
    out: str | Path,
    *,
    label_maps: str | Path | None = None,
    images: torch.Tensor | None = None,
    image_spacing: tuple[float, ...] | None = None,
    device: str | torch.device = "cpu",
    resume: bool = False,
    max_minutes: float | None = None,
    progress: Callable[[TrainEvent], None] | None = None,
    dist: DistContext | None = None,
    meta: dict | None = None,
    init_from: str | Path | None = None,
) -> dict:
    """Train a registration network; returns the model file's ``meta`` (module docstring for the outputs).

    Args:
        config: the run's :class:`RegistrationTrainConfig`.
        out: the model file to write.
        label_maps: a prepared label-map folder (``prepared.json``): its ``train`` subjects give the
            synthesised training pairs (unless ``images`` is given) and its ``validation`` subjects the
            validation Dice. Test subjects are never read.
        images: optional real training images ``(M, 1, *S)`` in ``[0, 1]`` on one grid (see
            :class:`~omnireg.training.pairs.ImagePairs`), with ``image_spacing`` in mm.
        device: where the model, the data and the synthesis live.
        resume: continue from ``out.ckpt``.
        max_minutes: time budget of this run.
        progress: called with each :class:`TrainEvent` (rank 0).
        dist: the data-parallel context.
        meta: extra provenance (e.g. ``{"command": ...}``) stored in the model file.
        init_from: a model file of the same architecture whose weights start the run (fine-tuning, e.g. a
            T1-like run continued with random contrasts); the optimiser starts fresh. Its file's SHA-256 and
            training settings are recorded. Ignored with ``resume`` (the checkpoint holds the weights).

    Raises:
        ValueError, FileNotFoundError: bad settings or data (e.g. ``dice`` in the loss with real images).
    """
    dist = dist or DistContext()
    device = torch.device(device)
    if int(config.batch_size) % dist.world_size:
        raise ValueError(f"batch_size: {config.batch_size} is not divisible by the number of processes {dist.world_size}")
    source, val, classes, data_meta = _training_data(config, label_maps, images, image_spacing, device)
    loss = RegistrationLoss(config.loss, config.reg, classes=classes, deep_supervision=config.deep_supervision,
                            symmetric=config.symmetric, reg_target=config.reg_target,
                            similarity_options=config.similarity_options).to(device)
    if loss.needs_labels and isinstance(source, ImagePairs):
        raise ValueError("loss: the dice term needs label maps; real --images have none")
    model = _build(config, device)
    kind = getattr(model, "kind", config.model)
    if init_from is not None:
        data_meta["init_from"] = load_initial_weights(model, kind, init_from)
    out, ckpt, log_path = run_files(out, dist=dist, resume=resume)  # a fresh run starts a fresh log
    settings = to_plain(config)
    extra = {"training": {k: v for k, v in settings.items() if k != "fit"},
             "data": {k: data_meta.get(k) for k in ("prepared_json_sha256", "train_subjects", "validation_subjects", "images")}}
    t0 = time.time()

    def loss_fn(net: nn.Module, batch: RegistrationBatch):
        return loss(net(batch.moving, batch.fixed), batch)

    def make_batch(step: int, _g: torch.Generator) -> RegistrationBatch:
        return source.batch(int(config.fit.seed), step, int(config.batch_size), dist)

    def model_meta(step: int, result: FitResult) -> dict:
        last = result.validations[-1] if result.validations else None
        return {"kind": kind, "training": settings, "data": data_meta, "steps_done": step,
                "validation": last, "validation_history": result.validations,
                "loss_last": result.losses[-1] if result.losses else None, "max_minutes": max_minutes,
                **run_provenance(device, dist, t0), **(meta or {})}

    def on_checkpoint(step: int, result: FitResult) -> None:
        save_model(out, model, kind=kind, meta=model_meta(step, result))

    validate = (lambda m, step: validate_registration(m, val, classes)) if val else None
    result = fit(model, make_batch, loss_fn, config.fit, checkpoint=ckpt, resume=resume,
                 extra_state=extra, progress=progress, max_minutes=max_minutes,
                 validate=validate, validate_every=config.val_every, log_path=log_path, on_checkpoint=on_checkpoint, dist=dist)
    final = model_meta(result.step, result)
    final["stopped_early"] = result.stopped_early
    write_final_model(out, model, kind=kind, meta=final, result=result, dist=dist)
    return final
