"""The RAS <-> LPS boundary and array conversions of :mod:`omnireg.io` (private).

Convention (pinned by ``tests/conventions/test_io_conventions.py``):

* omnireg's world space is RAS+ mm (as NIfTI); ITK, SimpleITK and DICOM use LPS+ mm. For 3D,
  ``world_RAS = diag(-1, -1, 1) @ world_LPS``. For 2D, ITK's physical space is taken as the first two
  LPS axes (this is how ITK reads a 2D NIfTI: it flips the 3D affine and keeps its upper-left 2x2
  block), so ``world_RAS = diag(-1, -1) @ world_LPS``. The flip ``F`` is its own inverse.
* A grid in LPS has ``origin_LPS = F @ origin_RAS`` and ``direction_LPS = F @ direction_RAS``; the
  spacing is unchanged. An affine (point map) converts as ``M_LPS = F @ M_RAS @ F`` and a world
  vector (a displacement) as ``v_LPS = F @ v_RAS``.
* SimpleITK arrays are indexed ``[k, j, i]`` (``[k, j, i, c]`` for vector pixels); omnireg tensors
  are ``(C, i, j, k)``.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from ..core import Grid

__all__ = [
    "array_from_sitk",
    "convert_affine_ras_lps",
    "grid_from_sitk",
    "lps_flip",
    "numpy_from_tensor",
    "sitk_from_array",
    "tensor_from_numpy",
]


def lps_flip(ndim: int) -> np.ndarray:
    """Diagonal of ``F`` with ``world_RAS = F @ world_LPS``: ``(-1, -1, 1)`` in 3D, ``(-1, -1)`` in 2D."""
    if ndim not in (2, 3):
        raise ValueError(f"ndim: expected 2 or 3 spatial dimensions for ITK/NIfTI files, got {ndim}")
    return np.array([-1.0, -1.0, 1.0][:ndim])


def convert_affine_ras_lps(matrix: np.ndarray) -> np.ndarray:
    """``F @ M @ F`` for a homogeneous ``(D+1, D+1)`` point map: RAS -> LPS and LPS -> RAS alike."""
    m = np.asarray(matrix, dtype=np.float64)
    f = np.append(lps_flip(m.shape[0] - 1), 1.0)
    return f[:, None] * m * f[None, :] + 0.0  # + 0.0 turns -0.0 into 0.0


def grid_from_sitk(image: sitk.Image, source: object) -> Grid:
    """The omnireg (RAS) grid of a SimpleITK image; ``source`` names the file in errors."""
    d = image.GetDimension()
    if d not in (2, 3):
        raise ValueError(f"cannot read image {source}: expected a 2D or 3D image, got {d} dimensions")
    f = lps_flip(d)
    direction_lps = np.asarray(image.GetDirection(), dtype=np.float64).reshape(d, d)
    try:
        return Grid(
            tuple(int(s) for s in image.GetSize()),
            tuple(image.GetSpacing()),
            tuple(f * np.asarray(image.GetOrigin(), dtype=np.float64)),
            f[:, None] * direction_lps,
        )
    except ValueError as exc:
        raise ValueError(f"cannot read image {source}: {exc}") from exc


def array_from_sitk(image: sitk.Image) -> np.ndarray:
    """Pixel data of a SimpleITK image as ``(C, i, j[, k])`` (channels first, tensor-axis order)."""
    arr = sitk.GetArrayFromImage(image)  # [k, j, i] or [k, j, i, c]
    d = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() > 1:
        arr = arr.transpose(d, *reversed(range(d)))
    else:
        arr = arr.transpose(*reversed(range(d)))[None]
    return np.ascontiguousarray(arr)


def sitk_from_array(array: np.ndarray, grid: Grid) -> sitk.Image:
    """A SimpleITK image (LPS geometry) from data ``(C, *S)`` on ``grid``; vector pixels when ``C > 1``."""
    d = grid.ndim
    f = lps_flip(d)
    c = array.shape[0]
    if c > 1:
        kji_c = array.transpose(*reversed(range(1, d + 1)), 0)
        img = sitk.GetImageFromArray(np.ascontiguousarray(kji_c), isVector=True)
    else:
        img = sitk.GetImageFromArray(np.ascontiguousarray(array[0].transpose(*reversed(range(d)))), isVector=False)
    img.SetSpacing(tuple(float(s) for s in grid.spacing))
    img.SetOrigin(tuple(float(v) for v in f * np.asarray(grid.origin)))
    img.SetDirection(tuple(float(v) for v in (f[:, None] * grid.direction).reshape(-1)))
    return img


def tensor_from_numpy(array: np.ndarray, source: object) -> torch.Tensor:
    """Tensor from file data with omnireg's dtype rules.

    Floats stay float32 / float64 (float16 becomes float32); integers stay integers: int8, uint8,
    int16, int32, int64 are kept, uint16 becomes int32 and uint32 / uint64 become int64 (torch has
    little support for wide unsigned types); big-endian data become native. Complex data are refused.
    """
    arr = np.asarray(array)
    if arr.dtype.names:  # NIfTI RGB / RGBA: structured pixels -> channels on the last axis
        arr = np.stack([arr[n] for n in arr.dtype.names], axis=-1)
    kind = arr.dtype.kind
    if kind == "c":
        raise ValueError(f"cannot read image {source}: complex data are not supported")
    if kind == "f":
        target = np.float64 if arr.dtype.itemsize == 8 else np.float32
    elif kind == "b":
        target = np.uint8
    elif kind == "u":
        target = {1: np.uint8, 2: np.int32}.get(arr.dtype.itemsize, np.int64)
        if arr.dtype.itemsize == 8 and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"cannot read image {source}: uint64 values exceed the int64 range")
    elif kind == "i":
        target = arr.dtype.newbyteorder("=")
    else:
        raise ValueError(f"cannot read image {source}: unsupported data type {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=target))


def numpy_from_tensor(data: torch.Tensor) -> np.ndarray:
    """NumPy data for writing: bool -> uint8, float16/bfloat16 -> float32, everything else kept."""
    t = data.detach().cpu()
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    elif t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)
    elif t.is_complex():
        raise ValueError(f"data: complex data cannot be written, got {t.dtype}")
    return t.numpy()
