"""Fixtures for the transform tests: oblique grids, smooth images and RAS <-> LPS SimpleITK helpers."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from omnireg.core import Grid

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def rotation_3d(angles: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def smooth_image(grid: Grid, dtype=torch.float64) -> torch.Tensor:
    """A smooth function of world position ``(1, 1, *S)`` (so resampling errors stay small)."""
    x = grid.points("world", dtype=torch.float64)
    val = torch.ones(grid.shape, dtype=torch.float64)
    for a in range(grid.ndim):
        val = val + torch.sin(0.15 * x[..., a] + 0.3 * a) * (1.0 + 0.1 * a)
    return val[None, None].to(dtype)


def to_sitk_image(data: np.ndarray, grid: Grid):
    """Scalar ``(*S)`` or vector ``(*S, D)`` array on an RAS grid -> SimpleITK image (LPS geometry)."""
    import SimpleITK as sitk

    d = grid.ndim
    f = LPS_FROM_RAS[:d, :d]
    is_vector = data.ndim == d + 1
    arr = np.ascontiguousarray(np.transpose(data, tuple(reversed(range(d))) + ((d,) if is_vector else ())))
    img = sitk.GetImageFromArray(arr, isVector=is_vector)
    img.SetSpacing(tuple(grid.spacing))
    img.SetOrigin(tuple((f @ np.asarray(grid.origin)).tolist()))
    img.SetDirection(tuple((f @ grid.direction).reshape(-1).tolist()))
    return img


def from_sitk_array(img) -> np.ndarray:
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(img)
    return np.transpose(arr, tuple(reversed(range(img.GetDimension()))))


def sitk_affine(matrix_ras: np.ndarray):
    """World RAS homogeneous matrix (fixed -> moving) -> sitk.AffineTransform in LPS."""
    import SimpleITK as sitk

    d = matrix_ras.shape[0] - 1
    f = np.eye(d + 1)
    f[:d, :d] = LPS_FROM_RAS[:d, :d]
    m = f @ matrix_ras @ f
    t = sitk.AffineTransform(d)
    t.SetMatrix(tuple(m[:d, :d].reshape(-1).tolist()))
    t.SetTranslation(tuple(m[:d, d].tolist()))
    return t


def sitk_displacement(field_ras: np.ndarray, grid: Grid):
    """World RAS mm field ``(D, *S)`` on ``grid`` -> sitk.DisplacementFieldTransform (LPS vectors)."""
    import SimpleITK as sitk

    d = grid.ndim
    f = LPS_FROM_RAS[:d, :d]
    vec = np.einsum("ab,b...->...a", f, field_ras).astype(np.float64)
    img = to_sitk_image(vec, grid)
    return sitk.DisplacementFieldTransform(sitk.Cast(img, sitk.sitkVectorFloat64))


@pytest.fixture
def helpers() -> types.SimpleNamespace:
    return types.SimpleNamespace(
        rotation_3d=rotation_3d,
        smooth_image=smooth_image,
        to_sitk_image=to_sitk_image,
        from_sitk_array=from_sitk_array,
        sitk_affine=sitk_affine,
        sitk_displacement=sitk_displacement,
        lps_from_ras=LPS_FROM_RAS,
    )


@pytest.fixture
def oblique_grid() -> Grid:
    """A small oblique, anisotropic 3D grid."""
    return Grid((12, 10, 9), spacing=(1.5, 2.0, 2.5), origin=(-8.0, 3.0, -5.0), direction=rotation_3d((0.2, -0.3, 0.4)))
