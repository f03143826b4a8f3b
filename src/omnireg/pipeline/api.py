"""The Python API: ``omnireg.register(fixed, moving, ...)`` and the choice of a registration method.

:func:`method_for` turns a configuration and the options of ``omnireg register`` (``--model``,
``--no-affine``, ``--refine``) into a :class:`~omnireg.pipeline.method.RegistrationMethod`; :func:`register`
runs it through the pipeline on images or files and returns a
:class:`~omnireg.pipeline.run.PipelineResult`, whose ``save(out_dir)`` writes what the command line writes.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Iterable

from .method import ComposedMethod, EngineMethod, RegistrationMethod
from .run import PipelineResult, RegistrationRequest, run_pipeline

__all__ = ["method_for", "refine_config", "register"]


def refine_config(config, iterations: int):
    """The engine configuration of ``--refine N``: one deformable stage of ``N`` iterations at full resolution.

    The stage is ``config``'s last deformable stage, or the ``deformable`` preset's (a diffeomorphic SVF with
    local NCC), with one pyramid level (shrink 1) and ``iterations`` iterations; seed and device from ``config``.

    Raises:
        ValueError: ``iterations`` is not a positive integer.
    """
    from ..optim import RegistrationConfig, preset

    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"refine: expected a number of iterations >= 1, got {iterations!r}")
    template = next((st for st in reversed(config.stages) if not st.kind.is_linear), None)
    if template is None:
        template = preset("deformable").stages[-1]
    stage = copy.deepcopy(template)
    stage.shrink, stage.iterations, stage.smoothing_mm, stage.global_search = [1], [int(iterations)], None, False
    return RegistrationConfig(stages=[stage], init="none", seed=config.seed, device=config.device,
                              normalize=config.normalize).validate()


def method_for(config, *, model: Any = None, affine: bool = True, refine: int = 0, name=str,
               model_name: str = "model") -> RegistrationMethod:
    """The registration method of a configuration and the network options.

    Args:
        config: a checked :class:`~omnireg.optim.RegistrationConfig` (or a preset name / dict).
        model: None for the engine alone; else a network (model file, shipped name or network object):
            the configuration's linear stages run first (unless ``affine`` is False), then the network.
        affine: run the linear stages before the network (``--no-affine``: False).
        refine: with a network, the iterations of one engine stage that refines the network's field
            (:func:`refine_config`); 0 for none.
        name: how errors name the configuration's parts (``name("config")``).
        model_name: how errors name the model (``--model``).

    Returns:
        An :class:`EngineMethod`, a :class:`~omnireg.pipeline.network.NetworkMethod` or a :class:`ComposedMethod`.

    Raises:
        ValueError: ``refine`` or ``affine=False`` without a network, or an invalid configuration.
    """
    from .inputs import check_config

    config = check_config(config, name)
    if model is None:
        if refine:
            raise ValueError("refine: needs a network (model); the engine's own stages are set by the configuration")
        if not affine:
            raise ValueError("affine: only a network can skip the affine stages (give a model)")
        return EngineMethod(config, name=name)
    from ..optim import preset
    from .network import NetworkMethod

    linear = copy.deepcopy(config)
    linear.stages = [st for st in config.stages if st.kind.is_linear] or preset("affine").stages
    net = NetworkMethod(model, affine=linear if affine else None, device=config.device, seed=config.seed,
                        what=model_name)
    if not refine:
        return net
    return ComposedMethod(net, EngineMethod(refine_config(config, refine), name=name))


def register(
    fixed: Any,
    moving: Any,
    *,
    preset: str | None = None,
    config: Any = None,
    model: Any = None,
    affine: bool = True,
    refine: int = 0,
    method: RegistrationMethod | None = None,
    fixed_mask: Any = None,
    moving_mask: Any = None,
    fixed_labels: Any = None,
    moving_labels: Any = None,
    fixed_landmarks: str | os.PathLike | None = None,
    moving_landmarks: str | os.PathLike | None = None,
    initial: Any = None,
    seed: int | None = None,
    device: str | None = None,
    callbacks: Iterable = (),
) -> PipelineResult:
    """Register ``moving`` to ``fixed`` as ``omnireg register`` does; ``.save(out_dir)`` writes its outputs.

    The result's ``transform`` maps fixed-space world points (RAS mm, ``(1, P, D)``) to moving-space points
    (pull: ``warped(x) = moving(T(x))``); ``warped`` is the moving image on the fixed grid.

    Args:
        fixed, moving: images (:class:`omnireg.core.Image`) or image files.
        preset: a preset name (default ``affine``); exclusive with ``config``.
        config: a :class:`~omnireg.optim.RegistrationConfig`, a dict of one, or a preset name.
        model: a registration network (model file, shipped name or network object): the configuration's linear
            stages, then the network (``affine``/``refine`` as ``--no-affine``/``--refine N``).
        method: any :class:`~omnireg.pipeline.method.RegistrationMethod` instead of the above.
        fixed_mask, moving_mask, fixed_labels, moving_labels: optional images or files (masks restrict the
            similarity; labels are warped and, with both, give Dice per label).
        fixed_landmarks, moving_landmarks: optional landmark files (both or neither): the TRE.
        initial: optional ``(D+1, D+1)`` world matrix (fixed -> moving) to start from.
        seed, device: override the configuration's.
        callbacks: progress callbacks.

    Returns:
        A :class:`~omnireg.pipeline.run.PipelineResult` (``transform``, ``warped``, ``metric_before``,
        ``metric_after``, ``evaluation``, ``save(out_dir, force=False)``).

    Raises:
        FileNotFoundError, ValueError, TypeError: invalid inputs or options (the message names the argument),
            before any work.
    """
    from ..optim import configure
    from .inputs import as_config

    if method is None:
        if preset is not None and config is not None:
            raise ValueError("preset, config: give one of them")
        cfg = configure(preset=preset) if config is None else copy.deepcopy(as_config(config))
        if seed is not None:
            cfg.seed = int(seed)
        if device is not None:
            cfg.device = str(device)
        method = method_for(cfg, model=model, affine=affine, refine=refine)
    elif any(v is not None for v in (preset, config, model, seed, device)) or refine or not affine:
        raise ValueError("method: give a method, or preset/config/model options, not both")
    request = RegistrationRequest(fixed=fixed, moving=moving, method=method, fixed_mask=fixed_mask,
                                  moving_mask=moving_mask, fixed_labels=fixed_labels, moving_labels=moving_labels,
                                  fixed_landmarks=fixed_landmarks, moving_landmarks=moving_landmarks, initial=initial,
                                  callbacks=callbacks)
    return run_pipeline(request)
