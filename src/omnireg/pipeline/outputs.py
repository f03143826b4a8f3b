"""The pipeline's last steps: evaluation against labels and landmarks, the output files, the report, result.json.

Outputs of one registration in its folder (every method writes the same):

* ``warped.nii.gz``: the moving image pulled onto the fixed grid, ``warped(x) = moving(T(x))``;
* ``transform.h5``: one ITK composite transform of the whole fixed -> moving mapping ``T``;
* ``linear.mat`` and, when there is a deformable part, ``deformation.nii.gz`` (ITK displacement field,
  world mm, LPS, on the field's own grid), listed in ``antsApplyTransforms -t`` order;
* ``warped_labels.nii.gz``: the moving label map pulled onto the fixed grid with nearest neighbour;
* with ``inverse``, ``inverse.h5`` (``T^-1``, moving -> fixed) and ``inverse_warped.nii.gz`` (the fixed
  image pulled onto the moving grid), see :func:`omnireg.transforms.files.save_inverse_outputs`;
* ``report.html`` and ``report_files/`` (quality control, :func:`omnireg.report.write_report`);
* ``result.json``: metrics, runtimes, settings, outputs and the evaluation (written last, so its presence
  marks a finished run).

Everything is written into a staging folder inside the output folder and moved into place at the end
(:func:`omnireg.io.staged_outputs`): an interruption or an error leaves the folder as it was.

Evaluation (world mm, on the fixed grid): Dice and IoU per label of the fixed label map against the warped
moving label map, before (moving labels resampled with the identity) and after registration; and the
landmark TRE ``|T(p) - q|`` of fixed landmarks ``p`` and moving landmarks ``q`` before (``T`` = identity) and
after. Surface distances are not computed here (``omnireg evaluate`` does).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

__all__ = ["OUTPUT_NAMES", "check_out_dir", "evaluate", "label_evaluation", "worse_than_the_start", "write_outputs"]

logger = logging.getLogger(__name__)

#: The files a registration writes into its output folder (``deformation.nii.gz``, ``warped_labels.nii.gz``,
#: ``inverse.h5`` and ``inverse_warped.nii.gz`` only when they apply).
OUTPUT_NAMES = (
    "warped.nii.gz", "transform.h5", "linear.mat", "deformation.nii.gz", "warped_labels.nii.gz", "report.html",
    "inverse.h5", "inverse_warped.nii.gz", "result.json",
)


def check_out_dir(out: Path, force: bool, what: str) -> None:
    """Refuse an output folder that is a file, or that holds outputs (unless ``force``); ``what`` names it."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{what}: {out} exists and is not a folder")
    if out.is_dir() and not force:
        clash = [n for n in OUTPUT_NAMES if (out / n).exists()]
        if clash:
            raise FileExistsError(f"{what}: {out} already holds {', '.join(clash)}; use --force to overwrite")


def label_evaluation(fixed_labels, moving_labels, transform, fixed_grid) -> tuple[dict, Any]:
    """Dice/IoU per label after (and Dice before) registration, and the warped label map.

    Args:
        fixed_labels: label map on ``fixed_grid``.
        moving_labels: label map on the moving grid.
        transform: the fixed -> moving mapping.
        fixed_grid: the fixed image's grid.

    Returns:
        ``(record, warped_labels)``: ``dice_mean``, ``dice_mean_before``, ``iou_mean``, ``labels`` and
        ``per_label`` rows; the moving labels pulled onto ``fixed_grid`` (nearest neighbour).
    """
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


def evaluate(inputs, result) -> tuple[dict, Any]:
    """The evaluation of a result against the inputs' labels and landmarks, and the warped moving labels.

    Args:
        inputs: the :class:`~omnireg.pipeline.inputs.RegistrationInputs`.
        result: the method's result (``transform`` maps fixed to moving points).

    Returns:
        ``(evaluation, warped_labels or None)``; ``evaluation`` has ``labels`` (with both label maps) and
        ``landmarks`` (with both landmark files) entries.
    """
    from ..transforms import resample

    evaluation: dict[str, Any] = {}
    warped_labels = None
    if inputs.moving_labels is not None:
        if inputs.fixed_labels is not None:
            evaluation["labels"], warped_labels = label_evaluation(inputs.fixed_labels, inputs.moving_labels,
                                                                   result.transform, inputs.fixed.grid)
        else:
            warped_labels = resample(inputs.moving_labels, result.transform, onto=inputs.fixed.grid, interp="nearest")
    if inputs.landmarks is not None:
        from ..evaluation import target_registration_error

        p, q, _ = inputs.landmarks
        evaluation["landmarks"] = {
            "count": int(p.shape[0]),
            "before": target_registration_error(p, q).to_dict(prefix="tre_"),
            "after": target_registration_error(p, q, result.transform).to_dict(prefix="tre_"),
        }
    worse = worse_than_the_start(evaluation)
    if worse:
        evaluation["worse_than_start"] = worse
        for line in worse:
            logger.warning("the result is worse than the start: %s", line)
    return evaluation, warped_labels


#: how much worse than the start an evaluation figure may end before it is reported (rounding, not alignment)
WORSE_DICE = 1e-3
WORSE_TRE_MM = 0.01


def worse_than_the_start(evaluation: dict) -> list[str]:
    """Lines naming each evaluation figure that ended worse than at the start (mean Dice, mean TRE).

    The optimisation's own guard cannot see labels or landmarks; when the user gives them, a result that
    loses Dice or landmark accuracy must not pass as a success: the pipeline logs a warning per line and
    stores them as ``result.json["evaluation"]["worse_than_start"]``.
    """
    lines = []
    labels = evaluation.get("labels")
    if labels and labels.get("dice_mean") is not None and labels.get("dice_mean_before") is not None:
        if labels["dice_mean"] < labels["dice_mean_before"] - WORSE_DICE:
            lines.append(f"mean Dice {labels['dice_mean_before']:.3f} at the start, {labels['dice_mean']:.3f} after")
    marks = evaluation.get("landmarks")
    if marks:
        t0, t1 = marks["before"].get("tre_mean_mm"), marks["after"].get("tre_mean_mm")
        if t0 is not None and t1 is not None and t1 > t0 + WORSE_TRE_MM:
            lines.append(f"mean landmark error {t0:.2f} mm at the start, {t1:.2f} mm after")
    return lines


def write_outputs(out: Path, run, *, force: bool, report: bool, inverse: bool, record: dict,
                  wall_time_s: float, title: str | None = None) -> dict:
    """Write every output of a finished pipeline run into the folder ``out`` (staged; module docstring).

    Args:
        out: the output folder (created if missing).
        run: the :class:`~omnireg.pipeline.run.PipelineResult` (method result, inputs, evaluation).
        force: replace outputs that exist.
        report: write ``report.html``.
        inverse: write ``inverse.h5`` and ``inverse_warped.nii.gz``.
        record: the items of ``result.json`` that describe the inputs (``fixed``, ``moving``, ``inputs``) and
            the caller's ``metadata``.
        wall_time_s: the time from loading to now, before writing.
        title: the report's title.

    Returns:
        The content of ``result.json`` (NaN written as ``null``).
    """
    from .. import __version__
    from ..io import json_ready, save_image, staged_outputs, write_json_atomic
    from ..transforms.files import save_inverse_outputs, save_transform_outputs

    t0 = time.perf_counter()
    result, inputs = run.result, run.inputs
    with staged_outputs(out, force=force, last="result.json") as stage:
        files = save_transform_outputs(result, stage, force=force)
        save_image(result.warped, stage / "warped.nii.gz", force=force)
        outputs: dict[str, Any] = {"warped": "warped.nii.gz", "transform": "transform.h5", "ants_order": files}
        if run.warped_labels is not None:
            save_image(run.warped_labels, stage / "warped_labels.nii.gz", force=force)
            outputs["warped_labels"] = "warped_labels.nii.gz"
        inverse_residual = None
        if inverse:
            inv = save_inverse_outputs(result, stage, fixed=inputs.fixed, moving_grid=inputs.moving.grid, force=force,
                                       deformable_inverse=getattr(result, "deformable_inverse", None),
                                       inverse_method=getattr(result, "inverse_method", None))
            outputs.update(inv.files)
            inverse_residual = inv.residual_mm
        if report:
            from ..report import write_report

            write_report(stage, fixed=inputs.fixed, moving=inputs.moving, result=result,
                         fixed_labels=inputs.fixed_labels, warped_labels=run.warped_labels,
                         metrics=json_ready(run.evaluation) or None, title=title, force=force)
            outputs["report"] = "report.html"
        summary: dict[str, Any] = {
            "omnireg_version": __version__,
            "fixed": record.get("fixed"),
            "moving": record.get("moving"),
            "inputs": record.get("inputs"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "metric_before": result.metric_before,
            "metric_after": result.metric_after,
            "runtime_s": result.runtime_s,
            "stage_runtimes_s": result.stage_runtimes_s,
            "wall_time_s": wall_time_s + time.perf_counter() - t0,
            "outputs": outputs,
            "antsApplyTransforms": "antsApplyTransforms -d {d} -i MOVING -r FIXED -o OUT {t}".format(
                d=inputs.fixed.ndim, t=" ".join(f"-t {f}" for f in files)
            ),
            "evaluation": run.evaluation,
            "initialization": result.initialization,
            "stages": result.stage_checks,
            "history": [h.__dict__ for h in result.history],
            "config": result.config,
            "method": getattr(result, "method", None) or {"name": "engine"},
        }
        if inverse_residual is not None:
            summary["inverse_residual_mm"] = inverse_residual
        if record.get("metadata"):
            summary["metadata"] = dict(record["metadata"])
        summary = json_ready(summary)
        write_json_atomic(stage / "result.json", summary, force=force)
    return summary
