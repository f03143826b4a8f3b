"""Policy: what the named presets mean, and how the command line's options edit a configuration.

The configuration types live in :mod:`omnireg.optim.config`; this module decides what a user gets.

* Linear stages use **mutual information** (Mattes-style, 32 bins), as ANTs and elastix do by default: it
  is right for same and for different contrasts (NCC rewards a wrong alignment of a T1 against a T2),
  measured on both in ``benchmarks/real.py``.
* Deformable presets are **diffeomorphic**: a stationary velocity field integrated by scaling and squaring
  (no folding), regularised on its velocity, with the similarity measured inside the fixed image's
  foreground (no displacement driven by background noise) and levels of at most 1 M voxels (a 1 mm brain is
  registered at 4 and 2 mm), coarse to fine (each level's velocity on its own grid; the final one at twice the
  finest level's spacing), optimised by normalised steepest descent (``optimizer: gradient``).
* ``--metric disa`` runs DISA's stages and then one full-resolution exact LC2 stage (DISA's optimum lies about
  2 mm from the truth in 3D; the LC2 stage reaches LC2's precision from there); ``--metric disa-only`` runs
  the approximation alone. ``--metric mad`` adds a capture stage before and a refinement after
  (:func:`mad_stages`).
"""

from __future__ import annotations

import copy
from typing import Any

from .config import RegistrationConfig, StageConfig

__all__ = ["DEFAULT_PRESET", "PRESETS", "TRANSFORM_STAGES", "LEARNED_METRICS", "preset", "configure", "mad_stages"]

#: the preset of ``omnireg register`` and :func:`omnireg.optim.register` when none is named
DEFAULT_PRESET = "affine"
#: the stages ``--transform KIND`` runs (earlier linear stages first)
TRANSFORM_STAGES = {
    "translation": ["translation"],
    "rigid": ["rigid"],
    "similarity": ["rigid", "similarity"],
    "affine": ["rigid", "affine"],
    "bspline": ["rigid", "affine", "bspline"],
    "svf": ["rigid", "affine", "svf"],
}
#: measures computed by a trained network (``weights`` applies to them)
LEARNED_METRICS = ("disa", "mad", "deepsim")
#: ``--metric`` names that are recipes rather than one measure
METRIC_RECIPES = {"disa-only": "disa"}


def _presets() -> dict[str, dict[str, Any]]:
    # normalised mutual information (Studholme): right for same and different contrasts, and unlike MI not
    # rewarded for overlapping less of the images (measured in the README's "Real data" section)
    nmi = {"bins": 32}
    rigid = dict(transform="rigid", metric="nmi", metric_options=nmi, shrink=[4, 2, 1], iterations=[60, 30, 15],
                 optimizer="lbfgs")
    affine = dict(rigid, transform="affine")
    # before an affine stage, the rigid stage only needs the coarse levels (the affine stage refines)
    pre = dict(rigid, global_search=True, shrink=[4, 2], iterations=[60, 30])
    svf = dict(
        transform="svf",
        metric="lncc",
        metric_options={"window": 5, "window_unit": "voxel"},
        shrink=[4, 2, 1],
        iterations=[80, 60, 40],
        # steepest descent with the largest point moving 0.5 mm per iteration (ANTs-style): Adam's per-voxel
        # normalisation turned weak, noisy gradients into full steps (MIND-SSC: AFIDs 4.42 mm, one landmark 3.9 mm
        # worse than identity, displacements of 16 mm; README "Real data")
        optimizer="gradient",
        learning_rate=0.5,
        regularization={"diffusion": 1.0},
        foreground_mask=True,
        max_level_voxels=1_000_000,
    )
    # MIND's descriptors need voxels of a few mm: no 4x level
    # (MIND-SSC's local descriptors are noisier than LNCC's windows: smaller steps, a stiffer velocity; diffusion 4
    # against 3 on ch2 -> MNI: worst landmark +1.09 -> +0.89 mm at 2 mm and +0.88 -> +0.69 mm at 1 mm, mean error
    # 3.86 -> 3.84 and 4.00 -> 4.02 mm; diffusion 5 moved the 1 mm field outside the brain further than inside;
    # README "Real data")
    mm_svf = dict(svf, metric="mind", metric_options={}, shrink=[2, 1], iterations=[80, 40], learning_rate=0.25,
                  regularization={"diffusion": 4.0})
    return {
        "rigid": {"init": "auto", "stages": [dict(rigid, global_search=True)]},
        "affine": {"init": "auto", "stages": [pre, affine]},
        "deformable": {"init": "auto", "stages": [pre, affine, svf]},
        "multimodal-affine": {"init": "auto", "stages": [pre, affine]},
        "multimodal-deformable": {"init": "auto", "stages": [pre, affine, mm_svf]},
    }


#: the named presets as plain dictionaries (what a ``--config`` file may start from with ``preset: NAME``)
PRESETS: dict[str, dict[str, Any]] = _presets()


def preset(name: str) -> RegistrationConfig:
    """The named preset as a fresh :class:`RegistrationConfig`.

    ``rigid``, ``affine`` (rigid then affine; the default), ``deformable`` (rigid, affine, then a diffeomorphic
    SVF with local NCC), ``multimodal-affine`` (the same as ``affine``: normalised mutual information suits any contrasts)
    and ``multimodal-deformable`` (the SVF stage with MIND-SSC). Every preset starts with ``init: auto`` and a
    global rotation search, so two files are enough for a good result.
    """
    if name not in PRESETS:
        raise ValueError(f"preset: expected one of {', '.join(sorted(PRESETS))}, got {name!r}")
    return RegistrationConfig.from_dict(copy.deepcopy(PRESETS[name]))


def _learned_levels(stage: StageConfig) -> tuple[list, list, None]:
    """Pyramid of a stage switched to a learned measure.

    DISA compares stride-4 feature maps of images at its model's 2 mm spacing, so a level finer than 2 mm adds
    nothing: two levels (2x, 1x). MAD samples its patches at its own physical spacing: one level. DeepSim
    compares features at its segmenter's 2 mm spacing: two levels.
    """
    fine = int(stage.iterations[-1])
    if stage.metric == "mad":
        return [1], [fine * 2], None
    return [2, 1], [fine * 2, fine], None


def _with_transform(cfg: RegistrationConfig, transform: str) -> list[StageConfig]:
    kinds = TRANSFORM_STAGES[transform]
    template = cfg.stages[-1]
    deformable = PRESETS["deformable"]["stages"][-1]
    stages = []
    for i, kind in enumerate(kinds):
        match = next((s for s in cfg.stages if s.transform == kind), None)
        if match is None:
            base = {**template.__dict__}
            if kind in ("bspline", "svf"):
                base.update(deformable)
                base["metric"] = template.metric if template.metric not in ("mi", "nmi") else "mind"
                base["metric_options"] = {} if base["metric"] != "lncc" else dict(deformable["metric_options"])
                if kind == "bspline":
                    base.update(control_spacing_mm=10.0, regularization={"bending": 5.0, "diffusion": 0.2, "folding": 10.0},
                                optimizer="adam", learning_rate=0.5)
            base["transform"] = kind
            match = StageConfig(**base)
        st = copy.deepcopy(match)
        st.global_search = st.global_search or (i == 0 and kind in ("rigid", "similarity", "affine"))
        stages.append(st)
    return stages


def _base_mapping(preset: str | None, config: dict | None) -> dict:
    """The configuration mapping ``configure`` starts from: the named preset, or ``config`` (over its ``preset:``)."""
    if preset is not None and config is not None:
        raise ValueError("preset: give a preset or a config, not both (a config may name a preset)")
    if config is not None:
        data = copy.deepcopy(dict(config))
        if "preset" in data:
            name = data.pop("preset")
            if name not in PRESETS:
                raise ValueError(f"preset: expected one of {', '.join(sorted(PRESETS))}, got {name!r}")
            data = {**copy.deepcopy(PRESETS[name]), **data}
    else:
        name = preset or DEFAULT_PRESET
        if name not in PRESETS:
            raise ValueError(f"preset: expected one of {', '.join(sorted(PRESETS))}, got {name!r}")
        data = copy.deepcopy(PRESETS[name])
    return data


def configure(
    *,
    preset: str | None = None,
    config: dict | None = None,
    metric: str | None = None,
    weights: str | None = None,
    transform: str | None = None,
    levels: int | None = None,
    iterations: int | None = None,
    init: str | None = None,
    global_search: bool | None = None,
    seed: int | None = None,
    device: str | None = None,
) -> RegistrationConfig:
    """A configuration from a preset or a config mapping, edited by the command line's options.

    Args:
        preset: a preset name (default :data:`DEFAULT_PRESET`); exclusive with ``config``.
        config: a mapping as read from a YAML/TOML file; ``preset: NAME`` in it starts from that preset.
        metric: the similarity of every stage (``disa`` runs DISA then one LC2 stage, ``disa-only`` DISA alone,
            ``mad`` adds its capture and refinement stages).
        weights: model file or packaged name of the learned measure.
        transform: the final transform model (:data:`TRANSFORM_STAGES`).
        levels: number of pyramid levels (shrink factors ``2^(L-1) ... 1``).
        iterations: iterations at the finest level (each coarser level gets twice as many).
        init, global_search, seed, device: :class:`RegistrationConfig` fields.

    Raises:
        ValueError: the message starts with the option's name (``metric: ...``, ``weights: ...``).
    """
    data = _base_mapping(preset, config)
    cfg = RegistrationConfig.from_dict(data)
    if transform:
        if transform not in TRANSFORM_STAGES:
            raise ValueError(f"transform: expected one of {', '.join(TRANSFORM_STAGES)}, got {transform!r}")
        cfg.stages = _with_transform(cfg, transform)
    recipe = None
    if metric:
        metric = metric.strip().lower()
        recipe, metric = metric, METRIC_RECIPES.get(metric, metric)
    for st in cfg.stages:
        if metric:
            st.metric = metric
            st.metric_options = {} if metric != "lncc" else {"window": 5, "window_unit": "voxel"}
            if metric in LEARNED_METRICS and not levels:
                st.shrink, st.iterations, st.smoothing_mm = _learned_levels(st)
        if st.metric in LEARNED_METRICS and weights:
            st.metric_options = {**st.metric_options, "weights": str(weights)}
        if levels:
            if levels < 1:
                raise ValueError(f"levels: expected >= 1, got {levels}")
            st.shrink = [2 ** (levels - 1 - i) for i in range(levels)]
            st.iterations = [int(st.iterations[-1]) * 2 ** (levels - 1 - i) for i in range(levels)]
            st.smoothing_mm = None
        if iterations is not None:
            n = len(st.shrink)
            st.iterations = [iterations * 2 ** (n - 1 - i) for i in range(n)]
    if weights and not any(st.metric in LEARNED_METRICS for st in cfg.stages):
        raise ValueError("weights: no stage uses a learned metric (give --metric disa, mad or deepsim)")
    bad = [st.transform.value for st in cfg.stages if st.metric == "mad" and not st.kind.is_linear]
    if bad:
        raise ValueError(f"metric: mad works for rigid and affine stages only, not {bad[0]} (use disa, deepsim or mind)")
    if metric == "mad" and not levels:
        cfg.stages = mad_stages(cfg.stages)
    if recipe == "disa" and cfg.stages[-1].kind.is_linear:
        cfg.stages.append(lc2_polish(cfg.stages[-1]))
    for key, value in (("init", init), ("global_search", global_search), ("seed", seed), ("device", device)):
        if value is not None:
            setattr(cfg, key, value)
    cfg.__post_init__()
    return cfg.validate()


def lc2_polish(last: StageConfig, *, iterations: int = 20) -> StageConfig:
    """One full-resolution exact LC2 stage of ``last``'s transform after DISA's stages (``--metric disa``):
    measured on the known-affine benchmark, 0.14 / 0.70 mm where DISA alone ends 2.3 / 2.4 mm off."""
    return StageConfig(transform=last.transform, metric="lc2", shrink=[1], iterations=[int(iterations)], optimizer=last.optimizer)


def mad_stages(
    stages: list[StageConfig],
    *,
    coarse_scale: float = 2.0,
    fine_scale: float = 0.5,
    coarse_iterations: int = 40,
    fine_iterations: int = 40,
    fine_patches: int = 256,
) -> list[StageConfig]:
    """The stages ``omnireg register --metric mad`` runs for a list of stages using the MAD metric.

    Around the linear MAD stages (rigid, affine; kept as they are) two are added:

    1. before the first: capture, with patches at ``coarse_scale`` times the model's spacing (``patch_scale``,
       see :mod:`omnireg.similarity.mad`) on a 2x level smoothed by ``1.2 * coarse_scale`` mm; it takes over
       that stage's global search;
    2. after the last: refinement, with ``fine_patches`` patches at ``fine_scale`` times the model's spacing.

    ``0`` for a scale leaves that stage out. Measured (``benchmarks/mad.py``, rigid, 15 poses of 0-60 deg and
    0-40 mm, no initialisation): the capture stage widens the basin (the model's spacing alone: 6/15 and 8/15
    poses on the bundled T1/T2w and SPM T1/T2 pairs; with it 15/15 on both); the refinement removes the
    network's flat response below ~4 mm at its own spacing (SPM T1/PD: every pose ended 2.2-2.8 mm off
    without it, 1.14 mm on average with it, 15/15).
    """
    idx = [i for i, st in enumerate(stages) if st.metric == "mad" and st.kind.is_linear]
    if not idx:
        return list(stages)

    def variant(st: StageConfig, patch_scale: float, **options) -> StageConfig:
        new = copy.deepcopy(st)
        scale = float(st.metric_options.get("patch_scale", 1.0))
        new.metric_options = {**st.metric_options, "patch_scale": patch_scale * scale, **options}
        new.global_search = False
        return new

    out = [copy.deepcopy(st) for st in stages]
    first, last = idx[0], idx[-1]
    tail = []
    if fine_scale > 0:
        fine = variant(stages[last], float(fine_scale), n_patches=int(fine_patches))
        fine.shrink, fine.iterations, fine.smoothing_mm = [1], [int(fine_iterations)], None
        tail = [fine]
    out = out[: last + 1] + tail + out[last + 1 :]
    if coarse_scale > 0:
        coarse = variant(stages[first], float(coarse_scale))
        coarse.global_search = stages[first].global_search
        coarse.shrink, coarse.iterations, coarse.smoothing_mm = [2], [int(coarse_iterations)], [1.2 * float(coarse_scale)]
        out[first].global_search = False
        out.insert(first, coarse)
    return out
