"""Pins of the io conventions: world RAS inside omnireg, LPS in ITK files, SimpleITK's [k, j, i] array order.

Each test states one convention with hand-checkable numbers, so that a sign or axis-order change in
``omnireg.io`` fails here first.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch

from omnireg.core import Grid, Image
from omnireg.io import (
    load_image,
    read_displacement_field,
    read_linear_transform,
    save_image,
    write_displacement_field,
    write_linear_transform,
)
from omnireg.io._convert import convert_affine_ras_lps


def test_nifti_ras_origin_is_itk_lps_origin_with_x_and_y_negated(tmp_path):
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [10.0, 20.0, 30.0]
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), affine), tmp_path / "a.nii.gz")
    itk = sitk.ReadImage(str(tmp_path / "a.nii.gz"))
    assert itk.GetOrigin() == (-10.0, -20.0, 30.0)
    assert itk.GetDirection() == (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    img = load_image(tmp_path / "a.nii.gz")
    assert img.grid == Grid((2, 2, 2), (2.0, 3.0, 4.0), (10.0, 20.0, 30.0))


def test_omnireg_writes_lps_geometry_into_itk_headers(tmp_path):
    img = Image(torch.zeros(1, 2, 2, 2), Grid((2, 2, 2), (1.0, 1.0, 1.0), (10.0, 20.0, 30.0)))
    save_image(img, tmp_path / "a.mha")
    header = (tmp_path / "a.mha").read_bytes().split(b"ElementDataFile")[0].decode()
    assert "Offset = -10 -20 30" in header
    assert "TransformMatrix = -1 0 0 0 -1 0 0 0 1" in header
    assert load_image(tmp_path / "a.mha").grid == img.grid  # and back to RAS


def test_2d_itk_space_is_the_first_two_lps_axes(tmp_path):
    img = Image(torch.zeros(1, 2, 3), Grid((2, 3), (1.0, 2.0), (10.0, 20.0)))
    save_image(img, tmp_path / "a.mha")
    itk = sitk.ReadImage(str(tmp_path / "a.mha"))
    assert itk.GetOrigin() == (-10.0, -20.0) and itk.GetDirection() == (-1.0, 0.0, 0.0, -1.0)
    save_image(img, tmp_path / "a.nii.gz")
    assert sitk.ReadImage(str(tmp_path / "a.nii.gz")).GetOrigin() == (-10.0, -20.0)  # ITK reads 2D NIfTI alike
    assert load_image(tmp_path / "a.mha").grid == load_image(tmp_path / "a.nii.gz").grid == img.grid


def test_simpleitk_array_order_is_reversed_tensor_axes(tmp_path):
    data = torch.zeros(1, 2, 3, 4, dtype=torch.int16)
    data[0, 1, 2, 3] = 7  # voxel (i, j, k) = (1, 2, 3)
    save_image(Image(data, Grid((2, 3, 4))), tmp_path / "a.nrrd")
    itk = sitk.ReadImage(str(tmp_path / "a.nrrd"))
    assert itk.GetSize() == (2, 3, 4) and itk[1, 2, 3] == 7  # ITK index (i, j, k)
    assert sitk.GetArrayFromImage(itk)[3, 2, 1] == 7  # SimpleITK array [k, j, i]
    assert load_image(tmp_path / "a.nrrd").data[0, 1, 2, 3] == 7


def test_linear_transform_file_holds_f_m_f(tmp_path):
    m = np.array([[0.0, -1.0, 0.0, 5.0], [1.0, 0.0, 0.0, 6.0], [0.0, 0.0, 1.0, 7.0], [0.0, 0.0, 0.0, 1.0]])
    write_linear_transform(m, tmp_path / "a.tfm")
    tx = sitk.ReadTransform(str(tmp_path / "a.tfm"))
    f = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_array_equal(np.asarray(tx.GetMatrix()).reshape(3, 3), f @ m[:3, :3] @ f)
    np.testing.assert_array_equal(tx.GetTranslation(), [-5.0, -6.0, 7.0])
    # the pull direction: fixed RAS (1, 0, 0) maps to moving RAS (5, 7, 7); ITK says the same in LPS
    assert tx.TransformPoint((-1.0, 0.0, 0.0)) == (-5.0, -7.0, 7.0)
    np.testing.assert_array_equal(read_linear_transform(tmp_path / "a.tfm"), m)


def test_ras_lps_conversion_is_an_involution():
    m = np.random.default_rng(0).normal(size=(4, 4))
    m[3] = [0, 0, 0, 1]
    np.testing.assert_array_equal(convert_affine_ras_lps(convert_affine_ras_lps(m)), m)
    m2 = m[[0, 1, 3]][:, [0, 1, 3]]
    np.testing.assert_array_equal(convert_affine_ras_lps(m2)[:2, 2], -m2[:2, 2])


def test_displacement_file_holds_lps_vectors(tmp_path):
    u = torch.zeros(3, 1, 1, 1)
    u[0] = 1.0  # 1 mm towards the right: fixed (0, 0, 0) pulls from moving (1, 0, 0) RAS
    write_displacement_field(u, Grid((1, 1, 1)), tmp_path / "u.mha")
    itk = sitk.ReadImage(str(tmp_path / "u.mha"))
    assert itk[0, 0, 0] == (-1.0, 0.0, 0.0)
    tx = sitk.DisplacementFieldTransform(sitk.Cast(itk, sitk.sitkVectorFloat64))
    assert tx.TransformPoint((0.0, 0.0, 0.0)) == (-1.0, 0.0, 0.0)  # LPS of RAS (1, 0, 0)
    field, _ = read_displacement_field(tmp_path / "u.mha")
    assert field[:, 0, 0, 0].tolist() == [1.0, 0.0, 0.0]
