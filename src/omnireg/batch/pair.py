"""One registration from files to an output folder: the per-pair work of ``omnireg register`` and ``omnireg batch``.

:func:`run_registration` loads the images (and optional masks, label maps, landmarks), runs
:func:`omnireg.optim.register`, writes the outputs into a folder and returns the content of its
``result.json``:

* ``warped.nii.gz``: the moving image pulled onto the fixed grid, ``warped(x) = moving(T(x))``;
* ``transform.h5``: one ITK composite transform of the whole fixed -> moving mapping ``T``;
* ``linear.mat`` and, for deformable runs, ``deformation.nii.gz`` (ITK displacement field, world mm, LPS),
  listed in ``antsApplyTransforms -t`` order;
* ``warped_labels.nii.gz``: the moving label map pulled onto the fixed grid with nearest neighbour;
* with ``inverse=True``, ``inverse.h5`` (``T^-1``, moving -> fixed) and ``inverse_warped.nii.gz`` (the fixed
  image pulled onto the moving grid), see :func:`omnireg.transforms.files.save_inverse_outputs`;
* ``result.json``: metrics, runtimes, configuration, outputs and, where labels or landmarks of both
  images are given, the evaluation (written last, so its presence marks a finished run).

Evaluation (world mm, on the fixed grid): Dice and IoU per label of the fixed label map against the
warped moving label map, before (moving labels resampled with the identity) and after registration; and
the landmark TRE ``|T(p) - q|`` of fixed landmarks ``p`` and moving landmarks ``q`` before (``T`` =
identity) and after. Surface distances are not computed here (``omnireg evaluate`` does).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from .inputs import check_config, load_inputs

__all__ = ["OUTPUT_NAMES", "label_evaluation", "run_registration"]

logger = logging.getLogger(__name__)

#: The files a registration writes into its output folder (``deformation.nii.gz``, ``warped_labels.nii.gz``,
#: ``inverse.h5`` and ``inverse_warped.nii.gz`` only when they apply).
OUTPUT_NAMES = (
    "warped.nii.gz", "transform.h5", "linear.mat", "deformation.nii.gz", "warped_labels.nii.gz", "report.html",
    "inverse.h5", "inverse_warped.nii.gz", "result.json",
)


def label_evaluation(fixed_labels, moving_labels, transform, fixed_grid) -> tuple[dict, Any]:
    """Dice/IoU per label after (and Dice before) registration, and the warped label map."""
    from ..evaluation import label_metrics, summarize_labels
    from ..transforms import resample

    warped = resample(moving_labels, transform, onto=fixed_grid, interp="nearest")
    before = resample(moving_labels, None, onto=fixed_grid, interp="nearest")
    after_m = label_metrics(fixed_labels, warped, distances=False)
    labels = [m.label for m in after_m]
    before_m = label_metrics(fixed_labels, before, labels=labels, distances=False)
    per_label = [
        {"label": a.label, "name": a.name, "dice": a.dice, "iou": a.iou, "dice_before": b.dice,
         "fixed_volume_mm3": a.fixed_volume_mm3, "warped_volume_mm3": a.warped_volume_mm3}
        for a, b in zip(after_m, before_m)
    ]
    after_s, before_s = summarize_labels(after_m), summarize_labels(before_m)
    return {
        "dice_mean": after_s["dice"],
        "dice_mean_before": before_s["dice"],
        "iou_mean": after_s["iou"],
        "labels": len(after_m),
        "per_label": per_label,
    }, warped


def _check_out_dir(out: Path, force: bool, what: str) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{what}: {out} exists and is not a folder")
    if out.is_dir() and not force:
        clash = [n for n in OUTPUT_NAMES if (out / n).exists()]
        if clash:
            raise FileExistsError(f"{what}: {out} already holds {', '.join(clash)}; use --force to overwrite")


def run_registration(
    fixed_path: str | os.PathLike,
    moving_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    config,
    *,
    fixed_mask: str | os.PathLike | None = None,
    moving_mask: str | os.PathLike | None = None,
    fixed_labels: str | os.PathLike | None = None,
    moving_labels: str | os.PathLike | None = None,
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
    """Register the moving image file to the fixed one and write the outputs into ``out_dir`` (module docstring).

    The transform ``T`` found maps fixed-space world points to moving-space world points (pull):
    ``warped(x) = moving(T(x))`` for x on the fixed grid. Every file is written atomically and
    ``result.json`` last; an existing output is replaced only with ``force``.

    Args:
        fixed_path, moving_path: the images (any format :func:`omnireg.io.load_image` reads).
        out_dir: output folder, created if missing.
        config: a :class:`~omnireg.optim.RegistrationConfig`, a dict of one, or a preset name.
        fixed_mask, moving_mask: optional masks on the fixed / moving grid (non-zero = used).
        fixed_labels: optional label map on the fixed grid; with ``moving_labels``, Dice per label.
        moving_labels: optional label map on the moving grid, warped with nearest neighbour.
        fixed_landmarks, moving_landmarks: optional landmark files (both or neither) for the TRE.
        initial: optional ``(D+1, D+1)`` world matrix (fixed -> moving) replacing the initialisation.
        callbacks: progress callbacks passed to :func:`omnireg.optim.register`.
        force: overwrite outputs already in ``out_dir``.
        metadata: extra JSON-able items stored under ``"metadata"`` in ``result.json``.
        arg_names: how the caller calls the arguments in error messages, e.g. ``{"out_dir": "--out",
            "fixed": "FIXED", "fixed_mask": "--fixed-mask"}`` for a command line; others keep their names.
        report: also write the quality-control page ``report.html`` and its pictures
            (:func:`omnireg.report.write_report`).
        inverse: also write ``inverse.h5`` and ``inverse_warped.nii.gz``; ``result.json`` then holds
            ``inverse_residual_mm`` (how the inverse was computed, max and mean of ``|T(T^-1(y)) - y|``).

    Returns:
        The content of ``result.json`` (a dict; NaN written as ``null``): ``metric_before``, ``metric_after``,
        ``runtime_s`` (the engine's), ``wall_time_s`` (loading to writing), ``outputs``, ``evaluation``, ...

    Raises:
        FileNotFoundError: an input does not exist (the message names the argument).
        FileExistsError: ``out_dir`` holds outputs and ``force`` is false.
        ValueError, TypeError: unreadable inputs, mismatching dimensions or grids, one landmark file
            without the other, or an invalid configuration (the message names the argument).
    """
    from .. import __version__
    from ..io import json_ready, save_image, staged_outputs, write_json_atomic
    from ..optim import register
    from ..transforms import resample
    from ..transforms.files import save_transform_outputs

    t0 = time.perf_counter()
    names = dict(arg_names or {})

    def name(key: str) -> str:
        return names.get(key, key)

    out = Path(out_dir)
    _check_out_dir(out, force, name("out_dir"))
    config = check_config(config, name)
    inputs = load_inputs(fixed_path, moving_path, fixed_mask=fixed_mask, moving_mask=moving_mask,
                         fixed_labels=fixed_labels, moving_labels=moving_labels, fixed_landmarks=fixed_landmarks,
                         moving_landmarks=moving_landmarks, initial=initial, name=name)
    fixed, moving, initial, landmarks = inputs.fixed, inputs.moving, inputs.initial, inputs.landmarks
    fmask, mmask, flabels, mlabels = inputs.fixed_mask, inputs.moving_mask, inputs.fixed_labels, inputs.moving_labels

    result = register(fixed, moving, config=config, fixed_mask=fmask, moving_mask=mmask, initial=initial,
                      callbacks=list(callbacks))

    # every output is written into a staging folder inside the output folder and moved into place at the end
    # (result.json last): an interruption (Ctrl-C) or an error leaves the output folder as it was
    final = out
    with staged_outputs(final, force=force, last="result.json") as out:
        files = save_transform_outputs(result, out, force=force)
        save_image(result.warped, out / "warped.nii.gz", force=force)
        outputs: dict[str, Any] = {"warped": "warped.nii.gz", "transform": "transform.h5", "ants_order": files}
        evaluation: dict[str, Any] = {}
        if mlabels is not None:
            if flabels is not None:
                evaluation["labels"], warped_labels = label_evaluation(flabels, mlabels, result.transform, fixed.grid)
            else:
                warped_labels = resample(mlabels, result.transform, onto=fixed.grid, interp="nearest")
            save_image(warped_labels, out / "warped_labels.nii.gz", force=force)
            outputs["warped_labels"] = "warped_labels.nii.gz"
        else:
            warped_labels = None
        inverse_residual = None
        if inverse:
            from ..transforms.files import save_inverse_outputs

            inv = save_inverse_outputs(result, out, fixed=fixed, moving_grid=moving.grid, force=force)
            outputs.update(inv.files)
            inverse_residual = inv.residual_mm
        if landmarks is not None:
            from ..evaluation import target_registration_error

            p, q, names = landmarks
            evaluation["landmarks"] = {
                "count": int(p.shape[0]),
                "before": target_registration_error(p, q).to_dict(prefix="tre_"),
                "after": target_registration_error(p, q, result.transform).to_dict(prefix="tre_"),
            }
        if report:
            from ..report import write_report

            write_report(out, fixed=fixed, moving=moving, result=result, fixed_labels=flabels,
                         warped_labels=warped_labels, metrics=json_ready(evaluation) or None, force=force)
            outputs["report"] = "report.html"
        summary: dict[str, Any] = {
            "omnireg_version": __version__,
            "fixed": str(fixed_path),
            "moving": str(moving_path),
            "inputs": {k: (None if v is None else str(v)) for k, v in (
                ("fixed_mask", fixed_mask), ("moving_mask", moving_mask), ("fixed_labels", fixed_labels),
                ("moving_labels", moving_labels), ("fixed_landmarks", fixed_landmarks), ("moving_landmarks", moving_landmarks))},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "metric_before": result.metric_before,
            "metric_after": result.metric_after,
            "runtime_s": result.runtime_s,
            "stage_runtimes_s": result.stage_runtimes_s,
            "wall_time_s": time.perf_counter() - t0,
            "outputs": outputs,
            "antsApplyTransforms": "antsApplyTransforms -d {d} -i MOVING -r FIXED -o OUT {t}".format(
                d=fixed.ndim, t=" ".join(f"-t {f}" for f in files)
            ),
            "evaluation": evaluation,
            "initialization": result.initialization,
            "stages": result.stage_checks,
            "history": [h.__dict__ for h in result.history],
            "config": result.config,
        }
        if inverse_residual is not None:
            summary["inverse_residual_mm"] = inverse_residual
        if metadata:
            summary["metadata"] = dict(metadata)
        summary = json_ready(summary)
        write_json_atomic(out / "result.json", summary, force=force)
    logger.info("%s -> %s: outputs in %s (%.1f s)", moving_path, fixed_path, final, summary["wall_time_s"])
    return summary
