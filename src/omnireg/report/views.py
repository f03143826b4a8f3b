"""Display planes in world space: where a picture is cut, which way is up, and how it is sampled.

Convention (stated on every report page):

* A picture is never a raw array slice. Each plane is a world-aligned grid through a point of interest,
  sampled (pull, :func:`omnireg.transforms.resample`) so that **up is superior** (coronal, sagittal)
  or **anterior** (axial), whatever the direction matrix of the stored image.
* Left-right follows :class:`DisplayConvention`. The default, ``RADIOLOGICAL``, shows the patient's
  right on the left of the picture in axial and coronal planes (viewed from the feet / from the
  front), as 3D Slicer, ITK-SNAP and DICOM viewers do; ``NEUROLOGICAL`` shows the patient's right on
  the right (viewed from above / from behind). Sagittal planes show anterior on the left in both.
* 2D images (world axes R, A) are shown like an axial plane: ``+A`` up, ``+R`` to the left
  (radiological) or to the right (neurological). With the radiological default a 2D raster file
  (PNG, JPEG), which :func:`omnireg.io.load_image` places in ITK's LPS frame, appears as in any
  picture viewer: its first column on the left, its first row on top.

The plane grids cover the bounding box of the reference (fixed) grid, with square pixels of
``max(min(spacing), largest extent / max_pixels)`` mm. Tensor axis 0 of a plane grid runs from the top
row down, axis 1 from the left column to the right (3D planes have a third axis of size 1 along the
plane normal), so a sampled plane ``(C, H, W[, 1])`` is shown as is, row 0 on top.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch

from ..core.enums import as_enum
from ..core.grid import Grid
from ..core.image import Image
from ..transforms import Transform, resample

__all__ = [
    "DisplayConvention",
    "PlaneView",
    "display_planes",
    "region_of_interest_centre",
    "intensity_window",
    "flat_values",
    "otsu_threshold",
    "sample_plane",
]

logger = logging.getLogger(__name__)

_SAMPLE_LIMIT = 1 << 21  # voxels used for percentiles and thresholds (a regular stride beyond that)
_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))


class DisplayConvention(str, Enum):
    """Left-right convention of axial and coronal pictures (and of 2D images).

    ``RADIOLOGICAL``: the patient's right on the left of the picture (viewed from the feet or the front).
    ``NEUROLOGICAL``: the patient's right on the right of the picture (viewed from above or behind).
    """

    RADIOLOGICAL = "radiological"
    NEUROLOGICAL = "neurological"


def convention_text(convention: DisplayConvention, ndim: int) -> str:
    """One sentence stating the display convention (for captions and the page)."""
    side = "left" if convention is DisplayConvention.RADIOLOGICAL else "right"
    if ndim == 2:
        return (
            f"{convention.value.capitalize()} convention: world axis +A (anterior) is up, the patient's "
            f"right (+R) is on the {side} of each picture."
        )
    return (
        f"{convention.value.capitalize()} convention: the patient's right is on the {side} of axial and "
        "coronal pictures; up is anterior (axial) or superior (coronal, sagittal); sagittal pictures show "
        "anterior on the left. Letters at the picture edges name the world direction (RAS)."
    )


@dataclass(frozen=True, eq=False)
class PlaneView:
    """A world-aligned display plane.

    Attributes:
        name: ``"axial"``, ``"coronal"``, ``"sagittal"`` (3D) or ``"plane"`` (2D).
        grid: the sampling grid: 2D ``(H, W)`` for 2D images, 3D ``(H, W, 1)`` for 3D images; tensor
            axis 0 runs down the rows, axis 1 along the columns (module docstring).
        right, up: unit world (RAS) vectors towards the picture's right and top, shape ``(D,)``.
        centre: world (RAS mm) position of the plane's centre pixel, shape ``(D,)``.
        pixel_mm: pixel size in mm (square pixels).
        letters: world direction letters at the ``(left, right, top, bottom)`` edges.
        position: e.g. ``"S = 12.0 mm"``: the plane's offset along its normal (``""`` in 2D).
    """

    name: str
    grid: Grid
    right: np.ndarray
    up: np.ndarray
    centre: np.ndarray
    pixel_mm: float
    letters: tuple[str, str, str, str]
    position: str

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)``: rows and columns of the picture."""
        return int(self.grid.shape[0]), int(self.grid.shape[1])

    def inplane(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates (mm) along ``right`` and ``up`` of world points ``(..., D)`` relative to :attr:`centre`."""
        rel = np.asarray(points, dtype=np.float64) - self.centre
        return rel @ self.right, rel @ self.up


def _letter(vector: np.ndarray) -> str:
    a = int(np.argmax(np.abs(vector)))
    return _LETTERS[a][1 if vector[a] > 0 else 0]


def _box_corners(grid: Grid) -> np.ndarray:
    """World positions of the ``2^D`` corners of the grid's voxel-edge box, ``(2^D, D)``."""
    d = grid.ndim
    corners = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in grid.shape], indexing="ij")).reshape(d, -1).T
    return grid.transform_points(corners, "voxel", "world")


def _plane_axes(ndim: int, convention: DisplayConvention) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, right, up)`` world vectors of the standard planes."""
    lr = -1.0 if convention is DisplayConvention.RADIOLOGICAL else 1.0  # world R component of screen-right
    if ndim == 2:
        return [("plane", np.array([lr, 0.0]), np.array([0.0, 1.0]))]
    return [
        ("axial", np.array([lr, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])),
        ("coronal", np.array([lr, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])),
        ("sagittal", np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0])),
    ]


def display_planes(
    grid: Grid,
    *,
    centre: np.ndarray | None = None,
    convention: DisplayConvention | str = DisplayConvention.RADIOLOGICAL,
    max_pixels: int = 192,
    planes: tuple[str, ...] | None = None,
) -> list[PlaneView]:
    """The display planes of a reference grid: axial, coronal and sagittal (3D) or one plane (2D).

    Each plane passes through ``centre`` and covers the projection of the grid's bounding box.

    Args:
        grid: the reference (fixed) grid.
        centre: world (RAS mm) point the 3D planes pass through, shape ``(D,)``; default the centre of
            the grid. Ignored in-plane (the picture is centred on the bounding box).
        convention: left-right convention (:class:`DisplayConvention`).
        max_pixels: largest picture side in pixels (the pixel size grows to keep within it).
        planes: a subset of ``("axial", "coronal", "sagittal")`` for 3D grids (default all three).

    Returns:
        the planes, in the order axial, coronal, sagittal.

    Raises:
        TypeError: if ``grid`` is not a Grid.
        ValueError: on a 1D grid, a bad ``centre``, ``max_pixels`` below 8 or an unknown plane name.

    Example:
        >>> axial, coronal, sagittal = display_planes(Grid((4, 5, 6)))
        >>> axial.shape, axial.letters  # rows along A (5 mm), columns along R (4 mm); radiological
        ((5, 4), ('R', 'L', 'A', 'P'))
        >>> sagittal.letters
        ('A', 'P', 'S', 'I')
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"grid: expected a Grid, got {type(grid).__name__}")
    d = grid.ndim
    if d not in (2, 3):
        raise ValueError(f"grid: expected a 2D or 3D grid, got {d}D")
    convention = as_enum(convention, DisplayConvention, "convention")
    if not isinstance(max_pixels, int) or max_pixels < 8:
        raise ValueError(f"max_pixels: expected an int >= 8, got {max_pixels!r}")
    corners = _box_corners(grid)
    box_centre = 0.5 * (corners.min(axis=0) + corners.max(axis=0))
    if centre is None:
        centre = box_centre
    centre = np.asarray(centre, dtype=np.float64).reshape(-1)
    if centre.shape != (d,) or not np.all(np.isfinite(centre)):
        raise ValueError(f"centre: expected {d} finite world coordinates, got {centre.tolist()}")
    axes = _plane_axes(d, convention)
    if planes is not None:
        known = [a[0] for a in axes]
        bad = [p for p in planes if p not in known]
        if d == 3 and bad:
            raise ValueError(f"planes: expected names among {known}, got {list(planes)}")
        if d == 3:
            axes = [a for a in axes if a[0] in planes]
    out = []
    for name, right, up in axes:
        pr, pu = corners @ right, corners @ up
        ext_r, ext_u = float(pr.max() - pr.min()), float(pu.max() - pu.min())
        pixel = max(min(grid.spacing), max(ext_r, ext_u) / max_pixels)
        w = max(1, int(math.ceil(ext_r / pixel - 1e-6)))
        h = max(1, int(math.ceil(ext_u / pixel - 1e-6)))
        mid = box_centre + right * (0.5 * (pr.max() + pr.min()) - box_centre @ right)
        mid = mid + up * (0.5 * (pu.max() + pu.min()) - box_centre @ up)
        position = ""
        if d == 3:
            normal = np.cross(right, up)
            mid = mid + normal * ((centre - mid) @ normal)
            axis = int(np.argmax(np.abs(normal)))
            position = f"{'RAS'[axis]} = {float(mid[axis]):.1f} mm"
            direction = np.stack([-up, right, normal], axis=1)
        else:
            direction = np.stack([-up, right], axis=1)
        origin = mid + up * (0.5 * (h - 1) * pixel) - right * (0.5 * (w - 1) * pixel)
        shape = (h, w, 1) if d == 3 else (h, w)
        pgrid = Grid(shape, (pixel,) * d, tuple(origin.tolist()), direction)
        letters = (_letter(-right), _letter(right), _letter(up), _letter(-up))
        out.append(PlaneView(name, pgrid, right, up, mid, float(pixel), letters, position))
    return out


def flat_values(image: Image) -> np.ndarray:
    """Finite channel-mean voxel values as a float64 vector (a regular subsample beyond 2^21 voxels)."""
    flat = image.data.detach().reshape(image.channels, -1)
    step = max(1, flat.shape[1] // _SAMPLE_LIMIT)
    vals = flat[:, ::step].to("cpu", torch.float64).mean(dim=0).numpy()
    return vals[np.isfinite(vals)]


def intensity_window(image: Image, *, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """Robust display window: the ``low`` and ``high`` percentiles of the channel-mean intensities.

    Args:
        image: any image (label maps too).
        low, high: percentiles in ``[0, 100]`` with ``low < high``.

    Returns:
        ``(lo, hi)`` with ``hi > lo`` (``hi = lo + 1`` for a constant image).
    """
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"low, high: expected 0 <= low < high <= 100, got {low}, {high}")
    vals = flat_values(image)
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(vals, [low, high]))
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def otsu_threshold(values: np.ndarray, *, bins: int = 128) -> float:
    """Otsu's threshold (largest between-class variance) of a set of values; NaN when fewer than 2 distinct."""
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    vals = vals[np.isfinite(vals)]
    if vals.size < 2 or vals.min() == vals.max():
        return float("nan")
    hist, edges = np.histogram(vals, bins=bins)
    mids = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)[:-1].astype(np.float64)
    w1 = vals.size - w0
    s0 = np.cumsum(hist * mids)[:-1]
    m0 = s0 / np.maximum(w0, 1)
    m1 = (float((hist * mids).sum()) - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[1:-1][int(np.argmax(between))])


def _centroid(mask: np.ndarray, grid: Grid) -> np.ndarray | None:
    idx = np.argwhere(mask)
    if idx.size == 0:
        return None
    return grid.transform_points(idx.mean(axis=0), "voxel", "world")


def region_of_interest_centre(image: Image, *, labels: Image | None = None) -> np.ndarray:
    """World (RAS mm) centre of the region of interest, shape ``(D,)``.

    The centroid of the voxels with a label above 0 when ``labels`` holds any, else the centroid of
    the foreground of ``image`` (channel-mean intensity above Otsu's threshold), else the centre of
    the image's grid.

    Args:
        image: the reference image.
        labels: an optional label map (any grid in the same world space).
    """
    if not isinstance(image, Image):
        raise TypeError(f"image: expected an Image, got {type(image).__name__}")
    if labels is not None:
        if not isinstance(labels, Image):
            raise TypeError(f"labels: expected an Image or None, got {type(labels).__name__}")
        c = _centroid(labels.data.detach().cpu().numpy().max(axis=0) > 0, labels.grid)
        if c is not None:
            return c
    data = image.data.detach().to("cpu", torch.float32).mean(dim=0).numpy()
    t = otsu_threshold(flat_values(image))
    if math.isfinite(t):
        c = _centroid(data > t, image.grid)
        if c is not None:
            return c
    g = image.grid
    return g.transform_points((np.asarray(g.shape) - 1) / 2.0, "voxel", "world")


def sample_plane(
    image: Image,
    plane: PlaneView,
    *,
    transform: Transform | None = None,
    interp: str = "linear",
) -> np.ndarray:
    """Pull-sample an image on a display plane: ``out(x) = image(T(x))`` for the plane's pixel centres ``x``.

    Args:
        image: the image (its channels are averaged; label maps keep their integer values).
        plane: from :func:`display_planes`.
        transform: fixed -> moving world transform (batch size 1); ``None`` is the identity.
        interp: ``"linear"``, ``"nearest"`` or ``"cubic"`` (label maps always use nearest).

    Returns:
        ``(H, W)`` array: float64 for intensity images, int64 (first channel) for label maps; zero
        outside the image.
    """
    with torch.no_grad():
        img = image if image.is_label else image.to(torch.float32)
        out = resample(img, transform, onto=plane.grid, interp=interp).data.detach().cpu()
    h, w = plane.shape
    if image.is_label:
        return out[0].reshape(h, w).to(torch.int64).numpy()
    return out.to(torch.float64).mean(dim=0).reshape(h, w).numpy()
