"""``omnireg evaluate``: labels, landmarks through an ANTs-order transform chain, Jacobian, JSON/CSV output."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import torch

from omnireg.cli import evaluate as cli
from omnireg.cli.main import CliError
from omnireg.core import Grid, Image
from omnireg.io import save_image, write_linear_transform
from omnireg.landmarks import write_landmarks


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omnireg")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", *argv])
    return args.func(args)


@pytest.fixture
def case(tmp_path):
    grid = Grid((10, 9, 8), (1.0, 1.5, 2.0), origin=(-5.0, -6.0, -7.0))
    a = np.zeros(grid.shape, np.uint8)
    a[2:7, 2:7, 2:6] = 1
    a[7:9, 1:8, 1:7] = 2
    b = np.roll(a, 1, axis=0)
    save_image(Image(torch.from_numpy(a)[None], grid), tmp_path / "fixed_labels.nii.gz")
    save_image(Image(torch.from_numpy(b)[None], grid), tmp_path / "warped_labels.nii.gz")
    (tmp_path / "lut.tsv").write_text("id\tname\n1\tbox\n2\tslab\n")
    m1 = np.eye(4)
    m1[:3, 3] = [2.0, 0.0, -1.0]
    m2 = np.diag([1.1, 0.9, 1.0, 1.0])
    write_linear_transform(m1, tmp_path / "t1.mat")
    write_linear_transform(m2, tmp_path / "t2.mat")
    p = np.random.default_rng(0).uniform(-5, 5, size=(5, 3))
    # ANTs order "-t t1 -t t2": t2 acts first, T = t1 ∘ t2
    q = p @ m2[:3, :3].T
    q = q + m1[:3, 3]
    write_landmarks(p, tmp_path / "fixed.fcsv")
    write_landmarks(q, tmp_path / "moving.mrk.json")
    return tmp_path, grid


def test_evaluate_all_sections_to_json(case, capsys):
    tmp, _ = case
    out = tmp / "report.json"
    _run([
        "--fixed-labels", str(tmp / "fixed_labels.nii.gz"), "--warped-labels", str(tmp / "warped_labels.nii.gz"),
        "--lut", str(tmp / "lut.tsv"),
        "--landmarks-fixed", str(tmp / "fixed.fcsv"), "--landmarks-moving", str(tmp / "moving.mrk.json"),
        "--transform", str(tmp / "t1.mat"), str(tmp / "t2.mat"),
        "--jacobian-of", str(tmp / "t2.mat"),
        "--out", str(out),
    ])
    printed = capsys.readouterr().out
    assert "1 box" in printed and "2 slab" in printed and "tre_mean_mm" in printed
    report = json.loads(out.read_text())
    box = report["labels"]["1"]
    assert box["name"] == "box" and box["dice"] == pytest.approx(2 * 20 * 4 / (2 * 25 * 4))
    assert box["hd95_mm"] == pytest.approx(1.0) and box["hd_mm"] == pytest.approx(1.0)
    lm = report["landmarks"]["fixed.fcsv"]
    assert lm["tre_max_mm"] < 1e-4 and lm["initial_tre_mean_mm"] > 1.0  # float32 transforms
    jac = report["jacobian"]
    # det = 1.1 * 0.9 inside; ITK's border rule halves the derivative of u on the outer slices:
    # 1.05 * 0.9 on the first/last slice of axis 0, 1.1 * 0.95 on those of axis 1
    assert jac["jacobian_min"] == pytest.approx(1.05 * 0.9, abs=1e-6)
    assert jac["jacobian_max"] == pytest.approx(1.1 * 0.95, abs=1e-6)
    assert jac["jacobian_nonpositive_percent"] == 0.0


def test_evaluate_the_wrong_order_gives_a_larger_tre_and_csv(case):
    tmp, _ = case
    out = tmp / "report.csv"
    _run(["--landmarks-fixed", str(tmp / "fixed.fcsv"), "--landmarks-moving", str(tmp / "moving.mrk.json"),
          "--transform", str(tmp / "t2.mat"), str(tmp / "t1.mat"), "--out", str(out)])
    rows = list(csv.DictReader(out.open()))
    tre = [float(r["value"]) for r in rows if r["metric"] == "tre_mean_mm"]
    assert tre and tre[0] > 0.05


def test_evaluate_usage_errors(case):
    tmp, _ = case
    with pytest.raises(CliError, match="nothing to evaluate"):
        _run([])
    with pytest.raises(CliError, match="--fixed-labels and --warped-labels: both are needed"):
        _run(["--fixed-labels", str(tmp / "fixed_labels.nii.gz")])
    with pytest.raises(CliError, match="--reference: required with --jacobian-of"):
        _run(["--jacobian-of", str(tmp / "t1.mat")])
    with pytest.raises(CliError, match="--out: expected a file name ending in .json or .csv"):
        _run(["--jacobian-of", str(tmp / "t1.mat"), "--reference", str(tmp / "fixed_labels.nii.gz"),
              "--out", str(tmp / "r.txt")])
    with pytest.raises(CliError, match="--transform: no such file"):
        _run(["--landmarks-fixed", str(tmp / "fixed.fcsv"), "--landmarks-moving", str(tmp / "moving.mrk.json"),
              "--transform", str(tmp / "missing.mat")])


def test_main_reports_a_usage_error_in_one_line(monkeypatch, capsys):
    from omnireg.cli import main as cli_main

    registered = cli_main._commands()
    monkeypatch.setattr(cli_main, "_commands", lambda: registered if cli in registered else [*registered, cli])
    assert cli_main.main(["evaluate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("omnireg evaluate: error: nothing to evaluate")
