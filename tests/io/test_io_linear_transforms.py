"""Linear ITK transform files: SimpleITK applies omnireg's files as the RAS matrix says, and vice versa."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import SimpleITK as sitk
import torch

from omnireg.core import Grid
from omnireg.io import read_linear_transform, read_transform_file, write_displacement_field, write_linear_transform


def _random_affine(seed: int, ndim: int) -> np.ndarray:
    """A general affine (rotation, anisotropic scale, shear, translation) in RAS."""
    rng = np.random.default_rng(seed)
    m = np.eye(ndim + 1)
    q, _ = np.linalg.qr(rng.normal(size=(ndim, ndim)))
    shear = np.eye(ndim) + np.triu(rng.uniform(-0.2, 0.2, size=(ndim, ndim)), 1)
    m[:ndim, :ndim] = q @ np.diag(rng.uniform(0.7, 1.4, ndim)) @ shear
    m[:ndim, ndim] = rng.uniform(-30, 30, ndim)
    return m


def _check_same_map(sitk_tx: sitk.Transform, matrix_ras: np.ndarray, to_lps, atol=1e-9) -> None:
    """sitk_tx(p_LPS) == LPS(M @ RAS(p)) at a few points far from the origin."""
    d = matrix_ras.shape[0] - 1
    points = np.random.default_rng(7).uniform(-100, 100, size=(5, d))
    for p in points:
        got = np.asarray(sitk_tx.TransformPoint(tuple(to_lps(p))))
        expected = to_lps(matrix_ras[:d, :d] @ p + matrix_ras[:d, d])
        np.testing.assert_allclose(got, expected, rtol=0, atol=atol)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("ext", [".tfm", ".txt", ".mat"])
def test_simpleitk_reads_written_file_and_maps_points_like_the_ras_matrix(tmp_path, to_lps, ext, ndim):
    m = _random_affine(ndim, ndim)
    path = tmp_path / f"a{ext}"
    write_linear_transform(m, path)
    tx = sitk.ReadTransform(str(path))
    assert tx.GetDimension() == ndim
    _check_same_map(tx, m, to_lps)
    np.testing.assert_array_equal(read_linear_transform(path), m)  # exact round trip (repr / float64)


def test_tfm_text_layout_is_itk_affine_with_zero_centre(tmp_path):
    m = np.eye(4)
    m[:3, 3] = [5.0, 0.0, 0.0]  # 5 mm towards the right (RAS +x)
    write_linear_transform(m, tmp_path / "t.tfm")
    lines = (tmp_path / "t.tfm").read_text().splitlines()
    assert lines[:3] == ["#Insight Transform File V1.0", "#Transform 0", "Transform: AffineTransform_double_3_3"]
    assert lines[3] == "Parameters: 1.0 0.0 0.0 0.0 1.0 0.0 0.0 0.0 1.0 -5.0 0.0 0.0"  # LPS: -5 along x
    assert lines[4] == "FixedParameters: 0 0 0"
    mat = scipy.io.loadmat(_write(tmp_path / "t.mat", m))
    assert mat["AffineTransform_double_3_3"].shape == (12, 1) and mat["fixed"].shape == (3, 1)


def _write(path, m):
    write_linear_transform(m, path)
    return str(path)


def _lps_kinds():
    """SimpleITK linear transforms of many kinds (all in LPS), with non-zero centres."""
    c3, c2 = (10.0, -20.0, 5.0), (7.0, -3.0)
    sim3 = sitk.Similarity3DTransform(1.2, (0.0, 0.6, 0.8), 0.4, (1.0, 2.0, 3.0), c3)
    versor = sitk.VersorRigid3DTransform((0.1, -0.2, 0.3), 0.5, (4.0, 5.0, 6.0))
    versor.SetCenter(c3)
    skew = sitk.ScaleSkewVersor3DTransform()
    skew.SetParameters((0.05, 0.1, -0.1, 1.0, 2.0, 3.0, 1.1, 0.9, 1.2, 0.05, 0.0, 0.1, 0.0, -0.05, 0.02))
    skew.SetCenter(c3)
    affine3 = sitk.AffineTransform((1.1, 0.1, 0.0, -0.1, 0.9, 0.2, 0.0, 0.05, 1.3), (1.0, -2.0, 3.0), c3)
    scale3 = sitk.ScaleTransform(3, (1.5, 0.8, 1.1))
    scale3.SetCenter(c3)
    return [
        sitk.Euler3DTransform(c3, 0.1, -0.2, 0.3, (4.0, 5.0, 6.0)),
        versor,
        sim3,
        skew,
        affine3,
        sitk.TranslationTransform(3, (1.0, -2.0, 3.5)),
        scale3,
        sitk.Euler2DTransform(c2, 0.4, (2.0, -1.0)),
        sitk.Similarity2DTransform(0.8, 0.3, (1.0, 2.0), c2),
        sitk.AffineTransform((1.1, 0.2, -0.1, 0.9), (3.0, 4.0), c2),
    ]


@pytest.mark.parametrize("ext", [".tfm", ".mat", ".h5"])
def test_reads_linear_kinds_written_by_simpleitk(tmp_path, to_lps, ext):
    for i, tx in enumerate(_lps_kinds()):
        path = tmp_path / f"k{i}{ext}"
        sitk.WriteTransform(tx, str(path))
        m = read_linear_transform(path)
        assert m.shape == (tx.GetDimension() + 1,) * 2, tx.GetName()
        _check_same_map(tx, m, to_lps, atol=1e-9)


def test_reads_text_kinds_that_simpleitk_cannot_wrap(tmp_path, to_lps):
    # ANTs' MatrixOffsetTransformBase and ITK's Rigid2DTransform (read through point probing)
    (tmp_path / "mo.txt").write_text(
        "#Insight Transform File V1.0\n#Transform 0\nTransform: MatrixOffsetTransformBase_double_3_3\n"
        "Parameters: 1 0.1 0 0 1 0 0 0 1.2 1 2 3\nFixedParameters: 1 1 1\n"
    )
    (tmp_path / "r2.tfm").write_text(
        "#Insight Transform File V1.0\n#Transform 0\nTransform: Rigid2DTransform_double_2_2\n"
        "Parameters: 0.3 1 2\nFixedParameters: 5 -5\n"
    )
    for name in ("mo.txt", "r2.tfm"):
        m = read_linear_transform(tmp_path / name)
        _check_same_map(sitk.ReadTransform(str(tmp_path / name)), m, to_lps, atol=1e-9)


def test_reads_ants_float_mat_with_centre(tmp_path, to_lps):
    params = np.array([1.1, 0.1, 0, -0.1, 0.9, 0.2, 0, 0.05, 1.3, 1, -2, 3], np.float32).reshape(12, 1)
    fixed = np.array([[10.0], [-20.0], [5.0]], np.float32)
    scipy.io.savemat(str(tmp_path / "ants.mat"), {"AffineTransform_float_3_3": params, "fixed": fixed}, format="4")
    m = read_linear_transform(tmp_path / "ants.mat")
    _check_same_map(sitk.ReadTransform(str(tmp_path / "ants.mat")), m, to_lps, atol=1e-9)


def test_multi_transform_tfm_is_multiplied_in_itk_order(tmp_path, to_lps):
    a = sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.1, 0.2, 0.3, (4.0, 5.0, 6.0))
    b = sitk.ScaleTransform(3, (2.0, 1.0, 0.5))
    sitk.WriteTransform(sitk.CompositeTransform([a, b]), str(tmp_path / "c.tfm"))
    m = read_linear_transform(tmp_path / "c.tfm")
    _check_same_map(sitk.ReadTransform(str(tmp_path / "c.tfm")), m, to_lps, atol=1e-9)
    assert len(read_transform_file(tmp_path / "c.tfm")) == 2


def test_items_report_their_dimension(tmp_path):
    write_linear_transform(np.eye(3), tmp_path / "a.tfm")
    (item,) = read_transform_file(tmp_path / "a.tfm")
    assert item.kind == "linear" and item.ndim == 2


def test_linear_write_refuses_overwrite_and_bad_input(tmp_path):
    path = tmp_path / "a.tfm"
    write_linear_transform(np.eye(4), path)
    with pytest.raises(FileExistsError, match="a.tfm"):
        write_linear_transform(np.eye(4), path)
    m = np.eye(4)
    m[0, 3] = 1.0
    write_linear_transform(torch.from_numpy(m), path, force=True)
    np.testing.assert_array_equal(read_linear_transform(path), m)
    with pytest.raises(ValueError, match="matrix_ras"):
        write_linear_transform(np.eye(3)[:2], tmp_path / "b.tfm")
    bad = np.eye(4)
    bad[3, 0] = 1.0
    with pytest.raises(ValueError, match="last row"):
        write_linear_transform(bad, tmp_path / "b.tfm")
    with pytest.raises(ValueError, match="extension"):
        write_linear_transform(np.eye(4), tmp_path / "b.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tfm"]


def test_linear_read_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tfm"):
        read_linear_transform(tmp_path / "missing.tfm")
    (tmp_path / "bad.tfm").write_text("this is not a transform\n")
    with pytest.raises(ValueError, match=r"bad\.tfm"):
        read_linear_transform(tmp_path / "bad.tfm")
    (tmp_path / "bad.mat").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match=r"bad\.mat"):
        read_linear_transform(tmp_path / "bad.mat")
    write_displacement_field(torch.zeros(2, 3, 3), Grid((3, 3)), tmp_path / "u.nii.gz")
    with pytest.raises(ValueError, match=r"u\.nii\.gz.*displacement"):
        read_linear_transform(tmp_path / "u.nii.gz")
    with pytest.raises(ValueError, match=r"unknown extension"):
        (tmp_path / "x.json").write_text("{}")
        read_transform_file(tmp_path / "x.json")
