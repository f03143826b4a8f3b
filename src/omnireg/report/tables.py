"""HTML tables of a report: similarity before/after, stages and runtimes, extra metrics, image grids.

Every text is HTML-escaped; numbers are formatted with a fixed number of significant digits, so the
same input always gives the same page.
"""

from __future__ import annotations

import html
import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..core.image import Image

__all__ = ["fmt", "html_table", "similarity_table", "stage_table", "metrics_tables", "image_table"]

_MAX_LIST = 12  # longer lists (e.g. per-point TRE) are summarised by their length


def fmt(value: Any) -> str:
    """A value as (unescaped) text: floats with 4 significant digits, NaN as ``n/a``."""
    if hasattr(value, "item") and callable(value.item) and np.ndim(value) == 0:
        value = value.item()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        if len(value) > _MAX_LIST:
            return f"{len(value)} values"
        return ", ".join(fmt(v) for v in value)
    if value is None:
        return "-"
    return str(value)


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, caption: str | None = None) -> str:
    """An HTML table; cells are formatted with :func:`fmt` and escaped, numeric cells right-aligned."""
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        cells = []
        for v in row:
            num = isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
            cls = ' class="num"' if num else ""
            cells.append(f"<td{cls}>{html.escape(fmt(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def similarity_table(metric_before: Mapping[str, float], metric_after: Mapping[str, float]) -> str:
    """Similarity of the last stage before (identity) and after registration, and the change."""
    names = list(metric_before) + [n for n in metric_after if n not in metric_before]
    rows = []
    for n in names:
        b = float(metric_before.get(n, float("nan")))
        a = float(metric_after.get(n, float("nan")))
        rows.append([n, b, a, a - b])
    return html_table(
        ["similarity (higher is better)", "before (identity)", "after", "change"],
        rows,
        caption="Similarity of the last stage at full resolution",
    )


def stage_table(history: Sequence, stage_runtimes_s: Sequence[float], runtime_s: float) -> str:
    """One row per stage: transform, metric, levels, iterations, first and last loss, runtime."""
    stages = sorted({int(h.stage) for h in history} | set(range(len(stage_runtimes_s))))
    rows = []
    for s in stages:
        items = sorted((h for h in history if int(h.stage) == s), key=lambda h: int(h.level))
        losses = [float(v) for h in items for v in h.losses]
        rt = float(stage_runtimes_s[s]) if s < len(stage_runtimes_s) else float("nan")
        rows.append(
            [
                s + 1,
                items[0].transform if items else "-",
                items[0].metric if items else "-",
                len(items),
                len(losses),
                losses[0] if losses else float("nan"),
                losses[-1] if losses else float("nan"),
                rt,
            ]
        )
    rows.append(["total", "", "", "", "", "", "", float(runtime_s)])
    return html_table(
        ["stage", "transform", "metric", "levels", "iterations", "first loss", "last loss", "runtime (s)"],
        rows,
        caption="Stages, losses and runtimes",
    )


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool, np.number)) or (isinstance(v, (list, tuple)))


def metrics_tables(metrics: Mapping[str, Any]) -> list[str]:
    """HTML tables of a user metrics mapping.

    Scalars (and short lists) at the top level form one ``metric | value`` table. A mapping of scalars
    gives its own ``metric | value`` table titled by its key (e.g. ``{"jacobian": {...}}``); a mapping
    of mappings of scalars gives a wide table, one row per inner key (e.g. the per-label section of
    :func:`omnireg.evaluation.build_report`). Deeper values are shown as text.
    """
    tables = []
    flat = [[k, v] for k, v in metrics.items() if _is_scalar(v)]
    if flat:
        tables.append(html_table(["metric", "value"], flat, caption="Additional metrics"))
    for key, value in metrics.items():
        if _is_scalar(value) or not isinstance(value, Mapping):
            if not _is_scalar(value):
                tables.append(html_table(["metric", "value"], [[key, str(value)]], caption=str(key)))
            continue
        if value and all(isinstance(v, Mapping) for v in value.values()):
            cols: list[str] = []
            for v in value.values():
                cols += [c for c in v if c not in cols]
            rows = [[k] + [v.get(c) if _is_scalar(v.get(c)) else str(v.get(c)) for c in cols] for k, v in value.items()]
            tables.append(html_table([str(key)] + cols, rows, caption=str(key)))
        else:
            rows = [[k, v if _is_scalar(v) else str(v)] for k, v in value.items()]
            tables.append(html_table(["metric", "value"], rows, caption=str(key)))
    return tables


def image_table(images: Sequence[tuple[str, Image]]) -> str:
    """Grid of each named image: shape, spacing (mm), origin (RAS mm), axis orientation, channels, dtype."""
    rows = []
    for name, img in images:
        g = img.grid
        rows.append(
            [
                name,
                " x ".join(str(s) for s in g.shape),
                " x ".join(f"{s:.4g}" for s in g.spacing),
                ", ".join(f"{o:.1f}" for o in g.origin),
                g.orientation_code(),
                img.channels,
                str(img.dtype).replace("torch.", ""),
            ]
        )
    return html_table(
        ["image", "shape", "spacing (mm)", "origin (RAS mm)", "axes towards", "channels", "dtype"],
        rows,
        caption="Inputs",
    )
