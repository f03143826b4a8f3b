"""The summary of a batch: one row per pair, written as ``summary.csv`` and ``summary.json`` and formatted as a table.

Columns of a row (:data:`SUMMARY_COLUMNS`):

* ``id``, ``status`` (:class:`PairStatus`: ``done`` in this run, ``skipped`` because a complete result was
  already there, ``failed`` (the registration raised: a corrupt image, an invalid label map ...),
  ``invalid`` (the row of ``PAIRS.csv`` cannot be used: a missing file, an empty or one-sided cell; the pair
  was not run and nothing was written for it), ``pending`` while the batch still runs);
* ``metric``, ``metric_before``, ``metric_after``: the last stage's similarity (higher is better) at the start
  and at the end, at full resolution;
* ``dice_mean_before``, ``dice_mean``: unweighted mean Dice over labels (fixed labels against the moving labels
  resampled with the identity / warped), where both label maps are given;
* ``tre_mean_before_mm``, ``tre_mean_mm``: mean landmark TRE in mm before / after, where landmarks are given;
* ``runtime_s``: the pair's wall time (loading, registration, writing, evaluation; until the error if failed);
* ``error_type``, ``error``: the exception's type name and the first line of its message, for failed pairs;
  for invalid pairs, ``error`` says why (the CSV line, row and column) and ``error_type`` is empty;
* ``fixed``, ``moving``, ``output``: the input images and the pair's output folder.

Missing values are empty cells in CSV and ``null`` in JSON.
"""

from __future__ import annotations

import csv
import io
import math
import os
from enum import Enum
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..io import write_json_atomic, write_text_atomic

__all__ = ["PairStatus", "SUMMARY_COLUMNS", "row_from_result", "row_from_error", "row_from_invalid", "count_statuses",
           "write_summary", "format_summary"]


class PairStatus(str, Enum):
    """State of a pair in a batch summary."""

    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"
    INVALID = "invalid"
    PENDING = "pending"


SUMMARY_COLUMNS = (
    "id", "status", "metric", "metric_before", "metric_after", "dice_mean_before", "dice_mean",
    "tre_mean_before_mm", "tre_mean_mm", "runtime_s", "error_type", "error", "fixed", "moving", "output",
)


def _num(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _empty_row(pair_id: str, status: PairStatus, fixed: object, moving: object, output: object) -> dict:
    row: dict[str, Any] = {c: None for c in SUMMARY_COLUMNS}
    row.update(id=pair_id, status=PairStatus(status).value, fixed=str(fixed), moving=str(moving), output=str(output))
    return row


def row_from_result(pair_id: str, status: PairStatus | str, result: Mapping, output: object) -> dict:
    """A summary row from a pair's ``result.json`` content (see the module docstring for the columns)."""
    row = _empty_row(pair_id, status, result.get("fixed"), result.get("moving"), output)
    after = result.get("metric_after") or {}
    before = result.get("metric_before") or {}
    if after:
        name = next(iter(after))
        row.update(metric=name, metric_after=_num(after.get(name)), metric_before=_num(before.get(name)))
    ev = result.get("evaluation") or {}
    labels = ev.get("labels") or {}
    row.update(dice_mean=_num(labels.get("dice_mean")), dice_mean_before=_num(labels.get("dice_mean_before")))
    lm = ev.get("landmarks") or {}
    row.update(tre_mean_mm=_num((lm.get("after") or {}).get("tre_mean_mm")),
               tre_mean_before_mm=_num((lm.get("before") or {}).get("tre_mean_mm")))
    row["runtime_s"] = _num(result.get("wall_time_s", result.get("runtime_s")))
    return row


def row_from_error(pair_id: str, error_type: str, message: str, runtime_s: float | None, *,
                   fixed: object, moving: object, output: object) -> dict:
    """A summary row of a failed pair: the exception's type name and the first line of its message."""
    row = _empty_row(pair_id, PairStatus.FAILED, fixed, moving, output)
    row.update(error_type=error_type, error=message, runtime_s=_num(runtime_s))
    return row


def row_from_invalid(pair_id: str, message: str, *, fixed: object, moving: object, output: object) -> dict:
    """A summary row of a pair whose CSV row cannot be used (it was not run): ``message`` says why."""
    row = _empty_row(pair_id, PairStatus.INVALID, "" if fixed is None else fixed, "" if moving is None else moving, output)
    row.update(error=message)
    return row


def count_statuses(rows: Sequence[Mapping]) -> dict[str, int]:
    """Number of rows per status, every :class:`PairStatus` listed (zeros included)."""
    counts = {s.value: 0 for s in PairStatus}
    for r in rows:
        counts[str(r["status"])] = counts.get(str(r["status"]), 0) + 1
    return counts


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return str(value)


def write_summary(out_dir: str | os.PathLike, rows: Sequence[Mapping], *, header: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``summary.csv`` (the rows) and ``summary.json`` (``header`` items, counts and rows), each atomically.

    The summary belongs to the batch and is rewritten as the batch progresses, so existing summary files
    are replaced.

    Returns:
        The paths of ``summary.csv`` and ``summary.json``.
    """
    out = Path(out_dir)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for r in rows:
        writer.writerow([_cell(r.get(c)) for c in SUMMARY_COLUMNS])
    csv_path = write_text_atomic(out / "summary.csv", buf.getvalue(), force=True)
    data = {**dict(header), "counts": count_statuses(rows), "columns": list(SUMMARY_COLUMNS),
            "pairs": [{c: r.get(c) for c in SUMMARY_COLUMNS} for r in rows]}
    json_path = write_json_atomic(out / "summary.json", data, force=True)
    return csv_path, json_path


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


def format_summary(rows: Sequence[Mapping]) -> str:
    """The rows as a plain-text table (id, status, metric before -> after, Dice, TRE, runtime) and a count line.

    Failed rows show the error type and message in place of the metrics, invalid rows the reason.

    Example:
        >>> print(format_summary([{"id": "p1", "status": "failed", "error_type": "ValueError", "error": "bad"}]))
        id  status  metric  before  after  dice before  dice  TRE before mm  TRE mm  runtime s
        p1  failed  ValueError: bad
        0 done, 0 skipped, 1 failed
    """
    head = ["id", "status", "metric", "before", "after", "dice before", "dice", "TRE before mm", "TRE mm", "runtime s"]
    table: list[list[str]] = []
    for r in rows:
        if r.get("status") == PairStatus.FAILED.value:
            table.append([str(r.get("id")), "failed", f"{r.get('error_type')}: {r.get('error')}"])
            continue
        if r.get("status") == PairStatus.INVALID.value:
            table.append([str(r.get("id")), "invalid", str(r.get("error"))])
            continue
        table.append([
            str(r.get("id")), str(r.get("status")), _fmt(r.get("metric")), _fmt(r.get("metric_before")),
            _fmt(r.get("metric_after")), _fmt(r.get("dice_mean_before"), 3), _fmt(r.get("dice_mean"), 3),
            _fmt(r.get("tre_mean_before_mm"), 3), _fmt(r.get("tre_mean_mm"), 3), _fmt(r.get("runtime_s"), 3),
        ])
    widths = [len(h) for h in head]
    for line in table:
        for i, cell in enumerate(line[: len(head)]):
            if not (len(line) == 3 and i == 2):  # a failed row's message spans the remaining columns
                widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    for line in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    counts = count_statuses(rows)
    tail = f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed"
    for status in ("invalid", "pending"):
        if counts[status]:
            tail += f", {counts[status]} {status}"
    lines.append(tail)
    return "\n".join(lines)
