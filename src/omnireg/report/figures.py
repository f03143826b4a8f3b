"""Rendering of report pictures with Matplotlib's Agg canvas (no display, no pyplot state).

Every picture is a grid of panels (:class:`Panel`): a greyscale picture in ``[0, 1]``, an RGB picture or a
colour-mapped scalar map, with optional line and mask overlays, shown pixel for pixel
(``interpolation="nearest"``) with square pixels, row 0 on top (see :mod:`omnireg.report.views`).
Pictures are encoded as PNG bytes without time stamps or software metadata, so the same input gives
the same bytes.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

try:  # matplotlib is an optional dependency of omnireg, needed only here
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize, to_rgba
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.patheffects import withStroke
    from matplotlib.ticker import MaxNLocator
    from PIL import Image as PILImage
except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
    raise ImportError("omnireg.report needs matplotlib: pip install matplotlib") from exc

from .views import PlaneView

__all__ = [
    "DPI",
    "Contours",
    "MaskOverlay",
    "Panel",
    "render_panels",
    "render_loss_curves",
    "checkerboard",
    "colour_overlay",
    "label_boundaries",
]

logger = logging.getLogger(__name__)

#: Resolution of every PNG (dots per inch).
DPI = 150
_PANEL_IN = 1.55  # panel height in inches (about 230 pixels at 150 dpi)
_FONT = 6.5
_LETTER_COLOUR = "#ffd400"


@dataclass
class Contours:
    """Iso-lines of ``values`` ``(H, W)`` at ``levels`` (NaN or masked values are left out)."""

    values: np.ndarray
    levels: Sequence[float]
    colour: str
    width: float = 0.6


@dataclass
class MaskOverlay:
    """Pixels where ``mask`` ``(H, W)`` is True, painted in ``colour``."""

    mask: np.ndarray
    colour: str


@dataclass
class Panel:
    """One picture of a figure.

    Attributes:
        image: ``(H, W)`` grey values in ``[0, 1]`` (or a scalar map with ``cmap``/``vmin``/``vmax``),
            or ``(H, W, 3)`` RGB in ``[0, 1]``; NaN pixels are drawn in the background colour.
        plane: the display plane (for the orientation letters); ``None`` draws no letters.
        title: text above the panel.
        overlays: :class:`Contours` and :class:`MaskOverlay` drawn on top, in order.
        cmap, vmin, vmax: colour map and range of a scalar ``image``.
    """

    image: np.ndarray
    plane: PlaneView | None = None
    title: str = ""
    overlays: list = field(default_factory=list)
    cmap: str = "gray"
    vmin: float = 0.0
    vmax: float = 1.0


def _new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.02, hspace=0.02)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as an 8-bit RGB PNG (lossless, no alpha, no metadata that changes between runs).

    The Agg canvas renders the figure at :data:`DPI`; Pillow (a Matplotlib dependency) encodes the RGB
    pixels (zlib level 6), about 10 % smaller than Matplotlib's RGBA output.
    """
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="png", compress_level=6, dpi=(DPI, DPI))
    return buf.getvalue()


def _letters(ax, plane: PlaneView) -> None:
    left, right, top, bottom = plane.letters
    kw = dict(
        transform=ax.transAxes,
        fontsize=_FONT - 1,
        color=_LETTER_COLOUR,
        fontweight="bold",
        path_effects=[withStroke(linewidth=1.5, foreground="black")],
    )
    ax.text(0.015, 0.5, left, ha="left", va="center", **kw)
    ax.text(0.985, 0.5, right, ha="right", va="center", **kw)
    ax.text(0.5, 0.985, top, ha="center", va="top", **kw)
    ax.text(0.5, 0.015, bottom, ha="center", va="bottom", **kw)


def _draw(ax, panel: Panel) -> None:
    img = np.asarray(panel.image, dtype=np.float64)
    if img.ndim == 3:
        ax.imshow(np.clip(np.nan_to_num(img, nan=0.0), 0.0, 1.0), interpolation="nearest")
    else:
        ax.imshow(
            np.ma.masked_invalid(img),
            cmap=panel.cmap,
            vmin=panel.vmin,
            vmax=panel.vmax,
            interpolation="nearest",
        )
    for ov in panel.overlays:
        if isinstance(ov, MaskOverlay):
            mask = np.asarray(ov.mask, dtype=bool)
            if mask.any():
                rgba = np.zeros((*mask.shape, 4))
                rgba[mask] = to_rgba(ov.colour)
                ax.imshow(rgba, interpolation="nearest")
        elif isinstance(ov, Contours):
            vals = np.ma.masked_invalid(np.asarray(ov.values, dtype=np.float64))
            if vals.count() < 4 or min(vals.shape) < 2:
                continue
            lo, hi = float(vals.min()), float(vals.max())
            levels = [float(v) for v in ov.levels if lo < v < hi]
            if levels:
                ax.contour(vals, levels=levels, colors=ov.colour, linewidths=ov.width, linestyles="solid")
    if panel.plane is not None:
        _letters(ax, panel.plane)
    h, w = img.shape[:2]
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if panel.title:
        ax.set_title(panel.title, fontsize=_FONT, pad=2)


def render_panels(
    rows: Sequence[Sequence[Panel]],
    *,
    row_labels: Sequence[str] | None = None,
    colorbar: tuple[str, str, float, float] | None = None,
    legend: Sequence[tuple[str, str, str]] | None = None,
) -> bytes:
    """A grid of panels as PNG bytes.

    Args:
        rows: panels per row (every row has the same number of panels).
        row_labels: text left of each row.
        colorbar: ``(label, cmap, vmin, vmax)``: one colour bar for the whole figure.
        legend: ``(label, colour, kind)`` entries, kind ``"line"`` or ``"patch"``, shown below the panels.

    Returns:
        PNG bytes.
    """
    nrows, ncols = len(rows), max(len(r) for r in rows)
    # panel widths follow the aspect ratio of the pictures in the first row
    ratios = [max(0.25, p.image.shape[1] / max(1, p.image.shape[0])) for p in rows[0]]
    ratios += [1.0] * (ncols - len(ratios))
    width = _PANEL_IN * sum(min(r, 3.0) for r in ratios) + (0.9 if colorbar else 0.0) + (0.2 if row_labels else 0.0)
    height = _PANEL_IN * nrows + (0.25 if legend else 0.0)
    fig = _new_figure(width, height)
    axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw={"width_ratios": ratios})
    for r, row in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            if c < len(row):
                _draw(ax, row[c])
            else:
                ax.set_axis_off()
        if row_labels:
            axes[r][0].set_ylabel(row_labels[r], fontsize=_FONT)
    if colorbar is not None:
        label, cmap, vmin, vmax = colorbar
        sm = ScalarMappable(norm=Normalize(vmin=vmin, vmax=vmax), cmap=cmap)
        cb = fig.colorbar(sm, ax=axes.ravel().tolist(), shrink=0.85, fraction=0.05, pad=0.02)
        cb.set_label(label, fontsize=_FONT)
        cb.ax.tick_params(labelsize=_FONT - 0.5)
    if legend:
        handles = [
            Line2D([0], [0], color=colour, lw=1.2) if kind == "line" else Patch(facecolor=colour, edgecolor="none")
            for _, colour, kind in legend
        ]
        fig.legend(
            handles,
            [label for label, _, _ in legend],
            loc="outside lower center",
            ncols=len(legend),
            fontsize=_FONT,
            frameon=False,
        )
    return png_bytes(fig)


def render_loss_curves(history: Sequence) -> bytes:
    """Loss per iteration, one axes per stage and one line per pyramid level, as PNG bytes.

    Args:
        history: :class:`omnireg.optim.LevelHistory` items (``stage``, ``level``, ``shrink``, ``losses``,
            ``transform``, ``metric``); x is the iteration (1-based) within the level.
    """
    stages = sorted({int(h.stage) for h in history})
    if not stages:
        fig = _new_figure(3.2, 1.2)
        ax = fig.subplots()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no optimisation history", ha="center", va="center", fontsize=_FONT + 1)
        return png_bytes(fig)
    ncols = min(len(stages), 4)
    nrows = int(math.ceil(len(stages) / ncols))
    fig = _new_figure(2.5 * ncols, 1.9 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, s in enumerate(stages):
        ax = axes[i // ncols][i % ncols]
        items = [h for h in history if int(h.stage) == s]
        for h in sorted(items, key=lambda h: int(h.level)):
            losses = np.asarray(h.losses, dtype=np.float64)
            if losses.size == 0:
                continue
            x = np.arange(1, losses.size + 1)
            label = f"level {int(h.level) + 1} (shrink {float(h.shrink):g})"
            ax.plot(x, losses, lw=1.0, marker="o" if losses.size < 3 else None, ms=2, label=label)
        ax.set_title(f"stage {s + 1}: {items[0].transform}, {items[0].metric}", fontsize=_FONT + 0.5)
        ax.set_xlabel("iteration", fontsize=_FONT)
        ax.set_ylabel("loss", fontsize=_FONT)
        ax.tick_params(labelsize=_FONT - 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, lw=0.3, alpha=0.5)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=_FONT - 0.5, frameon=False)
    for j in range(len(stages), nrows * ncols):
        axes[j // ncols][j % ncols].set_axis_off()
    return png_bytes(fig)


# ------------------------------------------------------------------------------ picture arithmetic
def checkerboard(a: np.ndarray, b: np.ndarray, *, tiles: int = 8) -> np.ndarray:
    """Alternate square tiles of ``a`` and ``b`` (same shape ``(H, W)``), about ``tiles`` across the longer side."""
    h, w = a.shape
    t = max(2, int(round(max(h, w) / tiles)))
    rr, cc = np.meshgrid(np.arange(h) // t, np.arange(w) // t, indexing="ij")
    return np.where((rr + cc) % 2 == 0, a, b)


def colour_overlay(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """RGB ``(H, W, 3)``: ``fixed`` in magenta (red + blue), ``moving`` in green; aligned structures turn grey."""
    return np.stack([fixed, moving, fixed], axis=-1)


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels of a label picture ``(H, W)`` with a label above 0 and a 4-neighbour of another label."""
    lab = np.asarray(labels)
    pad = np.pad(lab, 1, mode="edge")
    centre = pad[1:-1, 1:-1]
    diff = (
        (pad[:-2, 1:-1] != centre) | (pad[2:, 1:-1] != centre) | (pad[1:-1, :-2] != centre) | (pad[1:-1, 2:] != centre)
    )
    return diff & (centre > 0)


def matplotlib_version() -> str:
    """The Matplotlib version used for rendering."""
    return matplotlib.__version__
