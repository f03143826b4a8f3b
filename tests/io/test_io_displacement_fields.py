"""ITK displacement fields: SimpleITK applies omnireg's files unchanged, omnireg reads SimpleITK's files."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from omnireg.core import Grid, Image
from omnireg.io import read_displacement_field, read_transform_file, save_image, write_displacement_field

EXTS = [".nii.gz", ".nrrd", ".mha"]


def _field(grid: Grid, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return (torch.randn((grid.ndim, *grid.shape), generator=g, dtype=torch.float64) * 3).to(dtype)


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("ext", EXTS)
def test_simpleitk_applies_written_field_as_the_ras_field_says(tmp_path, make_grid, to_lps, ext, ndim, precision):
    grid = make_grid(20 + ndim, ndim)
    u = _field(grid)
    stored = u.to(getattr(torch, precision))  # the values the file holds
    path = tmp_path / f"u{ext}"
    kwargs = {} if precision == "float32" else {"precision": precision}  # float32 is the default
    write_displacement_field(u, grid, path, **kwargs)
    img = sitk.ReadImage(str(path))
    assert img.GetDimension() == ndim and img.GetNumberOfComponentsPerPixel() == ndim
    assert img.GetPixelIDValue() == (sitk.sitkVectorFloat32 if precision == "float32" else sitk.sitkVectorFloat64)
    tx = sitk.DisplacementFieldTransform(sitk.Cast(img, sitk.sitkVectorFloat64))
    x = grid.points("world", dtype=torch.float64).numpy()  # (*S, D) RAS voxel centres
    atol = 1e-4 if ext == ".nii.gz" else 1e-9  # NIfTI stores the geometry in float32
    for idx in [(0,) * ndim, (1,) * ndim, tuple(s - 1 for s in grid.shape), (2, 1, 0)[:ndim]]:
        p = x[idx]
        got = np.asarray(tx.TransformPoint(tuple(to_lps(p))))
        expected = to_lps(p + stored[(slice(None), *idx)].double().numpy())
        np.testing.assert_allclose(got, expected, rtol=0, atol=atol)
    back, back_grid = read_displacement_field(path)
    assert back.dtype == stored.dtype and back_grid.same_as(grid, atol=1e-5)
    torch.testing.assert_close(back, stored, rtol=0, atol=0)


def test_fields_are_written_compressed(tmp_path):
    """A smooth float32 field takes less room in every format than its raw float32 bytes."""
    grid = Grid((40, 36, 30), (2.0, 2.0, 2.0))
    x = grid.points("world", dtype=torch.float64).movedim(-1, 0)
    u = torch.stack([torch.sin(x[0] / 15), torch.cos(x[1] / 11), torch.sin(x[2] / 9)]) * 2.0
    raw = u.numel() * 4
    for ext in EXTS:
        write_displacement_field(u, grid, tmp_path / f"u{ext}")
        assert (tmp_path / f"u{ext}").stat().st_size < 0.9 * raw, ext
    with pytest.raises(ValueError, match="precision"):
        write_displacement_field(u, grid, tmp_path / "v.nii.gz", precision="float16")


def test_nifti_field_layout_is_itk_vector_with_lps_components(tmp_path):
    grid = Grid((2, 3, 4), (1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    u = torch.zeros(3, 2, 3, 4, dtype=torch.float32)
    u[0], u[1], u[2] = 1.0, 2.0, 3.0  # 1 mm right, 2 mm anterior, 3 mm superior
    write_displacement_field(u, grid, tmp_path / "u.nii.gz")
    nii = nib.load(tmp_path / "u.nii.gz")
    assert nii.shape == (2, 3, 4, 1, 3) and nii.get_data_dtype() == np.float32
    assert int(nii.header["intent_code"]) == 1007
    assert int(nii.header["sform_code"]) == 1 and int(nii.header["qform_code"]) == 1
    np.testing.assert_array_equal(np.asarray(nii.dataobj)[1, 2, 3, 0], [-1.0, -2.0, 3.0])  # LPS components
    np.testing.assert_allclose(nii.affine, grid.world_from_voxel())  # geometry stays RAS, as NIfTI says
    write_displacement_field(u[:2, :, :, 0], Grid((2, 3)), tmp_path / "u2.nii.gz")
    nii2 = nib.load(tmp_path / "u2.nii.gz")
    assert nii2.shape == (2, 3, 1, 1, 2)
    np.testing.assert_array_equal(np.asarray(nii2.dataobj)[0, 0, 0, 0], [-1.0, -2.0])


@pytest.mark.parametrize("ext", EXTS)
def test_reads_field_written_by_simpleitk(tmp_path, make_grid, to_lps, ext):
    grid = make_grid(31, 3)
    flip = np.array([-1.0, -1.0, 1.0])
    lps_vectors = np.random.default_rng(1).normal(size=(*reversed(grid.shape), 3))  # [k, j, i, c]
    img = sitk.GetImageFromArray(lps_vectors, isVector=True)
    img.SetSpacing(grid.spacing)
    img.SetOrigin(tuple(flip * grid.origin))
    img.SetDirection(tuple((flip[:, None] * grid.direction).reshape(-1)))
    sitk.WriteImage(img, str(tmp_path / f"s{ext}"))
    field, fgrid = read_displacement_field(tmp_path / f"s{ext}")
    assert fgrid.same_as(grid, atol=1e-5)
    tx = sitk.DisplacementFieldTransform(sitk.Image(img))
    x = grid.points("world", dtype=torch.float64).numpy()
    for idx in [(0, 0, 0), (1, 2, 0), (2, 1, 2)]:
        expected = to_lps(np.asarray(tx.TransformPoint(tuple(to_lps(x[idx])))))  # ITK's map, back in RAS
        np.testing.assert_allclose(x[idx] + field[(slice(None), *idx)].numpy(), expected, atol=1e-9)
    (item,) = read_transform_file(tmp_path / f"s{ext}")
    assert item.kind == "displacement" and item.ndim == 3


def test_nifti_dispvect_intent_holds_ras_components_like_itk_reads_them(tmp_path):
    data = np.zeros((2, 2, 2, 1, 3), np.float32)
    data[...] = [1.0, 2.0, 3.0]
    nii = nib.Nifti1Image(data, np.eye(4))
    nii.header["intent_code"] = 1006  # NIFTI_INTENT_DISPVECT: components in NIfTI (RAS) space
    nib.save(nii, tmp_path / "d.nii.gz")
    field, _ = read_displacement_field(tmp_path / "d.nii.gz")
    np.testing.assert_array_equal(field[:, 0, 0, 0].numpy(), [1.0, 2.0, 3.0])
    # ITK converts such a file to LPS on reading: both readers agree on the physical vector
    assert sitk.ReadImage(str(tmp_path / "d.nii.gz"))[0, 0, 0] == (-1.0, -2.0, 3.0)


def test_field_errors(tmp_path):
    grid = Grid((3, 3))
    with pytest.raises(ValueError, match="field_ras_mm"):
        write_displacement_field(torch.zeros(2, 3, 4), grid, tmp_path / "u.nii.gz")
    with pytest.raises(TypeError, match="field_ras_mm"):
        write_displacement_field(torch.zeros(2, 3, 3, dtype=torch.int32), grid, tmp_path / "u.nii.gz")
    with pytest.raises(ValueError, match="extension"):
        write_displacement_field(torch.zeros(2, 3, 3), grid, tmp_path / "u.png")
    write_displacement_field(torch.zeros(2, 3, 3), grid, tmp_path / "u.nii.gz")
    with pytest.raises(FileExistsError, match="u.nii.gz"):
        write_displacement_field(torch.ones(2, 3, 3), grid, tmp_path / "u.nii.gz")
    save_image(Image(torch.zeros(1, 3, 3), grid), tmp_path / "scalar.mha")
    with pytest.raises(ValueError, match=r"scalar\.mha.*components"):
        read_displacement_field(tmp_path / "scalar.mha")
    with pytest.raises(FileNotFoundError, match="none.nii.gz"):
        read_displacement_field(tmp_path / "none.nii.gz")
