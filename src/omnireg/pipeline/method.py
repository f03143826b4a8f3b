"""The registration method interface of the pipeline, what a method returns, and the engine and composition methods.

A *registration method* turns two checked images into a fixed -> moving transform (pull:
``warped(x) = moving(T(x))`` for fixed-space world points ``x``). The pipeline
(:func:`omnireg.pipeline.run_pipeline`) validates the inputs, calls :meth:`RegistrationMethod.check` and
:meth:`RegistrationMethod.run`, and writes every output and the report from the :class:`MethodResult`, the
same way for every method. A new method is a subclass of :class:`RegistrationMethod` that implements
``run`` (and, if it has requirements on the images, ``check``); nothing else in omnireg changes.

Methods in omnireg:

* :class:`EngineMethod`: the optimisation engine (:func:`omnireg.optim.register`) with a
  :class:`~omnireg.optim.RegistrationConfig`;
* :class:`~omnireg.pipeline.network.NetworkMethod`: a registration network (after the engine's affine stages);
* :class:`ComposedMethod`: one method, then engine stages that start from its result (a network refined by
  instance optimisation, ``omnireg register --model M --refine N``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Any, Iterable

import numpy as np

from ..core import Image
from ..optim import DEFAULT_PRESET, RegistrationResult
from ..optim.result import Callback

__all__ = ["ComposedMethod", "EngineMethod", "MethodResult", "RegistrationMethod"]

log = logging.getLogger(__name__)


@dataclass
class MethodResult(RegistrationResult):
    """What a registration method returns: everything the pipeline's outputs and report need.

    The fields of :class:`~omnireg.optim.RegistrationResult` (``transform`` = ``linear ∘ deformable``, the whole
    fixed -> moving mapping; ``linear`` an ``Affine``; ``deformable`` None or a transform acting on the
    fixed-space points first, e.g. a ``DisplacementField`` on its own grid or a ``StationaryVelocityField``;
    ``warped`` the moving image on the fixed grid; ``history``; ``metric_before``/``metric_after``;
    ``runtime_s``; ``stage_runtimes_s``; ``config``: the settings dict stored in ``result.json``;
    ``stage_checks``: the guard's record per engine stage; ``initialization``), and:

    Attributes:
        method: how the result was made, stored as ``result.json["method"]`` (at least ``{"name": ...}``).
        deformable_inverse: an exact inverse of ``deformable`` when the method has one (a diffeomorphic
            network's ``exp(-v)``), else None: the pipeline then inverts ``deformable`` itself
            (``exp(-v)`` of an SVF, fixed-point iteration of a displacement field).
        inverse_method: how ``deformable_inverse`` was computed (for ``result.json["inverse_residual_mm"]``).
    """

    method: dict = field(default_factory=dict)
    deformable_inverse: Any = None
    inverse_method: str | None = None

    @classmethod
    def from_engine(cls, result: RegistrationResult, **extra: Any) -> "MethodResult":
        """A :class:`MethodResult` holding an engine result's fields (and ``extra`` ones)."""
        base = {f.name: getattr(result, f.name) for f in fields(RegistrationResult)}
        return cls(**base, **extra)

    @property
    def linear_matrix(self) -> np.ndarray:
        """The linear part as a ``(D+1, D+1)`` float64 world matrix (fixed -> moving)."""
        return self.linear.matrix()[0].detach().cpu().double().numpy()


class RegistrationMethod(ABC):
    """A way to register two images; the pipeline runs it and writes its result (module docstring).

    Subclasses set :attr:`name` and implement :meth:`run`; :meth:`check` and :meth:`settings` have defaults.
    """

    #: the method's name in ``result.json["method"]["name"]``
    name: str = "method"

    def check(self, fixed: Image, moving: Image) -> None:
        """Raise ``ValueError``/``TypeError`` if this method cannot register these (already checked) images.

        Called by the pipeline after the inputs are read and before any work; the default accepts all.
        """

    def settings(self) -> dict:
        """The method's settings for ``result.json["method"]`` (plain values)."""
        return {"name": self.name}

    @abstractmethod
    def run(
        self,
        fixed: Image,
        moving: Image,
        *,
        fixed_mask: Image | None = None,
        moving_mask: Image | None = None,
        initial: np.ndarray | None = None,
        callbacks: Iterable[Callback] = (),
    ) -> MethodResult:
        """Register ``moving`` to ``fixed``.

        Args:
            fixed, moving: the images (world RAS mm; any grids).
            fixed_mask, moving_mask: optional masks on the fixed / moving grid (non-zero = used).
            initial: optional ``(D+1, D+1)`` float64 world matrix (fixed -> moving) to start from.
            callbacks: progress callbacks (:class:`omnireg.optim.ProgressEvent`).

        Returns:
            A :class:`MethodResult`.
        """


class EngineMethod(RegistrationMethod):
    """The optimisation engine, :func:`omnireg.optim.register`, with one configuration.

    Args:
        config: a :class:`~omnireg.optim.RegistrationConfig`, a dict of one or a preset name; checked here
            (:func:`omnireg.pipeline.inputs.check_config`).
        name: how errors call the configuration (``name("config")``, ``name("device")``).
    """

    name = "engine"

    def __init__(self, config=DEFAULT_PRESET, *, name=str) -> None:
        from .inputs import check_config

        self.config = check_config(config, name)

    def settings(self) -> dict:
        return {"name": self.name}

    def run(self, fixed, moving, *, fixed_mask=None, moving_mask=None, initial=None, callbacks=(),
            initial_deformable=None) -> MethodResult:
        """:meth:`RegistrationMethod.run`; ``initial_deformable``: a deformable transform the stages start from
        (see :func:`omnireg.optim.register`)."""
        from .. import optim

        result = optim.register(fixed, moving, config=self.config, fixed_mask=fixed_mask, moving_mask=moving_mask,
                                initial=initial, initial_deformable=initial_deformable, callbacks=list(callbacks))
        return MethodResult.from_engine(result, method=self.settings())


class ComposedMethod(RegistrationMethod):
    """``first``, then the engine's stages of ``refine`` starting from its result (instance optimisation).

    The engine starts from ``first``'s linear matrix and deformable part: its deformable stages refine
    that part (``T = L ∘ D_first ∘ S``), and its guard discards a stage whose result is worse than that start.
    The result's ``metric_before``/``metric_after`` are the refining engine's (its last stage's metric).

    Args:
        first: any registration method (e.g. a :class:`~omnireg.pipeline.network.NetworkMethod`).
        refine: an :class:`EngineMethod` (typically one deformable stage).
    """

    name = "composed"

    def __init__(self, first: RegistrationMethod, refine: EngineMethod) -> None:
        if not isinstance(first, RegistrationMethod):
            raise TypeError(f"first: expected a RegistrationMethod, got {type(first).__name__}")
        if not isinstance(refine, EngineMethod):
            raise TypeError(f"refine: expected an EngineMethod, got {type(refine).__name__}")
        self.first, self.refine = first, refine

    def check(self, fixed, moving) -> None:
        self.first.check(fixed, moving)
        self.refine.check(fixed, moving)

    def settings(self) -> dict:
        return {"name": f"{self.first.name}+{self.refine.name}", "first": self.first.settings(),
                "refine": self.refine.settings()}

    def run(self, fixed, moving, *, fixed_mask=None, moving_mask=None, initial=None, callbacks=()) -> MethodResult:
        callbacks = list(callbacks)
        a = self.first.run(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask, initial=initial,
                           callbacks=callbacks)
        b = self.refine.run(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask, initial=a.linear_matrix,
                            callbacks=callbacks, initial_deformable=a.deformable)
        offset = len(a.stage_checks)
        checks = [*a.stage_checks, *({**c, "stage": c["stage"] + offset} for c in b.stage_checks)]
        history = list(a.history)
        for h in b.history:
            h.stage += offset
            history.append(h)
        unchanged = b.deformable is a.deformable  # every refining stage was discarded: first's field as it was
        if not unchanged:
            log.info("refinement: %d engine stage(s) after %s", len(b.stage_checks), self.first.name)
        return MethodResult(
            transform=b.transform, linear=b.linear, deformable=b.deformable, warped=b.warped, history=history,
            metric_before=b.metric_before, metric_after=b.metric_after, runtime_s=a.runtime_s + b.runtime_s,
            stage_runtimes_s=[*a.stage_runtimes_s, *b.stage_runtimes_s],
            config={"first": a.config, "refine": b.config}, stage_checks=checks, initialization=a.initialization,
            method={**self.settings(), "first": a.method, "refine": b.method},
            deformable_inverse=a.deformable_inverse if unchanged else None,
            inverse_method=a.inverse_method if unchanged else None,
        )
