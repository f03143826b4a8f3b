"""The quality-control report of a registration: ``report.html`` and its pictures in ``report_files/``.

The page is self-contained and works offline: inline CSS, no external fonts, scripts or links; every
picture is a PNG referenced by a relative path (``report_files/<name>.png``, names and contents in
:mod:`omnireg.report.pictures`). A tiny inline script marks each ``<img>`` with ``data-loaded="true"`` or
``"false"`` once the page has loaded (a missing picture gets a red outline); it is harmless for readers
and lets tests check the page in a headless browser. The page states the display convention of
:mod:`omnireg.report.views`.

Writing is atomic per file (:func:`omnireg.io.write_bytes_atomic`), the page last; the same inputs give the
same bytes (no time stamps).
"""

from __future__ import annotations

import html
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from .. import __version__
from ..core.enums import as_enum
from ..core.image import Image
from ..io import json_ready, write_bytes_atomic
from ..optim.result import RegistrationResult
from . import figures as F
from . import tables
from .pictures import PICTURE_NAMES, normalise, panel_title, render_pictures, support_mask
from .views import (
    DisplayConvention,
    convention_text,
    display_planes,
    intensity_window,
    region_of_interest_centre,
    sample_plane,
)

__all__ = ["write_report", "write_triplet", "REPORT_NAME", "FILES_DIR", "PICTURE_NAMES"]

logger = logging.getLogger(__name__)

REPORT_NAME = "report.html"
FILES_DIR = "report_files"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:1.5em auto;max-width:1100px;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
p.note{color:#555;font-size:.9em}
table{border-collapse:collapse;margin:.6em 0 1em 0;font-size:.88em}
caption{text-align:left;font-weight:600;padding:.2em 0}
th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left}th{background:#f2f2f2}td.num{text-align:right;
font-variant-numeric:tabular-nums}
figure{margin:.6em 0 1.4em 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.88em;color:#444;margin-top:.3em}
img[data-loaded="false"]{outline:3px solid #c00}
pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:.8em}
"""

_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images;
  for (var i = 0; i < imgs.length; i++) {
    var ok = imgs[i].complete && imgs[i].naturalWidth > 0;
    imgs[i].setAttribute("data-loaded", ok ? "true" : "false");
    imgs[i].setAttribute("data-natural-width", String(imgs[i].naturalWidth));
  }
  document.body.setAttribute("data-images-checked", String(imgs.length));
});
"""


def _check_path(path: Any, name: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


# ------------------------------------------------------------------------------ validation
def _as_intensity(image: Image) -> Image:
    """Intensity images are shown with linear interpolation: integer data (e.g. int16 CT) become float32."""
    return image if image.dtype.is_floating_point else image.to(torch.float32)


def _check_image(value: Any, name: str, ndim: int | None = None, *, optional: bool = False) -> Image | None:
    if value is None and optional:
        return None
    if not isinstance(value, Image):
        raise TypeError(f"{name}: expected an Image{' or None' if optional else ''}, got {type(value).__name__}")
    if value.ndim not in (2, 3):
        raise ValueError(f"{name}: expected a 2D or 3D image, got {value.ndim}D")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}D image like fixed, got {value.ndim}D")
    return value.to("cpu")


# ------------------------------------------------------------------------------ the page
def _page(title: str, body: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + f"\n<p class=\"note\">Written by omnireg {html.escape(__version__)}. This page needs no network access.</p>\n"
        + f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


def _figure(name: str, alt: str, caption: str) -> str:
    src = f"{FILES_DIR}/{name}.png"
    return (
        f"<figure id=\"{name}\"><img src=\"{src}\" alt=\"{html.escape(alt)}\">"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


_HEADINGS = {
    "views": "Images",
    "checkerboard": "Checkerboard",
    "overlay": "Colour overlay",
    "edges": "Edges of the fixed image",
    "labels": "Label boundaries",
    "grid": "Deformation grid",
    "jacobian": "Jacobian determinant",
    "loss": "Loss curves",
}


def write_report(
    out_dir: str | os.PathLike,
    *,
    fixed: Image,
    moving: Image,
    result: RegistrationResult,
    fixed_labels: Image | None = None,
    warped_labels: Image | None = None,
    metrics: Mapping[str, Any] | None = None,
    title: str | None = None,
    convention: DisplayConvention | str = DisplayConvention.RADIOLOGICAL,
    force: bool = False,
) -> Path:
    """Write the quality-control report of a registration: ``out_dir/report.html`` and ``out_dir/report_files/*.png``.

    The pictures (module docstring) cut the images along world-aligned planes through the region of
    interest (centroid of the labels, else of the fixed image's foreground), up being superior or
    anterior; the page states the left-right ``convention``. Moving images are resampled (pull) onto
    the fixed grid: ``before`` with the identity, ``after`` with ``result.transform``
    (``warped(x) = moving(T(x))``).

    Args:
        out_dir: output folder (created if missing).
        fixed: the fixed image (channels are averaged for display).
        moving: the moving image, on its own grid.
        result: the registration result (:func:`omnireg.optim.register`).
        fixed_labels: optional label map of the fixed image (its boundaries are the edges drawn, and its
            centroid is the point the planes pass through).
        warped_labels: optional moving label map already warped onto the fixed grid.
        metrics: optional extra numbers for the page (e.g. Dice, TRE, or the dict of
            :func:`omnireg.evaluation.build_report`); nested mappings become their own tables.
        title: page title (default ``"omnireg registration report"``).
        convention: ``"radiological"`` (default) or ``"neurological"``
            (:class:`~omnireg.report.views.DisplayConvention`).
        force: overwrite an existing report.

    Returns:
        the path of ``report.html``.

    Raises:
        TypeError: on arguments of the wrong type.
        ValueError: on images of different dimensions or an unknown ``convention``.
        FileExistsError: if ``report.html`` or one of its pictures exists and ``force`` is False.
    """
    out = _check_path(out_dir, "out_dir")
    fixed = _check_image(fixed, "fixed")
    moving = _check_image(moving, "moving", fixed.ndim)
    fixed_labels = _check_image(fixed_labels, "fixed_labels", fixed.ndim, optional=True)
    warped_labels = _check_image(warped_labels, "warped_labels", fixed.ndim, optional=True)
    if not isinstance(result, RegistrationResult):
        raise TypeError(f"result: expected a RegistrationResult, got {type(result).__name__}")
    if metrics is not None and not isinstance(metrics, Mapping):
        raise TypeError(f"metrics: expected a mapping of names to values or None, got {type(metrics).__name__}")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title: expected a str or None, got {type(title).__name__}")
    convention = as_enum(convention, DisplayConvention, "convention")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out_dir: {out} exists and is not a folder")
    page_path = out / REPORT_NAME
    files = out / FILES_DIR
    existing = [page_path] + [files / f"{n}.png" for n in PICTURE_NAMES]
    clash = [str(p) for p in existing if p.exists()]
    if clash and not force:
        raise FileExistsError(f"out_dir: {', '.join(clash)} already exist(s); pass force=True to overwrite")

    pics, caps = render_pictures(
        _as_intensity(fixed),
        _as_intensity(moving),
        result,
        fixed_labels=fixed_labels,
        warped_labels=warped_labels,
        convention=convention,
    )
    title = title or "omnireg registration report"
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(convention_text(convention, fixed.ndim))}</p>"]
    inputs = [("fixed", fixed), ("moving", moving), ("fixed labels", fixed_labels), ("warped labels", warped_labels)]
    body.append(tables.image_table([(n, im) for n, im in inputs if im is not None]))
    body.append("<h2>Metrics</h2>")
    body.append(tables.similarity_table(result.metric_before, result.metric_after))
    body.append(tables.stage_table(result.history, result.stage_runtimes_s, result.runtime_s))
    if metrics:
        body += tables.metrics_tables(metrics)
    for name in PICTURE_NAMES:
        if name in pics:
            body.append(f"<h2>{_HEADINGS[name]}</h2>")
            body.append(_figure(name, _HEADINGS[name], caps[name]))
    if result.config:
        cfg = json.dumps(json_ready(result.config), indent=2)
        body.append(f"<details><summary>Configuration</summary><pre>{html.escape(cfg)}</pre></details>")
    text = _page(title, body)

    files.mkdir(parents=True, exist_ok=True)
    for name in PICTURE_NAMES:
        path = files / f"{name}.png"
        if name in pics:
            write_bytes_atomic(path, pics[name], force=True)
        elif path.exists():  # stale picture of an earlier report (force=True)
            path.unlink()
    write_bytes_atomic(page_path, text.encode("utf-8"), force=True)
    total = sum(len(b) for b in pics.values())
    logger.info("wrote %s with %d pictures (%.0f KB)", page_path, len(pics), total / 1024)
    return page_path


def write_triplet(
    path: str | os.PathLike,
    *,
    fixed: Image,
    moving: Image,
    warped: Image,
    plane: str = "axial",
    convention: DisplayConvention | str = DisplayConvention.RADIOLOGICAL,
    force: bool = False,
) -> Path:
    """One PNG with three pictures side by side: fixed, moving (before) and warped (after).

    The plane (``"axial"``, ``"coronal"`` or ``"sagittal"``; the only plane of a 2D image) passes through
    the centre of the fixed image's foreground; ``moving`` and ``warped`` are resampled onto it with the
    identity (``warped`` is normally on the fixed grid already). Intensity windows: 1st-99th percentile,
    the moving window for both moving and warped.

    Args:
        path: output ``.png`` file.
        fixed, moving, warped: the images (same dimension).
        plane: the plane of a 3D image.
        convention: left-right convention (:class:`~omnireg.report.views.DisplayConvention`).
        force: overwrite an existing file.

    Returns:
        the written path.

    Raises:
        TypeError, ValueError: on bad arguments (``path`` must end in ``.png``).
        FileExistsError: if ``path`` exists and ``force`` is False.
    """
    p = _check_path(path, "path")
    if p.suffix.lower() != ".png":
        raise ValueError(f"path: expected a file name ending in .png, got {p.name!r}")
    fixed = _as_intensity(_check_image(fixed, "fixed"))
    moving = _as_intensity(_check_image(moving, "moving", fixed.ndim))
    warped = _as_intensity(_check_image(warped, "warped", fixed.ndim))
    convention = as_enum(convention, DisplayConvention, "convention")
    names = ("axial", "coronal", "sagittal")
    if plane not in names:
        raise ValueError(f"plane: expected one of {names}, got {plane!r}")
    if p.exists() and not force:
        raise FileExistsError(f"path: {p} already exists; pass force=True to overwrite it")
    if not p.parent.is_dir():
        raise FileNotFoundError(f"path: the folder {p.parent} does not exist")
    centre = region_of_interest_centre(fixed)
    view = display_planes(fixed.grid, centre=centre, convention=convention, planes=(plane,))[0]
    sup = support_mask(fixed, view)
    fwin, mwin = intensity_window(fixed), intensity_window(moving)
    row = [
        F.Panel(normalise(sample_plane(fixed, view), fwin) * sup, view, f"fixed {panel_title(view)}".strip()),
        F.Panel(normalise(sample_plane(moving, view), mwin) * sup, view, "moving (before)"),
        F.Panel(normalise(sample_plane(warped, view), mwin) * sup, view, "warped (after)"),
    ]
    write_bytes_atomic(p, F.render_panels([row]), force=True)
    logger.info("wrote %s", p)
    return p
