"""ITK transform files as plain data: linear ``.tfm``/``.txt``/``.mat``, displacement fields, composite ``.h5``.

Convention (the files speak ITK, the API speaks omnireg):

* Every transform maps **fixed-space world points to moving-space world points** (pull mapping, as
  ITK's ``TransformPoint`` and ``antsApplyTransforms`` use them); ``warped(x) = moving(T(x))``.
* The API is in world **RAS** mm; the files are in ITK's **LPS** mm. A linear map converts as
  ``M_LPS = F M_RAS F`` with ``F = diag(-1, -1, 1, 1)`` (2D: ``diag(-1, -1, 1)``), a displacement
  vector as ``u_LPS = F u_RAS``; see :mod:`omnireg.io._convert`.
* A linear transform is a homogeneous ``(D+1, D+1)`` float64 matrix ``M`` with ``T(x) = M[:D, :D] x
  + M[:D, D]``. It is written as ITK ``AffineTransform_double_D_D`` with centre (FixedParameters) 0;
  any ITK linear kind (Euler, Versor, Similarity, Translation, Scale, MatrixOffsetTransformBase, ...)
  is read.
* A displacement field ``u`` is a ``(D, *S)`` tensor on a :class:`~omnireg.core.Grid` (the fixed
  grid) whose component ``c`` is the displacement in mm along world RAS axis ``c`` (x, y, z), so
  ``T(x) = x + u(x)``. On disk it is an ITK displacement field: a vector image with LPS
  components, in NIfTI with ITK's layout ``(X, Y, Z, 1, D)`` and intent ``vector`` (1007), exactly
  what ``sitk.DisplacementFieldTransform`` and ANTs apply. NIfTI files with intent ``displacement
  vector`` (1006) hold RAS components by the NIfTI standard, and ITK converts them on reading; so
  does :func:`read_displacement_field`.
* Fields are written compactly: in float32 by default (``precision``, :class:`FieldPrecision`; a
  displacement in mm needs no more, float32 is exact to about 1e-5 mm over a head), compressed
  (``.nii.gz`` by gzip, ``.nrrd``/``.mha`` with SimpleITK's compression, ``.h5`` with HDF5's gzip and
  shuffle filters, see :mod:`omnireg.io._itk_h5`), and on the grid they are given on (ITK interpolates
  them linearly, so a field optimised on a coarse grid is stored on that grid, not resampled).
* Lists of transforms are ordered like ``antsApplyTransforms -t`` and ITK's ``CompositeTransform``:
  **the last item is applied to fixed-space points first**, i.e. ``[A, B]`` means ``A(B(x))``.

Items are :class:`LinearItem` ``("linear", matrix)`` and :class:`DisplacementItem`
``("displacement", field, grid)``, named tuples whose ``ndim`` property gives the dimension; the
writers also accept plain tuples of those shapes.
"""

from __future__ import annotations

import logging
import os
import re
from enum import Enum
from typing import NamedTuple, Sequence, Union

import numpy as np
import scipy.io
import SimpleITK as sitk
import torch

from ..core import Grid, as_enum
from ..core.arrays import as_homogeneous_matrix
from ._convert import (
    array_from_sitk,
    convert_affine_ras_lps,
    grid_from_sitk,
    lps_flip,
    numpy_from_tensor,
    sitk_from_array,
)
from ..core.files import as_path, atomic_output, check_input_file, extension
from ._itk_h5 import write_itk_h5
from .images import NIFTI_EXTENSIONS, read_with_sitk, sitk_message, read_nifti, write_nifti

__all__ = [
    "TransformKind",
    "FieldPrecision",
    "LinearItem",
    "DisplacementItem",
    "read_linear_transform",
    "write_linear_transform",
    "read_displacement_field",
    "write_displacement_field",
    "read_composite_h5",
    "write_composite_h5",
    "read_transform_file",
]

logger = logging.getLogger(__name__)

LINEAR_EXTENSIONS = (".tfm", ".txt", ".mat")
COMPOSITE_EXTENSIONS = (".h5", ".hdf5")
FIELD_EXTENSIONS = NIFTI_EXTENSIONS + (".nrrd", ".nhdr", ".mha", ".mhd")

_NIFTI_INTENT_DISPVECT = 1006
_NIFTI_INTENT_VECTOR = 1007
_MAT_NAME = re.compile(r"^(AffineTransform|MatrixOffsetTransformBase)_(double|float)_(\d)_(\d)$")


class TransformKind(str, Enum):
    """Kinds of transform items in transform files."""

    LINEAR = "linear"
    DISPLACEMENT = "displacement"


class FieldPrecision(str, Enum):
    """Floating-point type in which displacement fields are stored in files (default ``float32``)."""

    FLOAT32 = "float32"
    FLOAT64 = "float64"


def _stored(arr: np.ndarray, precision) -> np.ndarray:
    """``arr`` in the storage precision (``precision`` is checked and named in errors)."""
    kind = as_enum(precision, FieldPrecision, "precision")
    return arr.astype(np.float32 if kind is FieldPrecision.FLOAT32 else np.float64, copy=False)


class LinearItem(NamedTuple):
    """A linear transform read from or written to a file: ``("linear", matrix)``.

    ``matrix``: ``(D+1, D+1)`` float64 NumPy array mapping fixed world RAS mm to moving world RAS mm.
    """

    kind: TransformKind
    matrix: np.ndarray

    @property
    def ndim(self) -> int:
        """Spatial dimension D."""
        return int(self.matrix.shape[0]) - 1


class DisplacementItem(NamedTuple):
    """A displacement field: ``("displacement", field, grid)``.

    ``field``: tensor ``(D, *S)``, displacement in mm along world RAS axes (x, y, z) on ``grid`` (the
    fixed grid): ``T(x) = x + field(x)`` maps fixed to moving world points.
    """

    kind: TransformKind
    field: torch.Tensor
    grid: Grid

    @property
    def ndim(self) -> int:
        """Spatial dimension D."""
        return self.grid.ndim


TransformItem = Union[LinearItem, DisplacementItem]


# ---------------------------------------------------------------------------------------------- checks
def _check_field(field, grid, name: str) -> np.ndarray:
    if not isinstance(grid, Grid):
        raise TypeError(f"grid: expected a Grid, got {type(grid).__name__}")
    if grid.ndim not in (2, 3):
        raise ValueError(f"grid: expected a 2D or 3D grid, got {grid.ndim}D")
    if isinstance(field, torch.Tensor):
        arr = numpy_from_tensor(field)
    elif isinstance(field, np.ndarray):
        arr = field
    else:
        raise TypeError(f"{name}: expected a tensor or array of shape (D, *S), got {type(field).__name__}")
    expected = (grid.ndim, *grid.shape)
    if tuple(arr.shape) != expected:
        raise ValueError(f"{name}: expected shape {expected} (D, *S) to match the grid, got {tuple(arr.shape)}")
    if arr.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point field, got dtype {arr.dtype}")
    if arr.dtype != np.float64:
        arr = arr.astype(np.float32)
    return arr


def _flip_components(field: np.ndarray) -> np.ndarray:
    """RAS <-> LPS components of a ``(D, *S)`` world vector field (an involution)."""
    d = field.shape[0]
    return field * lps_flip(d).astype(field.dtype).reshape(d, *([1] * (field.ndim - 1)))


def _normalize_item(item, index: int) -> TransformItem:
    if not isinstance(item, tuple) or len(item) < 2:
        raise TypeError(
            f"items[{index}]: expected ('linear', matrix) or ('displacement', field, grid), got {type(item).__name__}"
        )
    kind = as_enum(item[0], TransformKind, f"items[{index}][0]")
    if kind is TransformKind.LINEAR:
        if len(item) != 2:
            raise ValueError(f"items[{index}]: expected ('linear', matrix), got a tuple of {len(item)}")
        return LinearItem(kind, as_homogeneous_matrix(item[1], f"items[{index}] matrix"))
    if len(item) != 3:
        raise ValueError(f"items[{index}]: expected ('displacement', field, grid), got a tuple of {len(item)}")
    arr = _check_field(item[1], item[2], f"items[{index}] field")
    return DisplacementItem(kind, torch.from_numpy(arr), item[2])


# ---------------------------------------------------------------------------------------------- linear
def write_linear_transform(matrix_ras, path: str | os.PathLike, *, force: bool = False) -> None:
    """Write a linear transform as an ITK transform file (``.tfm``/``.txt`` text or ``.mat`` MATLAB v4).

    The file holds ``AffineTransform_double_D_D`` with ``Parameters`` = the LPS matrix (row-major)
    then the LPS translation, and ``FixedParameters`` (the centre) = 0, so that ITK's
    ``TransformPoint(p_LPS) = LPS(M @ RAS(p))``. ``.mat`` is written like ITK's MatlabTransformIO
    (variables ``AffineTransform_double_D_D`` ``(D*D+D, 1)`` and ``fixed`` ``(D, 1)``), readable by
    SimpleITK and ANTs. Atomic; refuses to overwrite unless ``force``.

    Args:
        matrix_ras: ``(D+1, D+1)`` homogeneous matrix (D = 2 or 3) mapping fixed world RAS mm to
            moving world RAS mm.
        path: destination ``.tfm``, ``.txt`` or ``.mat`` file.
        force: replace an existing file.

    Raises:
        TypeError, ValueError: bad matrix or extension.
        FileExistsError: ``path`` exists and ``force`` is false.
    """
    m = as_homogeneous_matrix(matrix_ras, "matrix_ras")
    p = as_path(path)
    ext = extension(p)
    if ext not in LINEAR_EXTENSIONS:
        raise ValueError(f"path: expected one of the extensions {', '.join(LINEAR_EXTENSIONS)}, got {p.name!r}")
    d = m.shape[0] - 1
    lps = convert_affine_ras_lps(m)
    params = np.concatenate([lps[:d, :d].reshape(-1), lps[:d, d]]) + 0.0  # + 0.0 turns -0.0 into 0.0
    name = f"AffineTransform_double_{d}_{d}"
    with atomic_output(p, force=force) as tmp:
        if ext == ".mat":
            scipy.io.savemat(str(tmp), {name: params.reshape(-1, 1), "fixed": np.zeros((d, 1))}, format="4")
        else:
            text = (
                "#Insight Transform File V1.0\n#Transform 0\n"
                f"Transform: {name}\n"
                f"Parameters: {' '.join(repr(float(v)) for v in params)}\n"
                f"FixedParameters: {' '.join(['0'] * d)}\n"
            )
            tmp.write_text(text)


def read_linear_transform(path: str | os.PathLike) -> np.ndarray:
    """Read a linear ITK transform file (``.tfm``, ``.txt``, ``.mat``; also a linear-only ``.h5``).

    Any ITK linear kind is accepted; a file holding several linear transforms (a composite) is
    multiplied out in ITK's order (``[A, B]`` gives ``A @ B``).

    Args:
        path: the transform file.

    Returns:
        ``(D+1, D+1)`` float64 matrix mapping fixed world RAS mm to moving world RAS mm
        (``x_moving = M[:D, :D] @ x_fixed + M[:D, D]``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable file, or one holding a non-linear transform.
    """
    p = as_path(path)
    items = read_transform_file(p)
    result = None
    for item in items:
        if item.kind is not TransformKind.LINEAR:
            raise ValueError(
                f"cannot read a linear transform from {p}: it holds a {item.kind.value} transform; "
                "use read_transform_file"
            )
        result = item.matrix if result is None else result @ item.matrix
    if result is None or len({it.ndim for it in items}) != 1:
        raise ValueError(f"cannot read a linear transform from {p}: no transform or mixed dimensions")
    return result


def _read_mat(p) -> list[TransformItem]:
    """Parse an ITK/ANTs MATLAB v4 ``.mat`` affine with scipy; other kinds go through SimpleITK."""
    try:
        content = scipy.io.loadmat(str(p))
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError on bad files
        raise ValueError(f"cannot read transform file {p}: {exc}") from exc
    names = [k for k in content if _MAT_NAME.match(k)]
    if len(names) != 1:
        return _read_with_sitk_transform(p)
    _, _, d_in, d_out = _MAT_NAME.match(names[0]).groups()
    d = int(d_in)
    params = np.asarray(content[names[0]], dtype=np.float64).reshape(-1)
    fixed = np.asarray(content.get("fixed", np.zeros(d)), dtype=np.float64).reshape(-1)
    if d not in (2, 3) or int(d_out) != d or params.size != d * d + d or fixed.size != d:
        raise ValueError(
            f"cannot read transform file {p}: {names[0]} with {params.size} parameters and {fixed.size} "
            "fixed parameters is not a 2D/3D affine transform"
        )
    a = params[: d * d].reshape(d, d)
    offset = params[d * d :] + fixed - a @ fixed  # T(x) = A (x - c) + c + t
    lps = np.eye(d + 1)
    lps[:d, :d] = a
    lps[:d, d] = offset
    return [LinearItem(TransformKind.LINEAR, convert_affine_ras_lps(lps))]


# ---------------------------------------------------------------------------------------------- fields
def write_displacement_field(
    field_ras_mm,
    grid: Grid,
    path: str | os.PathLike,
    *,
    precision: FieldPrecision | str = FieldPrecision.FLOAT32,
    force: bool = False,
) -> None:
    """Write an ITK displacement field (fixed -> moving, world mm, LPS components).

    NIfTI gets ITK's layout ``(X, Y, Z, 1, D)`` (2D: ``(X, Y, 1, 1, 2)``) with intent ``vector``,
    sform and qform set to the grid (``.nii.gz`` is gzip-compressed); ``.nrrd``/``.mha``/``.mhd`` are
    written compressed with SimpleITK as a vector image. ``sitk.DisplacementFieldTransform(
    sitk.ReadImage(path))`` (and ANTs) then maps an LPS point ``p`` to ``p + u_LPS(p)``, interpolating
    the field linearly between its voxel centres. The field is stored on ``grid`` as given (a coarse
    grid stays coarse) in ``precision``.

    Args:
        field_ras_mm: ``(D, *S)`` tensor or array; component ``c`` is the displacement in mm along
            world RAS axis ``c``; ``T(x) = x + u(x)`` maps fixed to moving world points.
        grid: the grid (in the fixed space) on which ``u`` is sampled (``S = grid.shape``); any spacing.
        path: destination (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``).
        precision: ``"float32"`` (default) or ``"float64"``: the stored type.
        force: replace an existing file.

    Shape:
        ``field_ras_mm``: ``(D, *S)`` with ``S = grid.shape``, D = 2 or 3; in the file ``(X, Y, Z, 1, D)``
        for NIfTI, a D-component vector image otherwise.

    Raises:
        TypeError, ValueError: bad field, grid or extension.
        FileExistsError: ``path`` exists and ``force`` is false.
    """
    arr = _check_field(field_ras_mm, grid, "field_ras_mm")
    p = as_path(path)
    ext = extension(p)
    if ext not in FIELD_EXTENSIONS:
        raise ValueError(f"path: expected one of the extensions {', '.join(FIELD_EXTENSIONS)}, got {p.name!r}")
    lps = _stored(_flip_components(arr), precision)
    with atomic_output(p, force=force) as tmp:
        if ext in NIFTI_EXTENSIONS:
            write_nifti(lps, grid, tmp, intent=_NIFTI_INTENT_VECTOR)
        else:
            try:
                sitk.WriteImage(sitk_from_array(lps, grid), str(tmp), useCompression=True)
            except RuntimeError as exc:
                raise ValueError(f"cannot write displacement field {p}: {sitk_message(exc)}") from exc


def read_displacement_field(path: str | os.PathLike) -> tuple[torch.Tensor, Grid]:
    """Read an ITK displacement field (written by omnireg, ANTs, SimpleITK, ...).

    Vector components are LPS (ITK's convention) and converted to RAS, except in NIfTI files with
    intent ``displacement vector`` (1006), whose components are RAS (as ITK also assumes).

    Args:
        path: ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd`` vector image.

    Returns:
        ``(field, grid)``: ``field`` ``(D, *S)`` float32/float64 tensor, displacement in mm along world
        RAS axes, ``T(x) = x + field(x)`` mapping fixed to moving world points; ``grid`` the fixed grid.

    Shape:
        ``field``: ``(D, *S)`` with ``S = grid.shape``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable file, unknown extension, or not a D-component vector image.
    """
    p = as_path(path)
    check_input_file(p, "displacement field file")
    ext = extension(p)
    intent = None
    if ext in NIFTI_EXTENSIONS:
        image, header = read_nifti(p)
        intent = int(header["intent_code"])
    elif ext in FIELD_EXTENSIONS:
        image = read_with_sitk(p)
    else:
        raise ValueError(
            f"cannot read displacement field {p}: unknown extension {ext!r}, "
            f"expected one of {', '.join(FIELD_EXTENSIONS)}"
        )
    d = image.ndim
    if image.channels != d:
        raise ValueError(
            f"cannot read displacement field {p}: expected a {d}D vector image with {d} components per voxel, "
            f"got {image.channels}"
        )
    data = image.numpy()
    if data.dtype.kind != "f":
        data = data.astype(np.float32)
    if intent != _NIFTI_INTENT_DISPVECT:
        data = _flip_components(data)
    return torch.from_numpy(np.ascontiguousarray(data)), image.grid


def _field_item_from_sitk_image(img: sitk.Image, source) -> DisplacementItem:
    grid = grid_from_sitk(img, source)
    lps = array_from_sitk(img).astype(np.float64)
    return DisplacementItem(TransformKind.DISPLACEMENT, torch.from_numpy(_flip_components(lps)), grid)


# ---------------------------------------------------------------------------------------------- composite
def write_composite_h5(
    items: Sequence,
    path: str | os.PathLike,
    *,
    precision: FieldPrecision | str = FieldPrecision.FLOAT32,
    force: bool = False,
) -> None:
    """Write a list of transforms as one ITK composite transform ``.h5`` (ITK's HDF5 layout, with h5py).

    Order: items are listed like ``antsApplyTransforms -t`` / ITK ``CompositeTransform``: **the last
    item is applied to fixed-space points first**, ``[A, B]`` maps ``x`` to ``A(B(x))``. Linear items
    become ``AffineTransform_double_D_D`` (LPS, float64), displacement items
    ``DisplacementFieldTransform_float_D_D`` (``_double_`` with ``precision="float64"``): the field on
    its own grid (its geometry in the fixed parameters; ITK interpolates it linearly), LPS components,
    gzip-compressed. SimpleITK's ``ReadTransform``, ANTs and 3D Slicer read the file
    (:mod:`omnireg.io._itk_h5`). Atomic; refuses to overwrite unless ``force``.

    Args:
        items: non-empty sequence of ``("linear", matrix_ras)`` and ``("displacement", field_ras_mm,
            grid)`` (or :class:`LinearItem` / :class:`DisplacementItem`), all of one dimension.
        path: destination ``.h5`` / ``.hdf5`` file.
        precision: ``"float32"`` (default) or ``"float64"``: the stored type of displacement fields.
        force: replace an existing file.

    Raises:
        TypeError, ValueError: bad items, mixed dimensions or extension.
        FileExistsError: ``path`` exists and ``force`` is false.
    """
    p = as_path(path)
    ext = extension(p)
    if ext not in COMPOSITE_EXTENSIONS:
        raise ValueError(f"path: expected one of the extensions {', '.join(COMPOSITE_EXTENSIONS)}, got {p.name!r}")
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or len(items) == 0:
        raise ValueError(f"items: expected a non-empty list of transform items, got {items!r:.80}")
    normalized = [_normalize_item(item, i) for i, item in enumerate(items)]
    dims = [it.ndim for it in normalized]
    if len(set(dims)) != 1:
        raise ValueError(f"items: expected transforms of one dimension, got dimensions {dims}")
    as_enum(precision, FieldPrecision, "precision")
    members = [
        ("linear", it.matrix) if it.kind is TransformKind.LINEAR
        else ("displacement", _stored(_flip_components(it.field.numpy()), precision), it.grid)
        for it in normalized
    ]
    with atomic_output(p, force=force) as tmp:
        try:
            write_itk_h5(members, tmp)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot write transform file {p}: {exc}") from exc


def read_composite_h5(path: str | os.PathLike, *, bspline_oversampling: int = 4) -> list[TransformItem]:
    """Read an ITK ``.h5`` transform file (composite or single) into a list of items.

    Order as in :func:`write_composite_h5`: the last item is applied to fixed-space points first.
    Nested composites are flattened. A ``BSplineTransform`` is converted to a displacement field
    sampled on its own domain (see :func:`read_transform_file`).

    Args:
        path: ``.h5`` / ``.hdf5`` file.
        bspline_oversampling: samples per B-spline mesh cell along each axis for B-spline transforms.

    Returns:
        list of :class:`LinearItem` and :class:`DisplacementItem` (fields as float64).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable file or an unsupported transform kind.
    """
    p = as_path(path)
    check_input_file(p, "transform file")
    return _read_with_sitk_transform(p, bspline_oversampling=bspline_oversampling)


def _read_with_sitk_transform(p, *, bspline_oversampling: int = 4) -> list[TransformItem]:
    try:
        tx = sitk.ReadTransform(str(p))
    except RuntimeError as exc:
        raise ValueError(f"cannot read transform file {p}: {sitk_message(exc)}") from exc
    if tx.GetName() == "CompositeTransform":
        composite = tx.Downcast()
        composite.FlattenTransform()
        leaves = [composite.GetNthTransform(i).Downcast() for i in range(composite.GetNumberOfTransforms())]
    else:
        leaves = [tx.Downcast()]
    return [_item_from_sitk(t, p, bspline_oversampling) for t in leaves]


def _item_from_sitk(t: sitk.Transform, source, oversampling: int) -> TransformItem:
    """Convert one (non-composite) SimpleITK transform; kinds SimpleITK cannot wrap arrive as composites."""
    name = t.GetName()
    d = t.GetDimension()
    if d not in (2, 3):
        raise ValueError(f"cannot read transform file {source}: expected a 2D or 3D transform, got {d}D {name}")
    if name == "DisplacementFieldTransform":
        return _field_item_from_sitk_image(t.GetDisplacementField(), source)
    if name == "BSplineTransform":
        return _bspline_to_field(t, source, oversampling)
    if not t.IsLinear():
        raise ValueError(f"cannot read transform file {source}: unsupported non-linear transform kind {name}")
    lps = np.eye(d + 1)
    if all(hasattr(t, m) for m in ("GetMatrix", "GetCenter", "GetTranslation")):
        a = np.asarray(t.GetMatrix(), dtype=np.float64).reshape(d, d)
        c = np.asarray(t.GetCenter(), dtype=np.float64)
        lps[:d, :d] = a
        lps[:d, d] = np.asarray(t.GetTranslation(), dtype=np.float64) + c - a @ c
    elif name == "TranslationTransform":
        lps[:d, d] = t.GetOffset()
    else:  # any other linear kind (Scale, Identity, MatrixOffsetTransformBase, Rigid2D): probe it
        origin = np.asarray(t.TransformPoint((0.0,) * d))
        cols = [np.asarray(t.TransformPoint(tuple(float(v) for v in e))) - origin for e in np.eye(d)]
        lps[:d, :d] = np.stack(cols, axis=1)
        lps[:d, d] = origin
        q = np.array([13.7, -21.3, 8.9][:d])
        if not np.allclose(t.TransformPoint(tuple(q)), lps[:d, :d] @ q + origin, atol=1e-6 * (1 + np.abs(q).max())):
            raise ValueError(f"cannot read transform file {source}: {name} claims to be linear but is not affine")
    return LinearItem(TransformKind.LINEAR, convert_affine_ras_lps(lps))


def _bspline_to_field(t: sitk.BSplineTransform, source, oversampling: int) -> DisplacementItem:
    """Sample an ITK B-spline transform as a displacement field on its transform domain.

    The field is sampled at the centres of ``oversampling`` cells per mesh cell and axis, so every
    sample lies inside the domain (outside it ITK's B-spline is the identity).
    """
    if not isinstance(oversampling, int) or oversampling < 1:
        raise ValueError(f"bspline_oversampling: expected a positive int, got {oversampling!r}")
    d = t.GetDimension()
    mesh = np.asarray(t.GetTransformDomainMeshSize(), dtype=np.int64)
    extent = np.asarray(t.GetTransformDomainPhysicalDimensions(), dtype=np.float64)
    direction = np.asarray(t.GetTransformDomainDirection(), dtype=np.float64).reshape(d, d)
    size = mesh * oversampling
    spacing = extent / size
    origin = np.asarray(t.GetTransformDomainOrigin(), dtype=np.float64) + direction @ (spacing / 2)
    try:
        img = sitk.TransformToDisplacementField(
            t,
            sitk.sitkVectorFloat64,
            [int(s) for s in size],
            origin.tolist(),
            spacing.tolist(),
            direction.reshape(-1).tolist(),
        )
    except RuntimeError as exc:
        raise ValueError(f"cannot read transform file {source}: B-spline sampling failed: {sitk_message(exc)}") from exc
    logger.info("%s: B-spline transform sampled as a displacement field of shape %s", source, tuple(size.tolist()))
    return _field_item_from_sitk_image(img, source)


# ---------------------------------------------------------------------------------------------- dispatch
def read_transform_file(path: str | os.PathLike, *, bspline_oversampling: int = 4) -> list[TransformItem]:
    """Read any supported transform file into a list of items, by extension.

    ``.tfm``/``.txt`` (ITK text; may hold several transforms or a B-spline), ``.mat`` (ITK/ANTs
    MATLAB v4 affine), ``.h5``/``.hdf5`` (ITK composite), and ``.nii``/``.nii.gz``/``.nrrd``/
    ``.nhdr``/``.mha``/``.mhd`` (an ITK displacement field). B-spline transforms become
    displacement fields sampled at ``bspline_oversampling`` points per mesh cell and axis.

    Order: like ``antsApplyTransforms -t`` / ITK ``CompositeTransform``: the last item is applied to
    fixed-space points first. Every item maps fixed world RAS to moving world RAS; ``item.ndim``
    gives its dimension, so callers can check that it matches their images.

    Args:
        path: the transform file.
        bspline_oversampling: samples per B-spline mesh cell along each axis.

    Returns:
        list of :class:`LinearItem` / :class:`DisplacementItem`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown extension, unreadable file or unsupported transform kind (naming the file).
    """
    p = as_path(path)
    check_input_file(p, "transform file")
    ext = extension(p)
    if ext == ".mat":
        return _read_mat(p)
    if ext in (".tfm", ".txt") + COMPOSITE_EXTENSIONS:
        return _read_with_sitk_transform(p, bspline_oversampling=bspline_oversampling)
    if ext in FIELD_EXTENSIONS:
        field, grid = read_displacement_field(p)
        return [DisplacementItem(TransformKind.DISPLACEMENT, field, grid)]
    known = LINEAR_EXTENSIONS + COMPOSITE_EXTENSIONS + FIELD_EXTENSIONS
    raise ValueError(f"cannot read transform file {p}: unknown extension {ext!r}, expected one of {', '.join(known)}")
