"""The pictures of the report, each with its caption (what is drawn, in which colours, from which data).

:func:`render_pictures` samples every image once per display plane (:class:`Sampled`) and renders:

* ``views``: fixed, moving (before: identity onto the fixed grid) and warped, per plane;
* ``checkerboard``: fixed vs moving (before) and fixed vs warped (after);
* ``overlay``: fixed in magenta, moving / warped in green, before and after;
* ``edges``: edges of the fixed image (label boundaries when fixed labels are given, else iso-intensity
  contours at Otsu thresholds) over the moving (before) and the warped image (after);
* ``labels`` (with both label maps): fixed (magenta) and warped (green) label boundaries;
* ``grid``: a regular grid pulled back through the deformable part (or the whole transform);
* ``jacobian``: ``det J`` of the whole transform, diverging colours centred at 1, folds marked;
* ``loss``: the loss per iteration, one line per pyramid level, one panel per stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ..core.image import Image
from ..evaluation.jacobian import jacobian_determinant
from ..optim.result import RegistrationResult
from . import figures as F
from .views import (
    DisplayConvention,
    PlaneView,
    display_planes,
    flat_values,
    intensity_window,
    otsu_threshold,
    region_of_interest_centre,
    sample_plane,
)

__all__ = ["PICTURE_NAMES", "Sampled", "render_pictures", "normalise", "support_mask", "panel_title"]

#: Every picture the report can hold, in page order (``labels`` only with both label maps).
PICTURE_NAMES = ("views", "checkerboard", "overlay", "edges", "labels", "grid", "jacobian", "loss")

FIXED_COLOUR = "#ff00ff"
MOVING_COLOUR = "#00e000"
EDGE_COLOUR = "#ffd400"
GRID_COLOUR = "#1a3a9e"
FOLD_COLOUR = "#ffd400"


def normalise(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Map an intensity window ``(lo, hi)`` to ``[0, 1]`` (clipped)."""
    lo, hi = window
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0)


def support_mask(fixed: Image, plane: PlaneView) -> np.ndarray:
    """True on the plane pixels inside the fixed grid's voxel-edge box, ``(H, W)``."""
    pts = plane.grid.points("world", dtype=torch.float64).numpy().reshape(-1, fixed.ndim)
    vox = fixed.grid.transform_points(pts, "world", "voxel")
    upper = np.asarray(fixed.grid.shape, dtype=np.float64) - 0.5
    inside = np.all((vox >= -0.5 - 1e-6) & (vox <= upper + 1e-6), axis=1)
    return inside.reshape(plane.shape)


def panel_title(plane: PlaneView) -> str:
    """``"axial (S = 12.0 mm)"`` for 3D planes, ``""`` for the plane of a 2D image."""
    return f"{plane.name} ({plane.position})" if plane.position else ""


def _nice_step(span: float, count: int) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) giving about ``count`` steps over ``span``."""
    raw = max(span, 1e-9) / count
    mag = 10.0 ** math.floor(math.log10(raw))
    return next((m * mag for m in (1.0, 2.0, 2.5, 5.0) if m * mag >= raw), 10.0 * mag)


@dataclass
class Sampled:
    """Every image sampled on every plane (lists in plane order), intensities windowed to ``[0, 1]``.

    ``fixed``, ``before`` (moving, identity) and ``after`` (moving through ``result.transform``) are zero
    outside the fixed grid (``support``); label pictures are ``None`` when not given.
    """

    planes: list[PlaneView]
    support: list[np.ndarray]
    fixed: list[np.ndarray]
    before: list[np.ndarray]
    after: list[np.ndarray]
    fixed_labels: list[np.ndarray | None]
    warped_labels: list[np.ndarray | None]
    fixed_window: tuple[float, float]
    moving_window: tuple[float, float]


def sample_all(
    fixed: Image,
    moving: Image,
    result: RegistrationResult,
    fixed_labels: Image | None,
    warped_labels: Image | None,
    convention: DisplayConvention,
) -> Sampled:
    """Planes through the region of interest and every image sampled on them (pull)."""
    centre = region_of_interest_centre(fixed, labels=fixed_labels if fixed_labels is not None else warped_labels)
    planes = display_planes(fixed.grid, centre=centre, convention=convention)
    fwin, mwin = intensity_window(fixed), intensity_window(moving)
    s = Sampled(planes, [], [], [], [], [], [], fwin, mwin)
    for p in planes:
        sup = support_mask(fixed, p)
        s.support.append(sup)
        s.fixed.append(normalise(sample_plane(fixed, p), fwin) * sup)
        s.before.append(normalise(sample_plane(moving, p), mwin) * sup)
        s.after.append(normalise(sample_plane(moving, p, transform=result.transform), mwin) * sup)
        s.fixed_labels.append(None if fixed_labels is None else sample_plane(fixed_labels, p) * sup)
        s.warped_labels.append(None if warped_labels is None else sample_plane(warped_labels, p) * sup)
    return s


def _rows(s: Sampled, rows: list[list[np.ndarray]], overlays: list[list] | None = None) -> list[list[F.Panel]]:
    """Panels of picture rows; the first row carries the plane titles."""
    out = []
    for r, pictures in enumerate(rows):
        out.append([
            F.Panel(pic, p, panel_title(p) if r == 0 else "", list(overlays[i]) if overlays else [])
            for i, (pic, p) in enumerate(zip(pictures, s.planes))
        ])
    return out


def _otsu_levels(fixed: Image, window: tuple[float, float]) -> list[float]:
    """One or two Otsu thresholds of the windowed fixed intensities (background | tissue | bright tissue)."""
    vals = normalise(flat_values(fixed), window)
    t1 = otsu_threshold(vals)
    if not math.isfinite(t1):
        return []
    t2 = otsu_threshold(vals[vals > t1])
    return [t1, t2] if math.isfinite(t2) and t2 > t1 + 0.02 else [t1]


def _edges(s: Sampled, fixed: Image) -> tuple[bytes, str]:
    if s.fixed_labels[0] is not None:
        overlays = [[F.MaskOverlay(F.label_boundaries(lab), EDGE_COLOUR)] for lab in s.fixed_labels]
        what = "boundaries of the fixed labels"
    else:
        levels = _otsu_levels(fixed, s.fixed_window)
        overlays = [
            [F.Contours(ndimage.gaussian_filter(f, 0.7, mode="nearest"), levels, EDGE_COLOUR, 0.7)] for f in s.fixed
        ]
        what = "iso-intensity contours of the fixed image at Otsu thresholds, smoothed with sigma 0.7 pixel"
    png = F.render_panels(
        _rows(s, [s.before, s.after], overlays),
        row_labels=["moving (before)", "warped (after)"],
        legend=[("fixed edges", EDGE_COLOUR, "line")],
    )
    return png, f"Edges of the fixed image ({what}) in yellow over the moving (before) and warped (after) image."


def _labels(s: Sampled) -> tuple[bytes, str]:
    overlays = [
        [F.MaskOverlay(F.label_boundaries(fl), FIXED_COLOUR), F.MaskOverlay(F.label_boundaries(wl), MOVING_COLOUR)]
        for fl, wl in zip(s.fixed_labels, s.warped_labels)
    ]
    png = F.render_panels(
        _rows(s, [s.fixed], overlays),
        row_labels=["fixed image"],
        legend=[("fixed labels", FIXED_COLOUR, "patch"), ("warped labels", MOVING_COLOUR, "patch")],
    )
    return png, "Label boundaries over the fixed image: fixed labels in magenta, warped moving labels in green."


def _grid_lines(transform, plane: PlaneView, support: np.ndarray, step: float) -> list[F.Contours]:
    """Contours of the in-plane components of ``T(x)`` at multiples of ``step`` mm (pulled-back grid)."""
    with torch.no_grad():
        y = transform.transform_grid(plane.grid, dtype=torch.float64)
    a, b = plane.inplane(y.detach().cpu().numpy().reshape(*plane.shape, -1))
    out = []
    for vals in (np.where(support, a, np.nan), np.where(support, b, np.nan)):
        finite = vals[np.isfinite(vals)]
        if finite.size:
            levels = np.arange(math.floor(finite.min() / step), math.ceil(finite.max() / step) + 1) * step
            out.append(F.Contours(vals, levels.tolist(), GRID_COLOUR, 0.6))
    return out


def _grid(s: Sampled, fixed: Image, result: RegistrationResult) -> tuple[bytes, str]:
    transform = result.deformable if result.deformable is not None else result.transform
    part = "deformable part" if result.deformable is not None else "whole (linear) transform"
    extent = max(p.pixel_mm * max(p.shape) for p in s.planes)
    step = max(_nice_step(extent, 14), 2.0 * min(p.pixel_mm for p in s.planes))
    overlays = [_grid_lines(transform, p, sup, step) for p, sup in zip(s.planes, s.support)]
    png = F.render_panels(_rows(s, [[0.55 + 0.45 * w for w in s.after]], overlays), row_labels=[f"grid ({part})"])
    largest = ""
    if result.deformable is not None:
        with torch.no_grad():
            u = result.deformable.displacement(fixed.grid, dtype=torch.float64)
        largest = f" Largest displacement of the deformable part: {float(u.norm(dim=1).max()):.3g} mm."
    caption = (
        f"Deformation grid of the {part}: the lines join the fixed-space points x where an in-plane component "
        f"of T(x) is a multiple of {step:.3g} mm, i.e. a regular grid pulled back through T, drawn over the warped "
        "image (identity: straight lines; lines crossing: folding). Out-of-plane motion is not shown." + largest
    )
    return png, caption


def _jacobian(s: Sampled, fixed: Image, result: RegistrationResult) -> tuple[bytes, str]:
    det = jacobian_determinant(result.transform, fixed.grid)
    det_img = Image(torch.as_tensor(det, dtype=torch.float32)[None], fixed.grid)
    finite = det[np.isfinite(det)]
    spread = float(np.percentile(np.abs(finite - 1.0), 99.5)) if finite.size else 0.0
    radius = max(0.1, min(2.0, spread))  # colour range 1 +- radius, centred at 1
    row = []
    for p, sup in zip(s.planes, s.support):
        values = np.where(sup, sample_plane(det_img, p), np.nan)
        folds = (sample_plane(det_img, p, interp="nearest") <= 0) & sup
        row.append(F.Panel(values, p, panel_title(p), [F.MaskOverlay(folds, FOLD_COLOUR)], "RdBu_r",
                           1 - radius, 1 + radius))
    png = F.render_panels(
        [row],
        row_labels=["det J"],
        colorbar=("det J", "RdBu_r", 1 - radius, 1 + radius),
        legend=[("folding (det J <= 0)", FOLD_COLOUR, "patch")],
    )
    if not finite.size:
        return png, "Jacobian determinant: not available."
    folded = int((finite <= 0).sum())
    caption = (
        "Jacobian determinant of the whole transform (local volume ratio moving / fixed; central differences as "
        "ITK, on the fixed grid). Blue: compression, red: expansion, white: 1. Range over the fixed grid "
        f"{float(finite.min()):.4g} to {float(finite.max()):.4g}; folding (det J <= 0, yellow): "
        f"{folded} voxels ({100.0 * folded / finite.size:.3g} %)."
    )
    return png, caption


def render_pictures(
    fixed: Image,
    moving: Image,
    result: RegistrationResult,
    *,
    fixed_labels: Image | None,
    warped_labels: Image | None,
    convention: DisplayConvention,
) -> tuple[dict[str, bytes], dict[str, str]]:
    """Render every picture of the report (module docstring).

    Args:
        fixed, moving: float intensity images (channels are averaged).
        result: the registration result.
        fixed_labels, warped_labels: optional label maps (``warped_labels`` on the fixed grid).
        convention: left-right display convention.

    Returns:
        PNG bytes and a caption per picture name (names from :data:`PICTURE_NAMES`).
    """
    s = sample_all(fixed, moving, result, fixed_labels, warped_labels, convention)
    pics: dict[str, bytes] = {}
    caps: dict[str, str] = {}
    fwin, mwin = s.fixed_window, s.moving_window
    pics["views"] = F.render_panels(
        _rows(s, [s.fixed, s.before, s.after]), row_labels=["fixed", "moving (before)", "warped (after)"]
    )
    caps["views"] = (
        "Fixed image, moving image resampled onto the fixed grid with the identity (before), and the moving "
        f"image warped by the registration (after). Windows: 1st-99th percentile (fixed {fwin[0]:.4g} to "
        f"{fwin[1]:.4g}; moving and warped {mwin[0]:.4g} to {mwin[1]:.4g})."
    )
    boards = [[F.checkerboard(f, m) for f, m in zip(s.fixed, moved)] for moved in (s.before, s.after)]
    pics["checkerboard"] = F.render_panels(
        _rows(s, boards), row_labels=["fixed | moving (before)", "fixed | warped (after)"]
    )
    caps["checkerboard"] = "Checkerboard of alternating tiles: fixed vs moving before, fixed vs warped after."
    colours = [[F.colour_overlay(f, m) for f, m in zip(s.fixed, moved)] for moved in (s.before, s.after)]
    pics["overlay"] = F.render_panels(
        _rows(s, colours),
        row_labels=["before", "after"],
        legend=[("fixed", FIXED_COLOUR, "patch"), ("moving / warped", MOVING_COLOUR, "patch")],
    )
    caps["overlay"] = (
        "Colour overlay: fixed in magenta, moving (before) or warped (after) in green; where both agree the "
        "picture is grey, misalignment shows as magenta and green fringes."
    )
    pics["edges"], caps["edges"] = _edges(s, fixed)
    if fixed_labels is not None and warped_labels is not None:
        pics["labels"], caps["labels"] = _labels(s)
    pics["grid"], caps["grid"] = _grid(s, fixed, result)
    pics["jacobian"], caps["jacobian"] = _jacobian(s, fixed, result)
    pics["loss"] = F.render_loss_curves(result.history)
    caps["loss"] = (
        "Loss per iteration (lower is better), one line per pyramid level (coarse to fine), one panel per stage."
    )
    return pics, caps
