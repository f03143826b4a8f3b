"""ITK's HDF5 transform format written with h5py, so that dense fields can be stored compactly (private).

ITK (``itk::HDF5TransformIO``, used by SimpleITK, ANTs and 3D Slicer) stores a composite transform as::

    /HDFVersion, /ITKVersion, /OSName, /OSVersion      variable-length ASCII strings, shape (1,)
    /TransformGroup/0/TransformType                    "CompositeTransform_double_D_D"
    /TransformGroup/k/TransformType                    e.g. "AffineTransform_double_3_3"
    /TransformGroup/k/TransformParameters              1D float dataset
    /TransformGroup/k/TransformFixedParameters         1D float dataset

with the members in ``CompositeTransform`` order (the last one acts on the points first). For a
``DisplacementFieldTransform`` the parameters are the whole field buffer, ``x`` fastest and the D LPS
components innermost (``[k, j, i, c]`` in C order), and the fixed parameters are the field's geometry:
size (D), origin (D, LPS), spacing (D) and direction (D*D, LPS, row-major).

SimpleITK writes such fields in float64 and uncompressed (8 bytes per component). ITK's reader takes
any float dataset (it checks only the class, float, and reads float32 or float64) through the HDF5
library, which undoes gzip and shuffle filters itself, and it maps a ``_float_`` transform type to the
precision of the reader. Here fields are written in the requested precision (``float32`` by default,
as ANTs' ``--float`` output), chunked, shuffled and gzip-compressed; linear parameters stay float64.
``tests/io/test_io_composite.py`` pins that SimpleITK reads these files back exactly.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import SimpleITK as sitk

from ._convert import convert_affine_ras_lps, lps_flip

__all__ = ["write_itk_h5"]

#: elements per HDF5 chunk of a field's parameters (1 MiB of float32)
_CHUNK = 1 << 18
#: gzip level: 4 is within a few percent of level 9's size on smooth fields and several times faster
_GZIP_LEVEL = 4


def _string(group: h5py.Group, name: str, value: str) -> None:
    dtype = h5py.string_dtype("ascii")
    group.create_dataset(name, data=np.array([value.encode("ascii")], dtype=object), dtype=dtype)


def _linear_members(matrix_ras: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    d = matrix_ras.shape[0] - 1
    lps = convert_affine_ras_lps(matrix_ras)
    params = np.concatenate([lps[:d, :d].reshape(-1), lps[:d, d]]) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"AffineTransform_double_{d}_{d}", params, np.zeros(d)


def _field_members(field_lps: np.ndarray, grid) -> tuple[str, np.ndarray, np.ndarray]:
    """Type name, parameters (the buffer) and fixed parameters (the geometry) of an LPS field ``(D, *S)``."""
    d = grid.ndim
    f = lps_flip(d)
    buffer = np.ascontiguousarray(field_lps.transpose(*reversed(range(1, d + 1)), 0)).reshape(-1)  # [k, j, i, c]
    fixed = np.concatenate([
        np.asarray(grid.shape, dtype=np.float64),
        f * np.asarray(grid.origin, dtype=np.float64),
        np.asarray(grid.spacing, dtype=np.float64),
        (f[:, None] * np.asarray(grid.direction, dtype=np.float64)).reshape(-1),
    ]) + 0.0
    precision = "float" if field_lps.dtype == np.float32 else "double"
    return f"DisplacementFieldTransform_{precision}_{d}_{d}", buffer, fixed


def write_itk_h5(members: Sequence[tuple], path: Path) -> None:
    """Write ``members`` as one ITK ``CompositeTransform`` ``.h5`` file at ``path`` (overwritten).

    Args:
        members: ``("linear", matrix_ras)`` (a ``(D+1, D+1)`` float64 array) or ``("displacement",
            field_lps, grid)`` (``(D, *S)`` float32/float64 array of LPS components on ``grid``), in
            ``CompositeTransform`` order (the last acts first); already validated by the caller.
        path: destination file (the caller makes the write atomic).
    """
    d = members[0][-1].ndim if members[0][0] == "displacement" else members[0][1].shape[0] - 1
    with h5py.File(path, "w", libver="earliest") as h5:
        _string(h5, "HDFVersion", f"HDF5 library version: {h5py.version.hdf5_version}")
        _string(h5, "ITKVersion", sitk.Version.ITKVersionString())
        _string(h5, "OSName", platform.system())
        _string(h5, "OSVersion", platform.release())
        group = h5.create_group("TransformGroup")
        _string(group.create_group("0"), "TransformType", f"CompositeTransform_double_{d}_{d}")
        for index, member in enumerate(members, start=1):
            sub = group.create_group(str(index))
            if member[0] == "linear":
                name, params, fixed = _linear_members(member[1])
                sub.create_dataset("TransformParameters", data=params)
            else:
                name, params, fixed = _field_members(member[1], member[2])
                sub.create_dataset(
                    "TransformParameters", data=params, chunks=(min(params.size, _CHUNK),), shuffle=True,
                    compression="gzip", compression_opts=_GZIP_LEVEL,
                )
            sub.create_dataset("TransformFixedParameters", data=fixed)
            _string(sub, "TransformType", name)
