"""Surface distances of binary masks in world millimetres: HD95 and the Hausdorff distance.

Definitions (stated because published numbers depend on them):

* **Surface** of a mask ``A``: its boundary voxels ``∂A = A \\ erode(A)``, with the erosion by the
  face-connected structuring element (6-neighbourhood in 3D, 4 in 2D) and everything outside the
  image counted as background (an object cut by the field of view has a surface there).
* **Distances** are between voxel centres in world mm. For an orthonormal direction matrix
  ``|x - y| = |diag(spacing) (v - w)|``, so they are computed with
  ``scipy.ndimage.distance_transform_edt(..., sampling=spacing)``, exact for any orientation.
* **Directed surface distances** ``d(A, B) = {min_{b in ∂B} |a - b| : a in ∂A}``.
* **HD95** (:func:`hd95`): the 95th percentile (NumPy's default linear interpolation between order
  statistics) of the union ``d(A, B) ∪ d(B, A)``, one value per boundary voxel of either mask.
  (MONAI and DeepMind's surface-distance take the larger of the two directed percentiles instead.)
* **Hausdorff distance** (:func:`hausdorff_distance`): as SimpleITK's ``HausdorffDistanceImageFilter``,
  the symmetric Hausdorff distance between the two *voxel sets*,
  ``max(max_{a in A} min_{b in B} |a - b|, max_{b in B} min_{a in A} |a - b|)``. It usually equals the
  maximum of the surface distances; it is smaller when one mask has a hole the other fills (the
  surface of the hole is far from the other surface but inside the other mask).

Empty masks have no surface: every distance of a pair with an empty mask is NaN.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from ..core.grid import Grid
from ..core.image import Image

__all__ = ["mask_arrays", "as_mask_pair", "boundary", "surface_distances", "hd95", "hausdorff_distance"]

SpacingLike = Grid | Sequence[float] | np.ndarray


def _as_array(x: object, name: str) -> np.ndarray:
    if isinstance(x, Image):
        if x.channels != 1:
            raise ValueError(f"{name}: expected a single-channel image, got {x.channels} channels")
        return x.numpy()[0]
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{name}: expected an Image, a NumPy array or a torch.Tensor, got {type(x).__name__}")


def _spacing(spacing: SpacingLike, ndim: int) -> np.ndarray:
    if isinstance(spacing, Grid):
        sp = np.asarray(spacing.spacing, dtype=np.float64)
    else:
        if isinstance(spacing, (str, bytes)):
            raise TypeError(f"spacing: expected a Grid or {ndim} spacings in mm, got {type(spacing).__name__}")
        sp = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if sp.size != ndim or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing: expected {ndim} positive spacings in mm (one per axis), got {sp.tolist()}")
    return sp


def mask_arrays(a: object, b: object) -> tuple[np.ndarray, np.ndarray]:
    """Two boolean masks ``(*S)`` of equal shape from Images, arrays or tensors (non-zero = inside).

    Raises:
        TypeError: on other types.
        ValueError: on unequal shapes, images on different grids, or more than 3 dimensions.
    """
    if isinstance(a, Image) and isinstance(b, Image) and not a.grid.same_as(b.grid, atol=1e-4):
        raise ValueError(f"b: expected an image on the grid of a, {a.grid!r}; got {b.grid!r}")
    ma, mb = _as_array(a, "a") != 0, _as_array(b, "b") != 0
    if ma.shape != mb.shape:
        raise ValueError(f"b: expected a mask of shape {ma.shape} (that of a), got {mb.shape}")
    if ma.ndim not in (1, 2, 3):
        raise ValueError(f"a: expected a 1D to 3D mask, got {ma.ndim} dimensions")
    return ma, mb


def as_mask_pair(a: object, b: object, spacing: SpacingLike | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two boolean masks of equal shape and their spacing in mm.

    Args:
        a, b: masks (non-zero = inside) as :class:`Image` (one channel), NumPy arrays or tensors.
        spacing: a :class:`Grid` or the spacings in mm; default: the grid of ``a`` if it is an Image.

    Returns:
        ``(a, b, spacing)`` as boolean arrays ``(*S)`` and a float64 ``(D,)``.

    Raises:
        TypeError, ValueError: on other types, unequal shapes or images on different grids.
    """
    ma, mb = mask_arrays(a, b)
    if spacing is None:
        if not isinstance(a, Image):
            raise ValueError("spacing: required when a is not an Image (a Grid or the spacings in mm)")
        spacing = a.grid
    return ma, mb, _spacing(spacing, ma.ndim)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels ``mask & ~erode(mask)`` (face connectivity, background outside the image)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _crop(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of ``a | b`` plus one voxel (distances unchanged)."""
    idx = np.argwhere(a | b)
    lo = np.maximum(idx.min(0) - 1, 0)
    hi = np.minimum(idx.max(0) + 2, a.shape)
    sl = tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))
    return a[sl], b[sl]


def _distance_to(target: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """World mm distance of every voxel centre to the nearest voxel centre of ``target`` (0 on it)."""
    return ndimage.distance_transform_edt(~target, sampling=spacing)


def surface_distances(a: object, b: object, spacing: SpacingLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: ``d(A, B)`` and ``d(B, A)`` (module docstring).

    Args:
        a, b: masks (non-zero = inside), same shape; Images, NumPy arrays or tensors.
        spacing: a :class:`Grid` or spacings in mm (default: ``a``'s grid when ``a`` is an Image).

    Returns:
        ``(d_ab, d_ba)``: float64 arrays, one distance per boundary voxel of ``a`` (``d_ab``) and of
        ``b`` (``d_ba``), in C order of the voxels. Both are empty when either mask is empty.

    Raises:
        TypeError, ValueError: see :func:`as_mask_pair`.
    """
    ma, mb, sp = as_mask_pair(a, b, spacing)
    if not ma.any() or not mb.any():
        return np.zeros(0), np.zeros(0)
    ma, mb = _crop(ma, mb)
    sa, sb = boundary(ma), boundary(mb)
    return _distance_to(sb, sp)[sa], _distance_to(sa, sp)[sb]


def hd95(a: object, b: object, spacing: SpacingLike | None = None, *, percentile: float = 95.0) -> float:
    """Percentile Hausdorff distance in mm: the ``percentile`` of ``d(A, B) ∪ d(B, A)``.

    ``HDp = percentile_p({min_{b in ∂B} |a - b| : a in ∂A} ∪ {min_{a in ∂A} |b - a| : b in ∂B})`` with
    NumPy's linear interpolation (module docstring). ``percentile=100`` gives the maximum surface distance.

    Args:
        a, b: masks (non-zero = inside), same shape.
        spacing: a :class:`Grid` or spacings in mm (default: ``a``'s grid when ``a`` is an Image).
        percentile: in ``[0, 100]``.

    Returns:
        The distance in mm; NaN if either mask is empty.

    Raises:
        ValueError: on a percentile outside ``[0, 100]``, or see :func:`as_mask_pair`.

    Example:
        >>> a = np.zeros((1, 9), bool); a[0, 2:4] = True
        >>> b = np.zeros((1, 9), bool); b[0, 6:8] = True
        >>> hd95(a, b, (1.0, 2.0), percentile=100.0)
        8.0
    """
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 <= percentile <= 100:
        raise ValueError(f"percentile: expected a number in [0, 100], got {percentile!r}")
    d_ab, d_ba = surface_distances(a, b, spacing)
    if d_ab.size == 0:
        return float("nan")
    return float(np.percentile(np.concatenate([d_ab, d_ba]), percentile))


def hausdorff_distance(a: object, b: object, spacing: SpacingLike | None = None) -> float:
    """Symmetric Hausdorff distance in mm between the voxel sets (as SimpleITK's filter).

    ``HD = max(max_{a in A} min_{b in B} |a - b|, max_{b in B} min_{a in A} |b - a|)`` over voxel centres
    in world mm.

    Args:
        a, b: masks (non-zero = inside), same shape.
        spacing: a :class:`Grid` or spacings in mm (default: ``a``'s grid when ``a`` is an Image).

    Returns:
        The distance in mm; NaN if either mask is empty.
    """
    ma, mb, sp = as_mask_pair(a, b, spacing)
    if not ma.any() or not mb.any():
        return float("nan")
    ma, mb = _crop(ma, mb)
    return float(max(_distance_to(mb, sp)[ma].max(), _distance_to(ma, sp)[mb].max()))
