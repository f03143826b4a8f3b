"""load_image / save_image / image_info: geometry round trips, dtypes, channels, nibabel vs SimpleITK, errors."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from omnireg.core import Grid, Image
from omnireg.io import image_info, load_image, save_image
from omnireg.io.images import read_with_sitk

EXTS = [".nii.gz", ".nrrd", ".mha"]


def _image(grid: Grid, channels: int = 1, dtype=torch.float32) -> Image:
    n = channels * grid.numel
    data = (torch.arange(n, dtype=torch.float64) * 0.37 - 3).reshape(channels, *grid.shape)
    if not dtype.is_floating_point:
        data = torch.arange(n).reshape(channels, *grid.shape) % 7 - (0 if dtype == torch.uint8 else 2)
    return Image(data.to(dtype), grid)


def _sitk_image(arr_kji: np.ndarray, spacing, origin_lps, direction_lps, vector=False) -> sitk.Image:
    img = sitk.GetImageFromArray(arr_kji, isVector=vector)
    img.SetSpacing(tuple(spacing))
    img.SetOrigin(tuple(origin_lps))
    img.SetDirection(tuple(np.asarray(direction_lps).reshape(-1)))
    return img


# ------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("ext", EXTS)
def test_geometry_and_data_round_trip_oblique_anisotropic(tmp_path, make_grid, ext, ndim):
    for seed in (1, 2):
        grid = make_grid(seed, ndim)
        img = _image(grid)
        path = tmp_path / f"img{seed}{ext}"
        save_image(img, path)
        back = load_image(path)
        assert back.ndim == ndim
        # NIfTI stores the affine in float32; NRRD / MetaImage in decimal text
        assert back.grid.same_as(grid, atol=1e-5), (back.grid, grid)
        assert back.dtype == torch.float32
        torch.testing.assert_close(back.data, img.data, rtol=0, atol=0)


@pytest.mark.parametrize("ext", EXTS)
def test_multichannel_round_trip_keeps_channels(tmp_path, make_grid, ext):
    for ndim in (2, 3):
        grid = make_grid(3, ndim)
        img = _image(grid, channels=3)
        path = tmp_path / f"mc{ndim}{ext}"
        save_image(img, path)
        back = load_image(path)
        assert back.channels == 3 and back.grid.same_as(grid, atol=1e-5)
        torch.testing.assert_close(back.data, img.data, rtol=0, atol=0)


def test_multichannel_nifti_uses_itk_vector_layout(tmp_path, make_grid):
    img = _image(make_grid(4, 3, shape=(3, 4, 5)), channels=2)
    save_image(img, tmp_path / "v.nii.gz")
    nii = nib.load(tmp_path / "v.nii.gz")
    assert nii.shape == (3, 4, 5, 1, 2)
    assert int(nii.header["intent_code"]) == 1007  # NIFTI_INTENT_VECTOR
    np.testing.assert_array_equal(np.asarray(nii.dataobj)[1, 2, 3, 0, :], img.data[:, 1, 2, 3].numpy())
    # SimpleITK sees a 3D image with vector pixels of 2 components
    s = sitk.ReadImage(str(tmp_path / "v.nii.gz"))
    assert s.GetDimension() == 3 and s.GetNumberOfComponentsPerPixel() == 2


@pytest.mark.parametrize("ext", EXTS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
def test_label_dtype_kept(tmp_path, make_grid, ext, dtype):
    img = _image(make_grid(5, 3), dtype=dtype)
    path = tmp_path / f"lab{ext}"
    save_image(img, path)
    back = load_image(path)
    assert back.dtype == dtype and back.is_label
    torch.testing.assert_close(back.data, img.data, rtol=0, atol=0)


def test_nifti_label_intent_and_int64_stored_as_int32(tmp_path, make_grid):
    img = _image(make_grid(6, 3), dtype=torch.int64)
    save_image(img, tmp_path / "lab.nii.gz")
    nii = nib.load(tmp_path / "lab.nii.gz")
    assert int(nii.header["intent_code"]) == 1002  # NIFTI_INTENT_LABEL
    back = load_image(tmp_path / "lab.nii.gz")
    assert back.dtype == torch.int32
    torch.testing.assert_close(back.data.long(), img.data, rtol=0, atol=0)


@pytest.mark.parametrize("ext", EXTS)
def test_float64_stays_float64(tmp_path, make_grid, ext):
    img = _image(make_grid(7, 2), dtype=torch.float64)
    save_image(img, tmp_path / f"d{ext}")
    back = load_image(tmp_path / f"d{ext}")
    assert back.dtype == torch.float64
    torch.testing.assert_close(back.data, img.data, rtol=0, atol=0)


def test_uint16_file_reads_as_int32_and_scaled_nifti_as_float32(tmp_path):
    nib.save(nib.Nifti1Image(np.array([[[0, 60000]]], dtype=np.uint16), np.eye(4)), tmp_path / "u16.nii.gz")
    back = load_image(tmp_path / "u16.nii.gz")
    assert back.dtype == torch.int32 and back.data.max().item() == 60000
    nii = nib.Nifti1Image(np.array([[[1, 2, 3]]], dtype=np.int16), np.eye(4))
    nii.header.set_slope_inter(0.5, 10.0)
    nib.save(nii, tmp_path / "scaled.nii")
    back = load_image(tmp_path / "scaled.nii")
    assert back.dtype == torch.float32
    torch.testing.assert_close(back.data.reshape(-1), torch.tensor([10.5, 11.0, 11.5]))


# ------------------------------------------------------------------------------------ nibabel vs SimpleITK
@pytest.mark.parametrize("ndim", [2, 3])
def test_file_written_by_simpleitk_gives_same_grid_through_nibabel_and_simpleitk(tmp_path, make_grid, ndim):
    grid = make_grid(8, ndim)
    flip = np.array([-1.0, -1.0, 1.0][:ndim])
    arr = np.arange(grid.numel, dtype=np.float32).reshape(grid.shape)
    s = _sitk_image(arr.T.copy(), grid.spacing, flip * grid.origin, flip[:, None] * grid.direction)
    sitk.WriteImage(s, str(tmp_path / "s.nii.gz"))
    sitk.WriteImage(s, str(tmp_path / "s.mha"))
    via_nibabel = load_image(tmp_path / "s.nii.gz")
    via_sitk_nifti = read_with_sitk(tmp_path / "s.nii.gz")
    via_mha = load_image(tmp_path / "s.mha")
    for got in (via_nibabel, via_sitk_nifti, via_mha):
        assert got.grid.same_as(grid, atol=1e-5), (got.grid, grid)
        np.testing.assert_array_equal(got.data[0].numpy(), arr)


def test_2d_image_from_nii_and_mha_has_same_grid(tmp_path, make_grid):
    grid = make_grid(9, 2)
    img = _image(grid)
    save_image(img, tmp_path / "a.nii")
    save_image(img, tmp_path / "a.mha")
    nii, mha = load_image(tmp_path / "a.nii"), load_image(tmp_path / "a.mha")
    assert nib.load(tmp_path / "a.nii").shape == grid.shape  # written as a true 2D NIfTI
    assert nii.grid.same_as(mha.grid, atol=1e-5)
    # and ITK reads the 2D NIfTI with the same LPS geometry as the .mha
    a, b = sitk.ReadImage(str(tmp_path / "a.nii")), sitk.ReadImage(str(tmp_path / "a.mha"))
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)


def test_nifti_single_slice_in_xy_plane_is_2d_but_tilted_slice_stays_3d(tmp_path):
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [5, 6, 7]
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 1), np.float32), affine), tmp_path / "flat.nii.gz")
    flat = load_image(tmp_path / "flat.nii.gz")
    assert flat.grid == Grid((3, 4), (2.0, 3.0), (5.0, 6.0))
    c, s = np.cos(0.3), np.sin(0.3)
    tilt = np.array([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1.0]]) @ affine
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 1), np.float32), tilt), tmp_path / "tilt.nii.gz")
    tilted = load_image(tmp_path / "tilt.nii.gz")
    assert tilted.grid.shape == (3, 4, 1)
    np.testing.assert_allclose(tilted.grid.world_from_voxel(), tilt, atol=1e-6)


def test_nifti_4d_reads_as_channels(tmp_path):
    data = np.random.default_rng(0).normal(size=(3, 4, 5, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "t.nii.gz")
    back = load_image(tmp_path / "t.nii.gz")
    assert back.grid.shape == (3, 4, 5) and back.channels == 2
    np.testing.assert_array_equal(back.data[1].numpy(), data[..., 1])


def test_nifti_best_affine_uses_qform_when_sform_code_is_zero(tmp_path):
    qform = np.diag([1.5, 1.5, 1.5, 1.0])
    qform[:3, 3] = [1, 2, 3]
    nii = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), None)
    nii.set_qform(qform, code=1)
    nii.set_sform(np.diag([9.0, 9, 9, 1]), code=0)
    nib.save(nii, tmp_path / "q.nii.gz")
    np.testing.assert_allclose(load_image(tmp_path / "q.nii.gz").grid.world_from_voxel(), qform, atol=1e-6)


def test_sheared_nifti_raises_naming_the_file(tmp_path):
    affine = np.eye(4)
    affine[0, 1] = 0.5
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), affine), tmp_path / "shear.nii.gz")
    with pytest.raises(ValueError, match=r"shear\.nii\.gz.*sheared"):
        load_image(tmp_path / "shear.nii.gz")


# ------------------------------------------------------------------------------------ raster formats
def test_png_gray_and_rgb_read_with_unit_spacing_and_itk_geometry(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)  # rows (j) x columns (i)
    sitk.WriteImage(sitk.GetImageFromArray(gray), str(tmp_path / "g.png"))
    img = load_image(tmp_path / "g.png")
    assert img.dtype == torch.uint8 and img.data.shape == (1, 4, 3)
    np.testing.assert_array_equal(img.data[0].numpy(), gray.T)  # tensor axes (i, j) = (column, row)
    # ITK gives a PNG unit spacing, origin 0 and identity LPS direction, i.e. RAS diag(-1, -1)
    assert img.grid == Grid((4, 3), (1.0, 1.0), (0.0, 0.0), np.diag([-1.0, -1.0]))
    rgb = np.random.default_rng(0).integers(0, 255, size=(3, 4, 3), dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "c.png"))
    col = load_image(tmp_path / "c.png", spacing=(0.5, 2.0))
    assert col.channels == 3 and col.grid.spacing == (0.5, 2.0)
    np.testing.assert_array_equal(col.data.numpy(), rgb.transpose(2, 1, 0))


def test_png_save_round_trip(tmp_path):
    img = Image(torch.arange(20, dtype=torch.uint8).reshape(1, 5, 4), Grid((5, 4), direction=np.diag([-1.0, -1.0])))
    save_image(img, tmp_path / "x.png")
    back = load_image(tmp_path / "x.png")
    assert back.grid == img.grid
    torch.testing.assert_close(back.data, img.data, rtol=0, atol=0)


# ------------------------------------------------------------------------------------ files and errors
def test_overwrite_refused_without_force(tmp_path, make_grid):
    img = _image(make_grid(1, 2))
    path = tmp_path / "o.nii.gz"
    save_image(img, path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="o.nii.gz"):
        save_image(img.with_data(img.data + 1), path)
    assert path.read_bytes() == before
    save_image(img.with_data(img.data + 1), path, force=True)
    torch.testing.assert_close(load_image(path).data, img.data + 1)


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, make_grid):
    float_img = _image(make_grid(1, 2))  # PNG cannot store float32
    with pytest.raises(ValueError, match="cannot write image"):
        save_image(float_img, tmp_path / "f.png")
    assert os.listdir(tmp_path) == []
    good = Image(torch.zeros((1, 3, 3), dtype=torch.uint8), Grid((3, 3), direction=np.diag([-1.0, -1.0])))
    save_image(good, tmp_path / "f.png")
    before = (tmp_path / "f.png").read_bytes()
    with pytest.raises(ValueError):
        save_image(float_img, tmp_path / "f.png", force=True)
    assert os.listdir(tmp_path) == ["f.png"] and (tmp_path / "f.png").read_bytes() == before


def test_mhd_writes_header_and_data_file_together(tmp_path, make_grid):
    img = _image(make_grid(2, 3))
    save_image(img, tmp_path / "h.mhd")
    assert sorted(os.listdir(tmp_path)) == ["h.mhd", "h.raw"]
    back = load_image(tmp_path / "h.mhd")
    assert back.grid.same_as(img.grid, atol=1e-5)
    torch.testing.assert_close(back.data, img.data, rtol=0, atol=0)


def test_missing_and_corrupt_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        load_image(tmp_path / "nope.nii.gz")
    (tmp_path / "bad.nii.gz").write_bytes(gzip.compress(b"not a nifti header at all" * 3))
    with pytest.raises(ValueError, match=r"cannot read image .*bad\.nii\.gz"):
        load_image(tmp_path / "bad.nii.gz")
    (tmp_path / "bad.mha").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"cannot read image .*bad\.mha"):
        load_image(tmp_path / "bad.mha")
    with pytest.raises(ValueError, match="extension"):
        save_image(Image(torch.zeros(1, 2, 2), Grid((2, 2))), tmp_path / "x.xyz")
    with pytest.raises(TypeError, match="image"):
        save_image(torch.zeros(1, 2, 2), tmp_path / "x.nii")


def test_image_info_summary():
    grid = Grid((2, 3, 4), (1.0, 2.0, 3.0), (1.0, -2.0, 3.0), np.diag([-1.0, -1.0, 1.0]))
    img = Image(torch.arange(24, dtype=torch.int16).reshape(1, 2, 3, 4), grid)
    info = image_info(img)
    assert info["shape"] == [2, 3, 4] and info["channels"] == 1 and info["dtype"] == "int16"
    assert info["spacing"] == [1.0, 2.0, 3.0] and info["origin"] == [1.0, -2.0, 3.0]
    assert info["orientation"] == "LPS" and info["direction"] == np.diag([-1.0, -1.0, 1.0]).tolist()
    assert (info["min"], info["max"], info["mean"]) == (0.0, 23.0, 11.5)
