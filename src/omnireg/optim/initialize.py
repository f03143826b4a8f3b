"""Initial alignment: identity, field-of-view centres, intensity centres of mass, principal axes (moments),
and the ``auto`` rule that chooses among them by what the images are.

All candidates are ``(D+1, D+1)`` float64 matrices mapping fixed world points to moving world points (the
pull direction used everywhere in omnireg). The engine scores every candidate with the first stage's
similarity at its coarsest level and starts the first stage from the best few, the identity always among
them (:mod:`omnireg.optim.stage`), so an initialisation is kept only if it beats the identity start.

``auto`` (the default):

* The foreground of each image (Otsu threshold of its smoothed intensities) is measured by its principal
  extents (standard deviations of the foreground's voxel positions along its principal axes, sorted). When
  one image's extent is less than ``PARTIAL_RATIO`` (0.75) of the other's along any principal axis, the
  fields of view are **partial** (one image shows only part of what the other shows: a slab, a spinal
  cord section, a crop). Principal axes and centres of mass of partial views say nothing about the
  anatomy, so no moments rotation is tried; instead the candidates are the identity (the scanner's world
  coordinates) and translations that place the smaller foreground box at positions inside the larger
  one (up to 5 per axis), and the global search tries rotations of at most 15 degrees.
* Otherwise the candidates are the identity, the field-of-view centres, the centres of mass and the
  principal-axes rotations about the centres of mass.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..core import Grid

__all__ = ["Candidate", "FieldOfView", "PARTIAL_RATIO", "fov_center", "center_of_mass", "second_moments",
           "foreground_mask", "foreground_region", "field_of_view", "initial_candidates"]

#: principal-extent ratio below which two fields of view count as partial (module docstring)
PARTIAL_RATIO = 0.75


def fov_center(grid: Grid) -> np.ndarray:
    """World position of the centre of the grid's field of view."""
    return grid.transform_points((np.asarray(grid.shape) - 1) / 2.0, "voxel", "world")


def _weights(data: torch.Tensor) -> np.ndarray:
    """Non-negative intensity weights of a (1, C, *S) batch: channel mean, minus its 2nd percentile, clipped."""
    x = data[0].float().mean(0).detach().cpu().numpy().astype(np.float64)
    lo = np.percentile(x, 2.0)
    w = np.clip(x - lo, 0, None)
    if w.sum() <= 0:
        w = np.ones_like(x)
    return w


def center_of_mass(data: torch.Tensor, grid: Grid) -> np.ndarray:
    """Intensity-weighted centre (world mm) of ``data`` ``(1, C, *S)``."""
    w = _weights(data)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in grid.shape], indexing="ij"), -1).reshape(-1, grid.ndim)
    c_vox = (idx * w.reshape(-1, 1)).sum(0) / w.sum()
    return grid.transform_points(c_vox, "voxel", "world")


def second_moments(data: torch.Tensor, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Centre of mass and world-space covariance matrix of the intensity distribution."""
    w = _weights(data).reshape(-1)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in grid.shape], indexing="ij"), -1).reshape(-1, grid.ndim)
    pts = grid.transform_points(idx.astype(np.float64), "voxel", "world")
    c = (pts * w[:, None]).sum(0) / w.sum()
    d = pts - c
    cov = (d * w[:, None]).T @ d / w.sum()
    return c, cov


def _translation(t: np.ndarray) -> np.ndarray:
    m = np.eye(len(t) + 1)
    m[:-1, -1] = t
    return m


@dataclass
class Candidate:
    """A named initial matrix (fixed world -> moving world)."""

    name: str
    matrix: np.ndarray


@dataclass
class FieldOfView:
    """How the two images' foregrounds compare (module docstring).

    Attributes:
        partial: one foreground is smaller than ``PARTIAL_RATIO`` times the other along a principal axis.
        ratio: the smallest ratio of sorted principal extents (1 = same size).
        fixed_box, moving_box: world (RAS mm) bounding boxes ``(2, D)`` of the foregrounds (1st-99th percentile).
    """

    partial: bool
    ratio: float
    fixed_box: np.ndarray
    moving_box: np.ndarray
    extents: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"partial": self.partial, "ratio": self.ratio, "fixed_box_mm": self.fixed_box.tolist(),
                "moving_box_mm": self.moving_box.tolist()}


def _otsu(x: np.ndarray, bins: int = 128) -> float:
    hist, edges = np.histogram(x, bins=bins)
    p = hist.astype(np.float64) / max(hist.sum(), 1)
    centers = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centers)
    mt = m0[-1]
    w1 = 1.0 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1.0
    return float(centers[int(np.argmax(between))])


def foreground_mask(data: torch.Tensor) -> np.ndarray:
    """Boolean foreground of a ``(1, C, *S)`` batch: channel mean above its Otsu threshold.

    The threshold is computed on intensities clipped to their [1, 99] percentile range, so a few bright
    voxels do not decide it; an image whose threshold leaves nothing (a constant image) is all foreground.
    """
    x = data[0].float().mean(0).detach().cpu().numpy().astype(np.float64)
    lo, hi = np.percentile(x, [1.0, 99.0])
    if hi <= lo:
        return np.ones(x.shape, dtype=bool)
    t = _otsu(np.clip(x, lo, hi).reshape(-1))
    mask = x > t
    return mask if mask.any() else np.ones(x.shape, dtype=bool)


def foreground_region(data: torch.Tensor, grid: Grid, *, dilate_mm: float = 5.0) -> torch.Tensor:
    """The foreground of a ``(1, C, *S)`` batch as a float mask ``(1, 1, *S)``: Otsu threshold
    (:func:`foreground_mask`), holes filled, dilated by ``dilate_mm`` (an ellipsoid in voxels per axis)."""
    from scipy import ndimage

    mask = ndimage.binary_fill_holes(foreground_mask(data))
    radius = [max(int(round(dilate_mm / s)), 0) for s in grid.spacing]
    if any(radius):
        axes = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
        ball = sum((a / max(r, 1)) ** 2 for a, r in zip(axes, radius)) <= 1.0
        mask = ndimage.binary_dilation(mask, structure=ball)
    return torch.from_numpy(mask.astype(np.float32))[None, None].to(data.device)


def _foreground_points(data: torch.Tensor, grid: Grid, max_points: int = 200_000) -> np.ndarray:
    idx = np.argwhere(foreground_mask(data)).astype(np.float64)
    if len(idx) > max_points:  # a regular thinning keeps the statistics and bounds the cost
        idx = idx[:: int(math.ceil(len(idx) / max_points))]
    return grid.transform_points(idx, "voxel", "world")


def field_of_view(fixed: torch.Tensor, fixed_grid: Grid, moving: torch.Tensor, moving_grid: Grid) -> FieldOfView:
    """Compare the foregrounds of the two images (module docstring): partial or comparable."""
    ext, boxes = {}, {}
    for name, data, grid in (("fixed", fixed, fixed_grid), ("moving", moving, moving_grid)):
        pts = _foreground_points(data, grid)
        boxes[name] = np.percentile(pts, [1.0, 99.0], axis=0)
        cov = np.cov(pts.T) if len(pts) > 1 else np.zeros((grid.ndim, grid.ndim))
        # extent of a uniform segment with this standard deviation: sqrt(12) * sigma
        ext[name] = np.sqrt(12.0 * np.clip(np.linalg.eigvalsh(np.atleast_2d(cov)), 0, None))
    a, b = ext["fixed"], ext["moving"]
    ratio = float(np.min(np.minimum(a, b) / np.maximum(np.maximum(a, b), 1e-6)))
    return FieldOfView(ratio < PARTIAL_RATIO, ratio, boxes["fixed"], boxes["moving"],
                       {"fixed_mm": a.tolist(), "moving_mm": b.tolist()})


def _placements(fov: FieldOfView, per_axis: int = 5) -> list[np.ndarray]:
    """Translations (moving - fixed, world mm) that put the smaller foreground box inside the larger one."""
    lo = fov.moving_box[0] - fov.fixed_box[0]  # aligns the low faces
    hi = fov.moving_box[1] - fov.fixed_box[1]  # aligns the high faces
    axes = []
    for a, b in zip(lo, hi):
        a, b = min(a, b), max(a, b)
        n = int(min(per_axis, 1 + math.ceil((b - a) / 10.0)))  # about 10 mm apart, at most per_axis
        axes.append(np.linspace(a, b, n) if n > 1 else np.array([0.5 * (a + b)]))
    return [np.asarray(t) for t in itertools.product(*axes)]


def initial_candidates(
    fixed: torch.Tensor, fixed_grid: Grid, moving: torch.Tensor, moving_grid: Grid, method: str,
    fov: FieldOfView | None = None,
) -> list[Candidate]:
    """Candidate initial matrices for ``method`` in ``none``, ``geometry``, ``com``, ``moments``, ``auto``.

    The identity comes first for every method (an initialisation is kept only if it scores better than
    the identity start). ``geometry`` adds the field-of-view centres, ``com`` the centres of mass,
    ``moments`` the centres of mass and every principal-axes rotation (eigenvector sign choices with
    determinant +1) about them; ``auto`` follows the module docstring (``fov`` from :func:`field_of_view`,
    computed if not given). The caller scores them.
    """
    d = fixed_grid.ndim
    identity = Candidate("identity", np.eye(d + 1))
    if method == "none":
        return [identity]
    geometry = Candidate("geometry", _translation(fov_center(moving_grid) - fov_center(fixed_grid)))
    if method == "geometry":
        return [identity, geometry]
    com = Candidate("com", _translation(center_of_mass(moving, moving_grid) - center_of_mass(fixed, fixed_grid)))
    if method == "com":
        return [identity, com]
    if method == "moments":
        return [identity, com] + _moment_rotations(fixed, fixed_grid, moving, moving_grid)
    if method != "auto":
        raise ValueError(f"init: expected one of auto, none, geometry, com, moments, got {method!r}")
    fov = fov or field_of_view(fixed, fixed_grid, moving, moving_grid)
    if fov.partial:
        return [identity] + [Candidate(f"placement {i}", _translation(t)) for i, t in enumerate(_placements(fov))]
    return [identity, geometry, com] + _moment_rotations(fixed, fixed_grid, moving, moving_grid)


def _moment_rotations(fixed, fixed_grid: Grid, moving, moving_grid: Grid) -> list[Candidate]:
    d = fixed_grid.ndim
    cf, covf = second_moments(fixed, fixed_grid)
    cm, covm = second_moments(moving, moving_grid)
    _, ef = np.linalg.eigh(covf)
    _, em = np.linalg.eigh(covm)
    out = []
    for signs in itertools.product([1.0, -1.0], repeat=d):
        r = em @ np.diag(signs) @ ef.T
        if np.linalg.det(r) < 0:
            continue
        if np.allclose(r, np.eye(d), atol=1e-6):
            continue
        m = np.eye(d + 1)
        m[:d, :d] = r
        m[:d, d] = cm - r @ cf  # x -> R (x - cf) + cm
        out.append(Candidate(f"moments {len(out)}", m))
    return out
