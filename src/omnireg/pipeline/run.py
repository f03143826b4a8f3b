"""The pipeline's entry point: one registration from inputs to outputs, whatever the method.

::

    request -> validation (every input, the output folder, the method's own checks; nothing runs before)
            -> method.run (the engine | a network | a network then the engine)
            -> evaluation (labels, landmarks, the caller's extra figures)
            -> outputs and report (staged, result.json last)  ->  PipelineResult

:func:`run_pipeline` takes a :class:`RegistrationRequest`; :func:`run_registration` is the same for files
and a configuration (what ``omnireg register`` and ``omnireg batch`` call).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .inputs import ImageSource, RegistrationInputs, describe_source, load_inputs
from .method import MethodResult, RegistrationMethod
from .outputs import check_out_dir, evaluate, write_outputs

__all__ = ["PipelineResult", "RegistrationRequest", "run_pipeline", "run_registration"]

logger = logging.getLogger(__name__)

_INPUT_KEYS = ("fixed_mask", "moving_mask", "fixed_labels", "moving_labels", "fixed_landmarks", "moving_landmarks")


@dataclass
class RegistrationRequest:
    """Everything one registration needs (world RAS mm; a transform maps fixed points to moving points).

    Attributes:
        fixed, moving: the images: files, or :class:`omnireg.core.Image` objects.
        method: the :class:`~omnireg.pipeline.method.RegistrationMethod` to run.
        fixed_mask, moving_mask: optional masks on the fixed / moving grid (files or Images; non-zero = used).
        fixed_labels, moving_labels: optional label maps (files or Images): warped labels, and Dice with both.
        fixed_landmarks, moving_landmarks: optional landmark files (both or neither): the TRE.
        initial: optional ``(D+1, D+1)`` world matrix (fixed -> moving) to start from.
        callbacks: progress callbacks passed to the method.
        out_dir: the output folder, or None to keep the result in memory (:meth:`PipelineResult.save` writes it).
        force: replace outputs already in ``out_dir``.
        report: write ``report.html``; inverse: write ``inverse.h5`` and ``inverse_warped.nii.gz``.
        metadata: extra JSON-able items stored under ``"metadata"`` in ``result.json``.
        arg_names: how the caller calls the inputs in messages (``{"out_dir": "--out", "fixed": "FIXED"}``).
        extra_evaluation: ``f(result) -> dict`` of further figures, merged into ``result.json["evaluation"]``
            and the report (e.g. the demo's errors against a known truth).
        title: the report's title.
    """

    fixed: ImageSource
    moving: ImageSource
    method: RegistrationMethod
    fixed_mask: ImageSource | None = None
    moving_mask: ImageSource | None = None
    fixed_labels: ImageSource | None = None
    moving_labels: ImageSource | None = None
    fixed_landmarks: str | os.PathLike | None = None
    moving_landmarks: str | os.PathLike | None = None
    initial: Any = None
    callbacks: Iterable = ()
    out_dir: str | os.PathLike | None = None
    force: bool = False
    report: bool = True
    inverse: bool = False
    metadata: Mapping[str, Any] | None = None
    arg_names: Mapping[str, str] | None = None
    extra_evaluation: Callable[[MethodResult], dict] | None = None
    title: str | None = None

    def name(self, key: str) -> str:
        """How the caller calls the input ``key`` in messages."""
        return dict(self.arg_names or {}).get(key, key)


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` returns: the method's result, the checked inputs, the evaluation and, once
    written, the content of ``result.json``.

    Attributes:
        result: the :class:`~omnireg.pipeline.method.MethodResult` (``transform``, ``warped``, ...).
        inputs: the checked :class:`~omnireg.pipeline.inputs.RegistrationInputs`.
        evaluation: Dice per label and TRE (when labels / landmarks of both images were given).
        warped_labels: the moving label map on the fixed grid, or None.
        summary: the content of ``result.json`` of the last :meth:`save` (None until saved).
        out_dir: the folder of the last :meth:`save`.
        record: what ``result.json`` says about the inputs (``fixed``, ``moving``, ``inputs``, ``metadata``).
        run_time_s: loading to evaluation, seconds.
    """

    result: MethodResult
    inputs: RegistrationInputs
    evaluation: dict = field(default_factory=dict)
    warped_labels: Any = None
    summary: dict | None = None
    out_dir: Path | None = None
    record: dict = field(default_factory=dict)
    run_time_s: float = 0.0
    report: bool = True
    inverse: bool = False
    title: str | None = None

    # the method result's main fields, for convenience
    @property
    def transform(self):
        """The whole fixed -> moving mapping ``T`` (world RAS mm; pull: ``warped(x) = moving(T(x))``)."""
        return self.result.transform

    @property
    def warped(self):
        """The moving image on the fixed grid."""
        return self.result.warped

    @property
    def metric_before(self) -> dict:
        return self.result.metric_before

    @property
    def metric_after(self) -> dict:
        return self.result.metric_after

    @property
    def runtime_s(self) -> float:
        return self.result.runtime_s

    def save(self, out_dir: str | os.PathLike, force: bool = False, *, report: bool | None = None,
             inverse: bool | None = None) -> dict:
        """Write the outputs (exactly those of ``omnireg register``) into ``out_dir``; returns ``result.json``.

        Args:
            out_dir: output folder (created if missing).
            force: replace outputs that exist (else a ``FileExistsError`` before anything is written).
            report: write ``report.html`` (default: as the request said, True for the Python API).
            inverse: write ``inverse.h5`` and ``inverse_warped.nii.gz`` (default: as the request said).
        """
        out = Path(out_dir)
        check_out_dir(out, force, "out_dir")
        return self._write(out, force=force, report=self.report if report is None else report,
                           inverse=self.inverse if inverse is None else inverse, wall_time_s=self.run_time_s)

    def _write(self, out: Path, *, force: bool, report: bool, inverse: bool, wall_time_s: float) -> dict:
        self.summary = write_outputs(out, self, force=force, report=report, inverse=inverse, record=self.record,
                                     wall_time_s=wall_time_s, title=self.title)
        self.out_dir = out
        return self.summary


def run_pipeline(request: RegistrationRequest) -> PipelineResult:
    """Run one registration: validate everything, run the method, evaluate, write (module docstring).

    Args:
        request: the :class:`RegistrationRequest`.

    Returns:
        A :class:`PipelineResult`; with ``request.out_dir``, the outputs are written and ``summary`` holds
        ``result.json``.

    Raises:
        FileNotFoundError: an input does not exist (the message names the argument).
        FileExistsError: ``out_dir`` holds outputs and ``force`` is false.
        ValueError, TypeError: unreadable or inconsistent inputs, or inputs the method cannot register
            (messages name the argument); raised before any work and before anything is written.
    """
    t0 = time.perf_counter()
    name = request.name
    if not isinstance(request.method, RegistrationMethod):
        raise TypeError(f"method: expected a RegistrationMethod, got {type(request.method).__name__}")
    out = None if request.out_dir is None else Path(request.out_dir)
    if out is not None:
        check_out_dir(out, request.force, name("out_dir"))
    inputs = load_inputs(request.fixed, request.moving, initial=request.initial, name=name,
                         **{k: getattr(request, k) for k in _INPUT_KEYS})
    request.method.check(inputs.fixed, inputs.moving)

    result = request.method.run(inputs.fixed, inputs.moving, fixed_mask=inputs.fixed_mask,
                                moving_mask=inputs.moving_mask, initial=inputs.initial,
                                callbacks=list(request.callbacks))
    if not isinstance(result, MethodResult):
        raise TypeError(f"method: {type(request.method).__name__}.run returned a {type(result).__name__}, "
                        "expected a MethodResult")
    evaluation, warped_labels = evaluate(inputs, result)
    if request.extra_evaluation is not None:
        evaluation.update(request.extra_evaluation(result) or {})
    record = {
        "fixed": describe_source(request.fixed),
        "moving": describe_source(request.moving),
        "inputs": {k: describe_source(getattr(request, k)) for k in _INPUT_KEYS},
        "metadata": dict(request.metadata or {}),
    }
    run = PipelineResult(result=result, inputs=inputs, evaluation=evaluation, warped_labels=warped_labels,
                         record=record, run_time_s=time.perf_counter() - t0, report=request.report,
                         inverse=request.inverse, title=request.title)
    if out is not None:
        run._write(out, force=request.force, report=request.report, inverse=request.inverse,
                   wall_time_s=time.perf_counter() - t0)
        logger.info("%s -> %s: outputs in %s (%.1f s)", record["moving"], record["fixed"], out,
                    run.summary["wall_time_s"])
    return run


def run_registration(
    fixed_path: ImageSource,
    moving_path: ImageSource,
    out_dir: str | os.PathLike,
    config=None,
    *,
    method: RegistrationMethod | None = None,
    fixed_mask: ImageSource | None = None,
    moving_mask: ImageSource | None = None,
    fixed_labels: ImageSource | None = None,
    moving_labels: ImageSource | None = None,
    fixed_landmarks: str | os.PathLike | None = None,
    moving_landmarks: str | os.PathLike | None = None,
    initial=None,
    callbacks: Iterable = (),
    force: bool = False,
    metadata: Mapping[str, Any] | None = None,
    arg_names: Mapping[str, str] | None = None,
    report: bool = True,
    inverse: bool = False,
) -> dict:
    """Register the moving image to the fixed one and write the outputs into ``out_dir``; returns ``result.json``.

    The engine with ``config`` (or any ``method``) through :func:`run_pipeline`; the outputs are listed in
    :mod:`omnireg.pipeline.outputs`. The transform ``T`` found maps fixed-space world points to moving-space
    world points (pull): ``warped(x) = moving(T(x))`` for x on the fixed grid.

    Args:
        fixed_path, moving_path: the images (files any format :func:`omnireg.io.load_image` reads, or Images).
        out_dir: output folder, created if missing.
        config: a :class:`~omnireg.optim.RegistrationConfig`, a dict of one, or a preset name (the engine).
        method: a registration method instead of ``config``.
        fixed_mask, moving_mask: optional masks on the fixed / moving grid (non-zero = used).
        fixed_labels: optional label map on the fixed grid; with ``moving_labels``, Dice per label.
        moving_labels: optional label map on the moving grid, warped with nearest neighbour.
        fixed_landmarks, moving_landmarks: optional landmark files (both or neither) for the TRE.
        initial: optional ``(D+1, D+1)`` world matrix (fixed -> moving) replacing the initialisation.
        callbacks: progress callbacks passed to the method.
        force: overwrite outputs already in ``out_dir``.
        metadata: extra JSON-able items stored under ``"metadata"`` in ``result.json``.
        arg_names: how the caller calls the arguments in error messages, e.g. ``{"out_dir": "--out",
            "fixed": "FIXED", "fixed_mask": "--fixed-mask"}`` for a command line; others keep their names.
        report: also write the quality-control page ``report.html`` and its pictures.
        inverse: also write ``inverse.h5`` and ``inverse_warped.nii.gz``; ``result.json`` then holds
            ``inverse_residual_mm`` (how the inverse was computed, max and mean of ``|T(T^-1(y)) - y|``).

    Returns:
        The content of ``result.json`` (a dict; NaN written as ``null``): ``metric_before``, ``metric_after``,
        ``runtime_s`` (the method's), ``wall_time_s`` (loading to writing), ``outputs``, ``evaluation``, ...

    Raises:
        FileNotFoundError, FileExistsError, ValueError, TypeError: as :func:`run_pipeline`, and an invalid
            configuration (the message names the argument); before anything runs.
    """
    from .method import EngineMethod

    names = dict(arg_names or {})
    out = Path(out_dir)
    check_out_dir(out, force, names.get("out_dir", "out_dir"))
    if (config is None) == (method is None):
        raise TypeError("config, method: give exactly one of them")
    if method is None:
        method = EngineMethod(config, name=lambda key: names.get(key, key))
    request = RegistrationRequest(
        fixed=fixed_path, moving=moving_path, method=method, fixed_mask=fixed_mask, moving_mask=moving_mask,
        fixed_labels=fixed_labels, moving_labels=moving_labels, fixed_landmarks=fixed_landmarks,
        moving_landmarks=moving_landmarks, initial=initial, callbacks=callbacks, out_dir=out, force=force,
        report=report, inverse=inverse, metadata=metadata, arg_names=names)
    return run_pipeline(request).summary
