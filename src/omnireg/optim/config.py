"""Typed configuration of a registration: stages, pyramid levels, optimisers, presets.

A :class:`RegistrationConfig` is a list of :class:`StageConfig` run one after the other, each stage
starting from the result of the previous one (rigid -> affine -> deformable). It converts to and from
plain dictionaries (YAML/TOML/JSON) with :meth:`RegistrationConfig.to_dict` / :meth:`from_dict`;
unknown keys raise a ``ValueError`` naming them.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

from ..core.enums import as_enum

__all__ = ["TransformKind", "Optimizer", "Init", "StageConfig", "RegistrationConfig"]


class TransformKind(str, Enum):
    """Transform model of a stage."""

    TRANSLATION = "translation"
    RIGID = "rigid"
    SIMILARITY = "similarity"
    AFFINE = "affine"
    BSPLINE = "bspline"
    SVF = "svf"

    @property
    def is_linear(self) -> bool:
        return self not in (TransformKind.BSPLINE, TransformKind.SVF)


class Optimizer(str, Enum):
    """Local optimiser of a stage: gradient-based (Adam, L-BFGS, and ``gradient``: steepest descent whose largest
    point moves ``learning_rate`` mm per iteration, ANTs-style) or derivative-free (BOBYQA via nlopt)."""

    ADAM = "adam"
    GRADIENT = "gradient"
    LBFGS = "lbfgs"
    BOBYQA = "bobyqa"


class Init(str, Enum):
    """Initial alignment before the first stage.

    ``auto``: chosen by what the images are (:mod:`omnireg.optim.initialize`: identity, centres and principal
    axes when both fields of view show the same extent of anatomy; identity and placements of the smaller
    field of view inside the larger one when one is partial); ``geometry``: align the centres of the two
    fields of view; ``com``: align the intensity centres of mass; ``moments``: centres of mass plus principal
    axes (rotation among the proper axis permutations/sign choices, chosen by the first stage's metric);
    ``none``: identity. Every start is scored by the first stage's metric; the identity stays a start pose
    of ``auto`` (an initialisation is kept only if it beats it).
    """

    AUTO = "auto"
    NONE = "none"
    GEOMETRY = "geometry"
    COM = "com"
    MOMENTS = "moments"


@dataclass
class StageConfig:
    """One stage of a registration.

    Args:
        transform: transform model (:class:`TransformKind`).
        metric: similarity name (see :func:`omnireg.similarity.get_similarity`).
        metric_options: keyword options of the similarity (e.g. ``{"bins": 32}``).
        shrink: per pyramid level, the factor by which the fixed grid's spacing is multiplied (coarse first).
        smoothing_mm: per level, Gaussian sigma in mm applied before shrinking; ``None`` = ``0.5 * (shrink - 1)``
            times the largest fixed spacing, per level (0 at full resolution).
        iterations: per level, the maximum number of optimiser iterations.
        optimizer: local optimiser (:class:`Optimizer`).
        learning_rate: step size of Adam, or the largest step of ``gradient`` (in the scaled parameter units: mm,
            and radians times the image radius).
        tolerance: convergence: stop a level when the loss improved by less than ``tolerance`` (relative)
            over the last ``window`` iterations.
        window: see ``tolerance``.
        global_search: for linear stages, a coarse multi-start over rotations followed by BOBYQA at the
            coarsest level before the local optimiser (large capture range).
        search_angles_deg: the rotation angles (about each axis) tried by the global search.
        control_spacing_mm: B-spline control-point spacing in mm.
        svf_steps: scaling-and-squaring steps of an SVF stage.
        svf_spacing_mm: spacing in mm of the SVF's final velocity grid (``None``: twice the spacing of the stage's
            finest level, at least 2 mm); coarser levels hold the velocity at their own spacing (coarse to fine).
        regularization: penalty weights: ``bending``, ``diffusion``, ``elastic``, ``folding`` (deformable stages),
            relative to the similarity loss divided by its magnitude at the start of each level (so the same
            weights suit every metric). Penalties are evaluated on a grid of half the control-point spacing.
        max_level_voxels: upper bound on the number of voxels of a pyramid level (0 = none): finer levels are
            coarsened to it (a 1 mm brain of 7.2 M voxels is optimised at about 2 mm with 1 M; a level that becomes
            as coarse as the one before is skipped), which bounds
            the time and memory of dense (deformable) stages on large images.
        foreground_mask: measure the similarity only inside the fixed image's foreground (Otsu threshold,
            holes filled, dilated by 2 mm: enough for the head's edge) when no fixed mask is given, so that no displacement is driven by
            background noise; the regularisation then carries the field smoothly outside.
        sampling: fraction of the fixed voxels used by point-wise metrics (mse, ncc, mi, nmi) in linear stages;
            the subset is drawn once per level with the run's seed (fixed during the level, as ITK's
            Mattes sampling), so L-BFGS sees a deterministic objective.
        max_points: upper bound on that subset's size (0 = no bound); neighbourhood metrics (lncc, ngf, lc2,
            mind) and deformable stages always use the whole grid.
    """

    transform: TransformKind = TransformKind.AFFINE
    metric: str = "ncc"
    metric_options: dict = field(default_factory=dict)
    shrink: list = field(default_factory=lambda: [4, 2, 1])
    smoothing_mm: list | None = None
    iterations: list = field(default_factory=lambda: [100, 60, 30])
    optimizer: Optimizer = Optimizer.LBFGS
    learning_rate: float = 0.5
    tolerance: float = 1e-5
    window: int = 8
    global_search: bool = False
    search_angles_deg: list = field(default_factory=lambda: [-60.0, -30.0, 0.0, 30.0, 60.0])
    control_spacing_mm: float = 12.0
    svf_steps: int = 7
    svf_spacing_mm: float | None = None
    regularization: dict = field(default_factory=dict)
    max_level_voxels: int = 0
    foreground_mask: bool = False
    sampling: float = 1.0
    max_points: int = 200_000

    def __post_init__(self) -> None:
        # string options are parsed once, here (YAML, TOML, JSON and keyword arguments give strings)
        self.transform = as_enum(self.transform, TransformKind, "transform")
        self.optimizer = as_enum(self.optimizer, Optimizer, "optimizer")
        if not isinstance(self.metric, str) or not self.metric.strip():
            raise ValueError(f"metric: expected a similarity name, got {self.metric!r}")
        self.metric = self.metric.strip().lower()

    def validate(self) -> "StageConfig":
        from ..similarity import available_similarities

        if self.metric not in available_similarities():
            raise ValueError(f"metric: expected one of {', '.join(available_similarities())}, got {self.metric!r}")
        if not self.shrink or any(float(s) < 1 for s in self.shrink):
            raise ValueError(f"shrink: expected a list of factors >= 1, got {self.shrink!r}")
        if len(self.iterations) != len(self.shrink):
            raise ValueError(
                f"iterations: expected one value per level ({len(self.shrink)}), got {len(self.iterations)}"
            )
        if self.smoothing_mm is not None and len(self.smoothing_mm) != len(self.shrink):
            raise ValueError(f"smoothing_mm: expected one value per level ({len(self.shrink)}), got {len(self.smoothing_mm)}")
        if any(int(i) < 0 for i in self.iterations):
            raise ValueError("iterations: expected non-negative counts")
        if int(self.max_level_voxels) < 0:
            raise ValueError(f"max_level_voxels: expected >= 0, got {self.max_level_voxels}")
        if int(self.max_points) < 0:
            raise ValueError(f"max_points: expected >= 0, got {self.max_points}")
        if not 0 < float(self.sampling) <= 1:
            raise ValueError(f"sampling: expected a fraction in (0, 1], got {self.sampling}")
        if self.control_spacing_mm <= 0:
            raise ValueError(f"control_spacing_mm: expected > 0, got {self.control_spacing_mm}")
        if int(self.svf_steps) < 0:
            raise ValueError(f"svf_steps: expected >= 0, got {self.svf_steps}")
        known = {"bending", "diffusion", "elastic", "folding", "elastic_mu", "elastic_lambda"}
        unknown = set(self.regularization) - known
        if unknown:
            raise ValueError(f"regularization: unknown terms {sorted(unknown)}; valid: {sorted(known)}")
        return self

    @property
    def kind(self) -> TransformKind:
        """The transform model (alias of :attr:`transform`, kept for readability: ``stage.kind.is_linear``)."""
        return self.transform


@dataclass
class RegistrationConfig:
    """A complete registration: initialisation, stages, reproducibility and device.

    Args:
        stages: the stages, run in order.
        init: initial alignment (:class:`Init`).
        seed: seed of every random choice (sampling, search order): the same seed gives the same result.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        normalize: rescale both images to their robust [0.5, 99.5] percentile range before registering.
        global_search: ``None``: as each stage says; ``True``: the first linear stage runs the global search
            (and only it); ``False``: no stage does (``--global-search`` / ``--no-global-search``).
    """

    stages: list = field(default_factory=lambda: [StageConfig()])
    init: Init = Init.AUTO
    seed: int = 0
    device: str = "cpu"
    normalize: bool = True
    global_search: bool | None = None

    def effective_stages(self) -> list:
        """The stages with :attr:`global_search` applied (copies; the config is not changed)."""
        stages = [copy.deepcopy(st) for st in self.stages]
        if self.global_search is not None:
            first = next((i for i, st in enumerate(stages) if st.kind.is_linear), None)
            for i, st in enumerate(stages):
                st.global_search = bool(self.global_search) and i == first
        return stages

    def __post_init__(self) -> None:
        self.init = as_enum(self.init, Init, "init")
        self.stages = [st if isinstance(st, StageConfig) else StageConfig(**st) for st in self.stages]

    def validate(self) -> "RegistrationConfig":
        if self.global_search is not None and not isinstance(self.global_search, bool):
            raise ValueError(f"global_search: expected true, false or null, got {self.global_search!r}")
        if not self.stages:
            raise ValueError("stages: expected at least one stage")
        for st in self.stages:
            st.validate()
        return self

    def to_dict(self) -> dict:
        """Plain values (enums as their strings): what ``from_dict`` reads back, and what result.json stores."""
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> "RegistrationConfig":
        data = copy.deepcopy(dict(data))
        top = {f.name for f in fields(cls)}
        unknown = set(data) - top
        if unknown:
            raise ValueError(f"config: unknown keys {sorted(unknown)}; valid: {sorted(top)}")
        stage_keys = {f.name for f in fields(StageConfig)}
        stages = []
        for i, st in enumerate(data.pop("stages", [{}])):
            bad = set(st) - stage_keys
            if bad:
                raise ValueError(f"config: stage {i}: unknown keys {sorted(bad)}; valid: {sorted(stage_keys)}")
            stages.append(StageConfig(**st))
        return cls(stages=stages, **data).validate()


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
