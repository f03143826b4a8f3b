"""End-to-end command line: register writes ITK files that SimpleITK applies exactly as omnireg does;
apply follows the antsApplyTransforms order; errors are one line with a non-zero exit."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from omnireg.cli.main import main
from omnireg.core import Grid, Image
from omnireg.core.filters import gaussian_blur
from omnireg.io import load_image, save_image


def _blob_pair(tmp_path, shift_mm=(4.0, -3.0, 2.0)):
    g = Grid((28, 30, 26), spacing=(2.0, 2.0, 2.5), origin=(-27.0, -29.0, -31.0))
    x = torch.zeros(1, *g.shape)
    x[0, 8:20, 9:22, 6:19] = 1.0
    x[0, 12:16, 12:16, 9:14] = 2.0
    x = gaussian_blur(x[None], 1.2)[0]
    fixed = Image(x, g)
    from omnireg.transforms import Translation, resample

    t = Translation(ndim=3, translation=torch.tensor(shift_mm).neg())
    moving = resample(fixed, t, onto=g).to(torch.float32)
    moving = moving.with_data(moving.data.detach())
    fp, mp = tmp_path / "fixed.nii.gz", tmp_path / "moving.nii.gz"
    save_image(fixed, fp)
    save_image(moving, mp)
    return fp, mp, np.asarray(shift_mm)


def _fast_config(tmp_path):
    cfg = tmp_path / "fast.yaml"
    cfg.write_text(
        "init: geometry\nstages:\n  - transform: rigid\n    metric: ncc\n    shrink: [2, 1]\n    iterations: [30, 20]\n"
    )
    return cfg


def test_register_outputs_and_itk_composite_maps_points_like_omnireg(tmp_path):
    fp, mp, shift = _blob_pair(tmp_path)
    out = tmp_path / "out"
    assert main(["register", str(fp), str(mp), "--out", str(out), "--config", str(_fast_config(tmp_path)), "--no-progress", "--no-report"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["outputs"]["ants_order"] == ["linear.mat"]
    assert "omnireg_version" in result and "config" in result
    # the found mapping is fixed -> moving: x -> x + shift (moving content sits at +shift)
    tx = sitk.ReadTransform(str(out / "transform.h5"))
    p_ras = np.array([1.0, 2.0, 3.0])
    q_lps = np.array(tx.TransformPoint(tuple(p_ras * [-1, -1, 1])))
    np.testing.assert_allclose(q_lps * [-1, -1, 1], p_ras + shift, atol=0.2)
    # SimpleITK resampling with the written composite reproduces warped.nii.gz
    fixed_s, moving_s = sitk.ReadImage(str(fp)), sitk.ReadImage(str(mp))
    ref = sitk.GetArrayFromImage(sitk.Resample(moving_s, fixed_s, tx, sitk.sitkLinear, 0.0))
    warped = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "warped.nii.gz")))
    inner = (slice(3, -3),) * 3
    np.testing.assert_allclose(warped[inner], ref[inner], atol=1e-3)


def test_apply_reproduces_register_output_and_follows_ants_order(tmp_path):
    fp, mp, _ = _blob_pair(tmp_path)
    out = tmp_path / "out"
    assert main(["register", str(fp), str(mp), "--out", str(out), "--config", str(_fast_config(tmp_path)), "--no-progress", "--no-report"]) == 0
    w = tmp_path / "applied.nii.gz"
    assert main(["apply", "--moving", str(mp), "--reference", str(fp), "--transform", str(out / "linear.mat"), "--out", str(w)]) == 0
    a, b = load_image(w).data, load_image(out / "warped.nii.gz").data
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    # order: [T1, T2] means T1(T2(x)); with a translation T1 and its inverse [T1,1] the result is the identity
    w2 = tmp_path / "identity.nii.gz"
    spec = [str(out / "linear.mat"), f"[{out / 'linear.mat'},1]"]
    assert main(["apply", "--moving", str(fp), "--reference", str(fp), "--transform", *spec, "--out", str(w2)]) == 0
    inner = (slice(None),) + (slice(2, -2),) * 3
    torch.testing.assert_close(load_image(w2).data[inner], load_image(fp).data[inner], atol=1e-4, rtol=0)


def test_deformable_register_writes_displacement_field_sitk_applies(tmp_path):
    fp, mp, _ = _blob_pair(tmp_path, shift_mm=(2.0, 0.0, 0.0))
    cfg = tmp_path / "def.yaml"
    cfg.write_text(
        "init: geometry\nstages:\n"
        "  - transform: bspline\n    metric: lncc\n    metric_options: {window: 5}\n    shrink: [1]\n    iterations: [15]\n"
        "    optimizer: adam\n    control_spacing_mm: 10\n    regularization: {bending: 1.0}\n"
    )
    out = tmp_path / "out"
    assert main(["register", str(fp), str(mp), "--out", str(out), "--config", str(cfg), "--no-progress", "--no-report"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["outputs"]["ants_order"] == ["linear.mat", "deformation.nii.gz"]
    # antsApplyTransforms order: linear.mat applied last to the points, deformation first
    fixed_s, moving_s = sitk.ReadImage(str(fp)), sitk.ReadImage(str(mp))
    lin = sitk.ReadTransform(str(out / "linear.mat"))
    field = sitk.DisplacementFieldTransform(sitk.Cast(sitk.ReadImage(str(out / "deformation.nii.gz")), sitk.sitkVectorFloat64))
    comp = sitk.CompositeTransform([lin, field])
    ref = sitk.GetArrayFromImage(sitk.Resample(moving_s, fixed_s, comp, sitk.sitkLinear, 0.0))
    warped = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "warped.nii.gz")))
    inner = (slice(3, -3),) * 3
    np.testing.assert_allclose(warped[inner], ref[inner], atol=2e-3)
    h5 = sitk.ReadTransform(str(out / "transform.h5"))
    ref2 = sitk.GetArrayFromImage(sitk.Resample(moving_s, fixed_s, h5, sitk.sitkLinear, 0.0))
    np.testing.assert_allclose(warped[inner], ref2[inner], atol=2e-3)


def test_errors_are_one_line_and_nothing_is_overwritten(tmp_path, capsys):
    fp, mp, _ = _blob_pair(tmp_path)
    assert main(["register", str(fp), str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.nii.gz" in err
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    assert main(["info", str(bad)]) == 2
    assert "bad.nii.gz" in capsys.readouterr().err
    # 2D vs 3D
    g2 = Grid((20, 20))
    save_image(Image(torch.rand(1, 20, 20), g2), tmp_path / "two.nii.gz")
    assert main(["apply", "--moving", str(tmp_path / "two.nii.gz"), "--reference", str(fp), "--transform", "x.mat", "--out", str(tmp_path / "w.nii.gz")]) == 2
    assert "2D" in capsys.readouterr().err
    # an existing output is kept without --force
    existing = tmp_path / "exists.nii.gz"
    existing.write_bytes(b"keep")
    assert main(["apply", "--moving", str(mp), "--reference", str(fp), "--transform", "x.mat", "--out", str(existing)]) == 2
    assert existing.read_bytes() == b"keep"
    # a transform of the wrong dimension
    from omnireg.io import write_linear_transform

    write_linear_transform(np.eye(3), tmp_path / "t2d.mat")
    assert main(["apply", "--moving", str(mp), "--reference", str(fp), "--transform", str(tmp_path / "t2d.mat"), "--out", str(tmp_path / "w3.nii.gz")]) == 2
    assert "2D transform" in capsys.readouterr().err


def test_info_prints_geometry(capsys):
    from omnireg.data import sample_path

    assert main(["info", str(sample_path("t1")), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [80, 85, 100] and info["orientation"] == "LIA"
