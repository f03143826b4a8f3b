"""Evaluation reports: one nested dict, printed as plain-text tables and written as JSON or CSV.

The report (:func:`build_report`) has up to four sections::

    {
      "labels":   {"<id>": {"name", "dice", "iou", "hd95_mm", "hd_mm", "fixed_volume_mm3", "warped_volume_mm3"}},
      "labels_mean": {"dice", "iou", "hd95_mm", "hd_mm", "labels"},
      "landmarks": {"<set>": {"tre_mean_mm", "tre_median_mm", "tre_max_mm", "tre_std_mm", "count",
                              "initial_tre_mean_mm", ..., "tre_per_point_mm": [...]}},
      "jacobian": {"jacobian_nonpositive_percent", "jacobian_log_std", "jacobian_min", ...},
      "inverse_consistency": {"inverse_consistency_mean_mm", "inverse_consistency_max_mm"},
    }

JSON writes NaN as ``null``. CSV is long ("tidy") format with the columns
``section,key,name,metric,value``: one row per number (per-point TRE lists are left out), e.g.
``labels,3,cerebral white matter,dice,0.91``; it loads with ``pandas.read_csv`` and pivots easily.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Iterable, Mapping

from ..io import json_ready, write_text_atomic
from .jacobian import InverseConsistency, JacobianStats
from .overlap import LabelMetrics, summarize_labels
from .tre import TREResult

__all__ = ["build_report", "format_report", "write_report"]

logger = logging.getLogger(__name__)

_LABEL_COLUMNS = ("dice", "iou", "hd95_mm", "hd_mm")


def build_report(
    *,
    labels: Iterable[LabelMetrics] | None = None,
    landmarks: Mapping[str, TREResult] | None = None,
    initial_landmarks: Mapping[str, TREResult] | None = None,
    jacobian: JacobianStats | None = None,
    inverse_consistency: InverseConsistency | None = None,
    inputs: Mapping[str, object] | None = None,
) -> dict:
    """Assemble the report dict (module docstring) from the metric results.

    Args:
        labels: per-label metrics from :func:`~omnireg.evaluation.overlap.label_metrics`.
        landmarks: TRE per landmark set name, after registration.
        initial_landmarks: TRE per set name with the identity (before registration); its statistics
            are added with the prefix ``initial_tre_``.
        jacobian: from :func:`~omnireg.evaluation.jacobian.jacobian_statistics`.
        inverse_consistency: from :func:`~omnireg.evaluation.jacobian.inverse_consistency_error`.
        inputs: free-form description of the inputs (file names), stored under ``"inputs"``.

    Returns:
        A JSON-ready dict (NaN values stay floats until written).
    """
    report: dict = {}
    if inputs:
        report["inputs"] = {k: v for k, v in inputs.items()}
    if labels is not None:
        items = list(labels)
        report["labels"] = {
            str(m.label): {k: v for k, v in m.to_dict().items() if k != "label"} for m in items
        }
        report["labels_mean"] = summarize_labels(items)
    if landmarks:
        sets = {}
        for name, res in landmarks.items():
            entry = res.to_dict()
            if initial_landmarks and name in initial_landmarks:
                init = initial_landmarks[name].to_dict(prefix="initial_tre_")
                init.pop("count")
                entry.update(init)
            entry["tre_per_point_mm"] = [float(v) for v in res.distances_mm]
            sets[name] = entry
        report["landmarks"] = sets
    if jacobian is not None:
        report["jacobian"] = jacobian.to_dict()
    if inverse_consistency is not None:
        report["inverse_consistency"] = inverse_consistency.to_dict()
    return report


def _fmt(value: object, width: int = 0) -> str:
    if isinstance(value, float):
        text = "n/a" if math.isnan(value) else f"{value:.4g}"
    else:
        text = str(value)
    return f"{text:>{width}}" if width else text


def _table(header: list[str], rows: list[list[object]]) -> str:
    cells = [header] + [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_report(report: Mapping) -> str:
    """Plain-text tables of a report (labels, then landmarks, Jacobian and inverse consistency)."""
    blocks = []
    if "labels" in report:
        rows = [
            [f"{key} {entry['name']}"] + [entry[c] for c in _LABEL_COLUMNS]
            for key, entry in report["labels"].items()
        ]
        mean = report.get("labels_mean", {})
        if rows:
            rows.append([f"mean ({mean.get('labels', len(rows))} labels)"] + [mean.get(c, float("nan")) for c in _LABEL_COLUMNS])
        blocks.append(_table(["label", *_LABEL_COLUMNS], rows))
    if "landmarks" in report:
        cols = ["count", "tre_mean_mm", "tre_median_mm", "tre_std_mm", "tre_max_mm"]
        has_init = any("initial_tre_mean_mm" in e for e in report["landmarks"].values())
        if has_init:
            cols += ["initial_tre_mean_mm"]
        rows = [[name] + [e.get(c, float("nan")) for c in cols] for name, e in report["landmarks"].items()]
        blocks.append(_table(["landmarks", *cols], rows))
    for section in ("jacobian", "inverse_consistency"):
        if section in report:
            rows = [[k, v] for k, v in report[section].items()]
            blocks.append(_table([section, "value"], rows))
    return "\n\n".join(blocks)


def _csv_rows(report: Mapping) -> list[list[object]]:
    rows: list[list[object]] = []
    for key, entry in report.get("labels", {}).items():
        for metric, value in entry.items():
            if metric != "name":
                rows.append(["labels", key, entry["name"], metric, value])
    for metric, value in report.get("labels_mean", {}).items():
        rows.append(["labels_mean", "", "", metric, value])
    for name, entry in report.get("landmarks", {}).items():
        for metric, value in entry.items():
            if not isinstance(value, list):
                rows.append(["landmarks", name, name, metric, value])
    for section in ("jacobian", "inverse_consistency"):
        for metric, value in report.get(section, {}).items():
            rows.append([section, "", "", metric, value])
    return rows


def write_report(report: Mapping, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write a report as JSON (``.json``) or long-format CSV (``.csv``), chosen by the extension.

    Args:
        report: from :func:`build_report`.
        path: output file ending in ``.json`` or ``.csv``.
        force: overwrite an existing file.

    Returns:
        The written path.

    Raises:
        ValueError: on another extension.
        FileExistsError: if ``path`` exists and ``force`` is False.
        FileNotFoundError: if the folder of ``path`` does not exist.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in (".json", ".csv"):
        raise ValueError(f"path: expected a file name ending in .json or .csv, got {p.name!r}")
    if p.exists() and not force:
        raise FileExistsError(f"{p} already exists; pass force=True to overwrite it")
    if not p.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {p.parent}")
    if ext == ".json":
        text = json.dumps(json_ready(report), indent=2, allow_nan=False) + "\n"
    else:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["section", "key", "name", "metric", "value"])
        for row in _csv_rows(report):
            value = json_ready(row[-1])
            writer.writerow([*row[:-1], "" if value is None else repr(value) if isinstance(value, float) else value])
        text = buf.getvalue()
    write_text_atomic(p, text, force=force)
    logger.info("wrote %s", p)
    return p
