"""Reading and writing images: NIfTI, NRRD, MetaImage, DICOM series and 2D raster formats.

Convention:
    Every image is returned as a :class:`~omnireg.core.Image` with data ``(C, *S)`` in tensor-axis
    order ``(i, j, k)`` on a :class:`~omnireg.core.Grid` whose world space is **RAS+ mm**.

    * NIfTI (``.nii``, ``.nii.gz``) is read with nibabel from the best affine (nibabel's
      ``get_best_affine``: the sform when ``sform_code > 0``, else the qform, else the pixdim
      scaling). NIfTI world space is RAS, so nothing is flipped.
    * Everything else goes through SimpleITK, whose physical space is LPS; it is converted with
      ``world_RAS = diag(-1, -1, 1) world_LPS`` (3D) and ``diag(-1, -1)`` (2D, ITK's 2D physical
      space being the first two LPS axes, as ITK reads a 2D NIfTI). The same image therefore gives
      the same grid whether read from ``.nii`` or from ``.mha``/``.nrrd``.
    * 2D raster files (PNG, JPEG, TIFF, BMP) store no usable geometry: they get spacing 1 (or
      ``spacing=``), origin 0 and the identity LPS direction, i.e. RAS direction ``diag(-1, -1)``,
      exactly the grid ITK (and so ANTs) gives them. RGB(A) pixels become 3 (4) channels.

    Integer data stay integers (label maps); uint16 becomes int32 and uint32/uint64 int64, because
    torch supports few wide unsigned types. Float data stay float32, float64 stays float64.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch

from ..core import Grid, Image
from ._convert import array_from_sitk, grid_from_sitk, lps_flip, numpy_from_tensor, sitk_from_array, tensor_from_numpy
from ..core.files import as_path, atomic_output, check_input_file, extension

__all__ = ["load_image", "save_image", "image_info"]

logger = logging.getLogger(__name__)

NIFTI_EXTENSIONS = (".nii", ".nii.gz")
RASTER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SITK_WRITE_EXTENSIONS = (".nrrd", ".nhdr", ".mha", ".mhd") + RASTER_EXTENSIONS
WRITE_EXTENSIONS = NIFTI_EXTENSIONS + SITK_WRITE_EXTENSIONS

_NIFTI_XFORM_SCANNER_ANAT = 1
_NIFTI_INTENT_LABEL = 1002
_NIFTI_INTENT_VECTOR = 1007


# ---------------------------------------------------------------------------------------------- loading
def load_image(path: str | os.PathLike, *, spacing: float | Sequence[float] | None = None) -> Image:
    """Read an image file (or a DICOM series folder) into an :class:`~omnireg.core.Image` in RAS mm.

    Supported: NIfTI (``.nii``, ``.nii.gz``; 2D, 3D, 4D/5D multi-channel and ITK vector images with
    shape ``(X, Y, Z, 1, C)``), NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``, ``.mhd``), a folder
    holding a DICOM series (the largest series when there are several; logged), a single DICOM file,
    and 2D PNG/JPEG/TIFF/BMP. See the module docstring for the RAS/LPS convention.

    A NIfTI file of shape ``(X, Y)`` or ``(X, Y, 1)`` whose slice lies in the x-y plane of world
    space is read as a 2D image (the upper-left 2x2 block and the first two translation components of
    the affine; the z position is dropped); a single slice tilted out of that plane stays 3D.

    Args:
        path: image file or DICOM folder.
        spacing: voxel size in mm per tensor axis (or one value for all), replacing the file's
            spacing (origin and direction kept). Meant for raster formats, which store none.

    Returns:
        The image; ``data`` has shape ``(C, *S)``, integer dtype for label maps.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file cannot be read ("cannot read image PATH: reason"), for instance a
            corrupt file, an unsupported format, or a sheared (non-orthogonal) voxel-to-world affine.
    """
    p = as_path(path)
    check_input_file(p, "image file", allow_dir=True)
    if p.is_dir():
        image = _read_dicom_series(p)
    elif extension(p) in NIFTI_EXTENSIONS:
        image = read_nifti(p)[0]
    else:
        image = read_with_sitk(p)
        if extension(p) in RASTER_EXTENSIONS:
            d = image.ndim
            image = Image(image.data, Grid(image.grid.shape, None, None, np.diag(lps_flip(d))))
    if spacing is not None:
        values = _check_spacing(spacing, image.ndim)
        logger.info("%s: using spacing %s mm instead of %s", p, values, image.grid.spacing)
        g = image.grid
        image = Image(image.data, Grid(g.shape, values, g.origin, g.direction))
    logger.debug("read %s: %r", p, image)
    return image


def _check_spacing(spacing: float | Sequence[float], ndim: int) -> tuple[float, ...]:
    arr = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, ndim)
    if arr.size != ndim or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"spacing: expected one or {ndim} positive values, got {spacing!r}")
    return tuple(float(v) for v in arr)


def read_nifti(path) -> tuple[Image, nib.Nifti1Header]:
    """Read a NIfTI file with nibabel; return the image and the header (private to :mod:`omnireg.io`)."""
    try:
        nii = nib.load(str(path))
        if not isinstance(nii, (nib.Nifti1Image, nib.Nifti2Image)):
            raise ValueError(f"not a NIfTI image ({type(nii).__name__})")
        affine = np.asarray(nii.header.get_best_affine(), dtype=np.float64)
        raw = np.asanyarray(nii.dataobj.get_unscaled())
        slope, inter = float(nii.dataobj.slope), float(nii.dataobj.inter)
    except Exception as exc:  # nibabel raises many kinds (ImageFileError, EOFError, OSError, zlib.error)
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    data = tensor_from_numpy(raw, path).numpy()  # RGB(A) pixels gain a trailing channel axis
    if (slope, inter) != (1.0, 0.0):
        ftype = np.float64 if data.dtype == np.float64 else np.float32
        data = (data.astype(ftype) * ftype(slope) + ftype(inter)).astype(ftype)
    spatial = (tuple(raw.shape) + (1, 1, 1))[:3]
    # axes after the third (time, ITK's vector axis, RGB components) are all trailing: channels
    data = data.reshape(*spatial, -1)
    lin = affine[:3, :3]
    in_plane = np.abs(lin[2, :2]).max() <= 1e-6 * max(np.linalg.norm(lin[:, :2], axis=0).max(), 1e-12)
    if spatial[2] == 1 and in_plane:
        d = 2
        world_from_voxel = np.eye(3)
        world_from_voxel[:2, :2] = lin[:2, :2]
        world_from_voxel[:2, 2] = affine[:2, 3]
        data = data[:, :, 0, :]
    else:
        d = 3
        world_from_voxel = affine
        if spatial[2] == 1:
            logger.info("%s: a single slice tilted out of the x-y plane; read as a 3D image with one slice", path)
    grid = _grid_from_affine(spatial[:d], world_from_voxel, path)
    tensor = torch.from_numpy(np.ascontiguousarray(np.moveaxis(data, -1, 0)))
    return Image(tensor, grid), nii.header


def _grid_from_affine(shape, world_from_voxel: np.ndarray, path) -> Grid:
    d = len(shape)
    lin = world_from_voxel[:d, :d]
    norms = np.linalg.norm(lin, axis=0)
    if np.any(norms <= 0) or not np.all(np.isfinite(world_from_voxel)):
        raise ValueError(f"cannot read image {path}: its voxel-to-world affine is degenerate:\n{world_from_voxel}")
    cosines = (lin / norms).T @ (lin / norms)
    if not np.allclose(cosines, np.eye(d), atol=1e-4):
        raise ValueError(
            f"cannot read image {path}: its voxel-to-world affine is sheared (voxel axes not orthogonal, "
            f"largest cosine {np.abs(cosines - np.eye(d)).max():.3g}); omnireg grids need orthogonal axes, "
            "resample the image onto an orthogonal grid first"
        )
    return Grid.from_affine(shape, world_from_voxel)


def sitk_message(exc: Exception) -> str:
    """The informative line of a SimpleITK exception."""
    text = str(exc)
    for marker in ("sitk::ERROR:", "ERROR:", "Description:"):
        if marker in text:
            return text.split(marker, 1)[1].strip().splitlines()[0].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def read_with_sitk(path) -> Image:
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"cannot read image {path}: {sitk_message(exc)}") from exc
    return image_from_sitk(img, path)


def image_from_sitk(img: sitk.Image, source: object) -> Image:
    """An omnireg (RAS) image from a SimpleITK (LPS) image; ``source`` names it in errors."""
    grid = grid_from_sitk(img, source)
    return Image(tensor_from_numpy(array_from_sitk(img), source), grid)


def _read_dicom_series(folder) -> Image:
    reader = sitk.ImageSeriesReader()
    try:
        ids = sorted(reader.GetGDCMSeriesIDs(str(folder)))
        if not ids:
            raise ValueError(f"cannot read image {folder}: no DICOM series found in the folder")
        files = {sid: reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in ids}
        best = max(ids, key=lambda sid: len(files[sid]))
        if len(ids) > 1:
            logger.info(
                "%s holds %d DICOM series; reading the largest, %s (%d files)", folder, len(ids), best, len(files[best])
            )
        reader.SetFileNames(files[best])
        img = reader.Execute()
    except RuntimeError as exc:
        raise ValueError(f"cannot read image {folder}: {sitk_message(exc)}") from exc
    return image_from_sitk(img, folder)


# ---------------------------------------------------------------------------------------------- saving
def save_image(image: Image, path: str | os.PathLike, *, force: bool = False) -> None:
    """Write an image, choosing the format by extension; atomic and non-clobbering.

    NIfTI (``.nii``, ``.nii.gz``) is written with nibabel, the RAS affine stored as both sform and
    qform (code 1, scanner), intent ``label`` for single-channel integer data and ITK's vector layout
    ``(X, Y, Z, 1, C)`` with intent ``vector`` for several channels (2D: ``(X, Y, 1, 1, C)``).
    NRRD, MetaImage and the raster formats are written with SimpleITK in LPS (see the module
    docstring). Raster formats store no geometry (a warning is logged if the grid differs from the
    one :func:`load_image` assigns) and take only the pixel types the format allows (e.g. uint8).
    int64 data are stored as int32 in NIfTI when the values fit. Note that :func:`load_image` reads a
    NIfTI of shape ``(X, Y, 1)`` whose slice lies in the x-y plane as 2D, so a 3D grid with a single
    such slice comes back as a 2D grid from NIfTI (NRRD and MetaImage keep it 3D).

    The file is written to a temporary folder beside ``path`` and moved into place with
    :func:`os.replace`, so a failed write leaves no partial file.

    Args:
        image: the image to write (2D or 3D).
        path: destination file; its extension picks the format.
        force: replace an existing file.

    Raises:
        TypeError: ``image`` is not an :class:`~omnireg.core.Image`.
        FileExistsError: ``path`` exists and ``force`` is false.
        ValueError: unsupported extension, dimension or pixel type ("cannot write image PATH: reason").
    """
    if not isinstance(image, Image):
        raise TypeError(f"image: expected an omnireg Image, got {type(image).__name__}")
    p = as_path(path)
    ext = extension(p)
    if ext not in WRITE_EXTENSIONS:
        raise ValueError(f"path: expected one of the extensions {', '.join(WRITE_EXTENSIONS)}, got {p.name!r}")
    if image.ndim not in (2, 3):
        raise ValueError(f"image: expected a 2D or 3D image, got {image.ndim}D")
    array = numpy_from_tensor(image.data)
    if ext in RASTER_EXTENSIONS:
        default = Grid(image.grid.shape, None, None, np.diag(lps_flip(image.ndim)))
        if not image.grid.same_as(default):
            logger.warning("%s: %s files store no geometry; the grid %r is not saved", p, ext, image.grid)
    with atomic_output(p, force=force) as tmp:
        try:
            if ext in NIFTI_EXTENSIONS:
                write_nifti(array, image.grid, tmp)
            else:
                sitk.WriteImage(sitk_from_array(array, image.grid), str(tmp))
        except RuntimeError as exc:
            raise ValueError(f"cannot write image {p}: {sitk_message(exc)}") from exc
        except (nib.spatialimages.ImageFileError, OSError) as exc:
            raise ValueError(f"cannot write image {p}: {exc}") from exc


def write_nifti(array: np.ndarray, grid: Grid, path, *, intent: int | None = None) -> None:
    """Write data ``(C, *S)`` on ``grid`` as NIfTI-1 (private to :mod:`omnireg.io`).

    ``intent``: NIfTI intent code; by default ``label`` for one integer channel, ``vector`` for
    several channels (ITK's layout ``(X, Y, Z, 1, C)``), none otherwise.
    """
    d = grid.ndim
    c = array.shape[0]
    if c == 1:
        data = array[0]
    else:
        data = np.moveaxis(array, 0, -1)
        spatial3 = tuple(grid.shape) + (1,) * (3 - d)
        data = data.reshape(*spatial3, 1, c)
    if data.dtype == np.int64 and (data.size == 0 or (data.min() >= -(2**31) and data.max() < 2**31)):
        data = data.astype(np.int32)
    affine = np.eye(4)
    affine[:d, :d] = grid.direction * np.asarray(grid.spacing)[None, :]
    affine[:d, 3] = grid.origin
    nii = nib.Nifti1Image(np.ascontiguousarray(data), affine, dtype=data.dtype)
    nii.set_sform(affine, code=_NIFTI_XFORM_SCANNER_ANAT)
    nii.set_qform(affine, code=_NIFTI_XFORM_SCANNER_ANAT)
    hdr = nii.header
    hdr.set_xyzt_units("mm", "sec")
    if intent is None:
        if c > 1:
            intent = _NIFTI_INTENT_VECTOR
        elif data.dtype.kind in "iub":
            intent = _NIFTI_INTENT_LABEL
    if intent is not None:
        hdr.set_intent(int(intent))
    nib.save(nii, str(path))


# ---------------------------------------------------------------------------------------------- info
def image_info(image: Image) -> dict:
    """A JSON-serialisable summary of an image (used by ``omnireg info``).

    Args:
        image: the image.

    Returns:
        dict with ``ndim``, ``shape`` (spatial), ``channels``, ``dtype``, ``spacing``, ``origin``
        (RAS mm), ``direction`` (rows of the RAS direction matrix, columns = tensor axes),
        ``orientation`` (e.g. ``"RAS"``), ``extent_mm``, and ``min``, ``max``, ``mean`` over all
        voxels and channels (``None`` for an empty image).

    Raises:
        TypeError: ``image`` is not an :class:`~omnireg.core.Image`.
    """
    if not isinstance(image, Image):
        raise TypeError(f"image: expected an omnireg Image, got {type(image).__name__}")
    g = image.grid
    data = image.data.detach()
    empty = data.numel() == 0
    values = data.to(torch.float64)
    return {
        "ndim": g.ndim,
        "shape": list(g.shape),
        "channels": image.channels,
        "dtype": str(image.dtype).replace("torch.", ""),
        "spacing": list(g.spacing),
        "origin": list(g.origin),
        "direction": g.direction.tolist(),
        "orientation": g.orientation_code(),
        "extent_mm": list(g.extent_mm()),
        "min": None if empty else float(values.min()),
        "max": None if empty else float(values.max()),
        "mean": None if empty else float(values.mean()),
    }
