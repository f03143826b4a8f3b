"""``omnireg landmarks``: ITK outputs that SimpleITK applies to the fixed landmarks to give the moving ones."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from omnireg.cli import landmarks as cli
from omnireg.cli.main import CliError
from omnireg.core import Grid, Image
from omnireg.io import read_linear_transform, save_image
from omnireg.landmarks import write_landmarks

LPS = np.array([-1.0, -1.0, 1.0])


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omnireg")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["landmarks", *argv])
    return args.func(args)


@pytest.fixture
def case(tmp_path):
    grid = Grid((12, 10, 8), (2.0, 2.5, 3.0), origin=(-10.0, -12.0, -9.0))
    ref = tmp_path / "fixed.nii.gz"
    save_image(Image(torch.zeros(1, *grid.shape), grid), ref)
    vox = np.array([[2, 2, 2], [9, 3, 2], [3, 7, 3], [2, 3, 6], [8, 8, 5], [5, 5, 4], [7, 2, 6]], dtype=float)
    p = grid.transform_points(vox, "voxel", "world")  # on voxel centres: the dense field is exact there
    return tmp_path, ref, p


def test_affine_model_writes_linear_mat_that_sitk_applies(case, capsys):
    tmp, _, p = case
    m = np.array([[1.05, 0.1, 0.0, 3.0], [-0.05, 0.95, 0.02, -2.0], [0.0, 0.03, 1.1, 1.5], [0, 0, 0, 1.0]])
    q = p @ m[:3, :3].T + m[:3, 3]
    write_landmarks(p, tmp / "f.fcsv")  # Slicer file in LPS
    write_landmarks(q, tmp / "m.csv", coordinate_system="LPS")  # ANTs-style LPS CSV
    assert _run(["--fixed", str(tmp / "f.fcsv"), "--moving", str(tmp / "m.csv"), "--lps", "--model", "affine",
                 "--out", str(tmp / "out")]) == 0
    np.testing.assert_allclose(read_linear_transform(tmp / "out" / "linear.mat"), m, atol=1e-9)
    t = sitk.ReadTransform(str(tmp / "out" / "linear.mat"))
    for a, b in zip(p, q):
        np.testing.assert_allclose(t.TransformPoint(tuple(a * LPS)), b * LPS, atol=1e-9)
    result = json.loads((tmp / "out" / "result.json").read_text())
    assert result["residual"]["tre_max_mm"] < 1e-9 and result["initial"]["tre_mean_mm"] > 1.0
    assert result["transforms"] == ["linear.mat"]
    assert "TRE before" in capsys.readouterr().out
    with pytest.raises(CliError, match="exists; use --force"):
        _run(["--fixed", str(tmp / "f.fcsv"), "--moving", str(tmp / "m.csv"), "--lps", "--model", "affine",
              "--out", str(tmp / "out")])


def test_tps_model_writes_a_displacement_field_sitk_applies(case):
    tmp, ref, p = case
    q = p + np.random.default_rng(0).normal(scale=2.0, size=p.shape)
    write_landmarks(p, tmp / "f.csv")
    write_landmarks(q, tmp / "m.csv")
    with pytest.raises(CliError, match="--reference: required with --model tps"):
        _run(["--fixed", str(tmp / "f.csv"), "--moving", str(tmp / "m.csv"), "--model", "tps", "--out", str(tmp / "o")])
    _run(["--fixed", str(tmp / "f.csv"), "--moving", str(tmp / "m.csv"), "--model", "tps", "--out", str(tmp / "o"),
          "--reference", str(ref)])
    field = sitk.ReadImage(str(tmp / "o" / "deformation.nii.gz"), sitk.sitkVectorFloat64)
    t = sitk.DisplacementFieldTransform(field)
    for a, b in zip(p, q):
        np.testing.assert_allclose(t.TransformPoint(tuple(a * LPS)), b * LPS, atol=1e-5)
    result = json.loads((tmp / "o" / "result.json").read_text())
    assert result["residual"]["tre_max_mm"] < 1e-6 and result["field_residual"]["tre_max_mm"] < 1e-5
    assert result["transforms"] == ["deformation.nii.gz"]


def test_main_reports_a_bad_landmark_file_in_one_line(tmp_path, monkeypatch, capsys):
    from omnireg.cli import main as cli_main

    registered = cli_main._commands()
    monkeypatch.setattr(cli_main, "_commands", lambda: registered if cli in registered else [*registered, cli])
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,z\n1,2,oops\n")
    assert cli_main.main(["landmarks", "--fixed", str(bad), "--moving", str(bad), "--model", "rigid",
                          "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.csv, line 2: expected a number for z" in err[0]
