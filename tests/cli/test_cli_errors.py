"""User errors of every sub-command: one line naming the flag (or the config file and key), exit code 2, no work done.

Each case runs ``omnireg.cli.main.main`` with one bad input among good ones and checks the whole of stderr:
exactly one line, ``omnireg COMMAND: error: <flag>: ...``, and that no output was written.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from omnireg.cli.main import main
from omnireg.core import Grid, Image
from omnireg.io import save_image, write_linear_transform
from omnireg.landmarks import write_landmarks

GRID = Grid((16, 16, 16), (2.0, 2.0, 2.0), origin=(-15.0, -15.0, -15.0))
FAST = "init: geometry\nstages:\n  - transform: rigid\n    metric: ncc\n    shrink: [1]\n    iterations: [3]\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli_errors")
    x = torch.zeros(1, *GRID.shape)
    x[0, 4:12, 5:11, 6:10] = 1.0
    x = x + 0.1 * torch.linspace(0, 1, 16)[None, :, None, None]
    save_image(Image(x, GRID), d / "f.nii.gz")
    save_image(Image(x.roll(1, 1), GRID), d / "m.nii.gz")
    labels = (x > 0.5).to(torch.int16)
    save_image(Image(labels, GRID), d / "labels.nii.gz")
    save_image(Image(x * 1.5 + 0.25, GRID), d / "float_labels.nii.gz")  # an intensity image, not labels
    save_image(Image(labels.to(torch.float32) * 3, GRID), d / "integral_float_labels.nii.gz")
    noisy = (x * 1000 + 50 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).round()
    save_image(Image(noisy.to(torch.int16), GRID), d / "int_intensity.nii.gz")  # an int16 scan, not labels
    save_image(Image(torch.zeros(1, *GRID.shape), GRID), d / "empty.nii.gz")
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    save_image(Image(nan, GRID), d / "nan.nii.gz")
    save_image(Image(x[:, :, :, 0], Grid((16, 16), (2.0, 2.0))), d / "two.nii.gz")
    save_image(Image(torch.ones(1, 8, 8, 8, dtype=torch.int16), Grid((8, 8, 8), (4.0, 4.0, 4.0))), d / "other_grid.nii.gz")
    (d / "garbage.nii.gz").write_bytes(b"not an image at all")
    (d / "garbage.mat").write_bytes(b"not a transform")
    write_linear_transform(np.eye(4), d / "eye.mat")
    write_landmarks(np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 4.0, 2.0]]), d / "lm.csv")
    write_landmarks(np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]), d / "lm2d.csv")
    (d / "lm_bad.csv").write_text("x,y,z\n1,2,3\n4,five,6\n")
    (d / "fast.yaml").write_text(FAST)
    (d / "bad_key.yaml").write_text(FAST + "foo: 1\n")
    (d / "bad_stage_key.yaml").write_text(FAST.replace("metric: ncc", "metrik: ncc"))
    (d / "bad_metric.yaml").write_text(FAST.replace("metric: ncc", "metric: foo"))
    (d / "bad_preset.yaml").write_text("preset: foo\n")
    (d / "bad_value.yaml").write_text(FAST.replace("shrink: [1]", "shrink: [0]"))
    (d / "bad_yaml.yaml").write_text("stages: [\n")
    (d / "pairs_no_moving.csv").write_text("fixed\nf.nii.gz\n")
    (d / "pairs.csv").write_text("fixed,moving\nf.nii.gz,m.nii.gz\n")
    return d


REG = ["register", "{d}/f.nii.gz", "{d}/m.nii.gz", "--out", "{t}/out", "--config", "{d}/fast.yaml", "--no-progress",
       "--no-report"]


def _with(base: list[str], **replace) -> list[str]:
    out = list(base)
    for old, new in replace.items():
        out[out.index(old.replace("_", "-") if old.startswith("--") else old)] = new
    return out


CASES = {
    # register: options
    "metric": (["register", "{d}/f.nii.gz", "{d}/m.nii.gz", "--out", "{t}/out", "--metric", "foo"],
               r"--metric: expected one of .*ncc.*, got 'foo'"),
    "preset": (["register", "{d}/f.nii.gz", "{d}/m.nii.gz", "--out", "{t}/out", "--preset", "foo"],
               r"argument --preset: invalid choice: 'foo'"),
    "levels": (REG + ["--levels", "0"], r"--levels: expected an integer >= 1, got 0"),
    "iterations": (REG + ["--iterations", "-1"], r"--iterations: expected an integer >= 0, got -1"),
    "device": (REG + ["--device", "foo"], r"--device: expected cpu, cuda or cuda:N, got 'foo'"),
    # register: images
    "missing fixed": (_with(REG, **{"{d}/f.nii.gz": "{d}/none.nii.gz"}), r"FIXED: no such file or directory: .*none.nii.gz"),
    "not an image": (_with(REG, **{"{d}/m.nii.gz": "{d}/garbage.nii.gz"}), r"MOVING: cannot read image .*garbage.nii.gz"),
    "dimension": (_with(REG, **{"{d}/m.nii.gz": "{d}/two.nii.gz"}), r"MOVING: expected a 3D image like FIXED, got 2D"),
    "nan": (_with(REG, **{"{d}/f.nii.gz": "{d}/nan.nii.gz"}), r"FIXED: the image contains NaN or infinite values"),
    "constant": (_with(REG, **{"{d}/m.nii.gz": "{d}/empty.nii.gz"}), r"MOVING: the image is constant"),
    # register: masks, labels, landmarks, initial transform
    "empty mask": (REG + ["--fixed-mask", "{d}/empty.nii.gz"], r"--fixed-mask: the mask is empty \(all zero\)"),
    "mask grid": (REG + ["--moving-mask", "{d}/other_grid.nii.gz"], r"--moving-mask: expected the grid of the MOVING image"),
    "label grid": (REG + ["--fixed-labels", "{d}/other_grid.nii.gz"], r"--fixed-labels: expected the grid of the FIXED image"),
    "float fixed labels": (REG + ["--fixed-labels", "{d}/float_labels.nii.gz", "--moving-labels", "{d}/labels.nii.gz"],
                           r"--fixed-labels: expected a label map \(integer values\), got non-integer values"),
    "float moving labels": (REG + ["--moving-labels", "{d}/float_labels.nii.gz"],
                            r"--moving-labels: expected a label map \(integer values\), got non-integer values"),
    "int16 intensity labels": (REG + ["--fixed-labels", "{d}/int_intensity.nii.gz", "--moving-labels", "{d}/labels.nii.gz"],
                               r"--fixed-labels: expected a label map, got an image with \d+ distinct values where only "),
    "missing labels": (REG + ["--fixed-labels", "{d}/none.nii.gz"], r"--fixed-labels: no such file or directory"),
    "labels not an image": (REG + ["--moving-labels", "{d}/garbage.nii.gz"], r"--moving-labels: cannot read image"),
    "landmarks dimension": (REG + ["--fixed-landmarks", "{d}/lm.csv", "--moving-landmarks", "{d}/lm2d.csv"],
                            r"--moving-landmarks: expected 3D points like --fixed-landmarks, got 2D"),
    "one landmark file": (REG + ["--fixed-landmarks", "{d}/lm.csv"], r"--moving-landmarks: required as well"),
    "bad landmark file": (REG + ["--fixed-landmarks", "{d}/lm_bad.csv", "--moving-landmarks", "{d}/lm.csv"],
                          r"--fixed-landmarks: .*lm_bad.csv, line 3: expected a number for y"),
    "initial transform": (REG + ["--initial-transform", "{d}/lm.csv"], r"--initial-transform: cannot read transform file"),
    "initial garbage": (REG + ["--initial-transform", "{d}/garbage.mat"], r"--initial-transform: "),
    # register: configuration files
    "config key": (_with(REG, **{"{d}/fast.yaml": "{d}/bad_key.yaml"}),
                   r"--config .*bad_key.yaml: unknown key 'foo'; valid: .*stages"),
    "config stage key": (_with(REG, **{"{d}/fast.yaml": "{d}/bad_stage_key.yaml"}),
                         r"--config .*bad_stage_key.yaml: stages\[0\]: unknown key 'metrik'; valid: .*metric"),
    "config metric": (_with(REG, **{"{d}/fast.yaml": "{d}/bad_metric.yaml"}),
                      r"--config .*bad_metric.yaml: stages\[0\]\.metric: expected one of .*, got 'foo'"),
    "config preset": (_with(REG, **{"{d}/fast.yaml": "{d}/bad_preset.yaml"}),
                      r"--config .*bad_preset.yaml: preset: expected one of .*affine.*, got 'foo'"),
    "config value": (_with(REG, **{"{d}/fast.yaml": "{d}/bad_value.yaml"}), r"--config .*bad_value.yaml: .*shrink"),
    "config syntax": (_with(REG, **{"{d}/fast.yaml": "{d}/bad_yaml.yaml"}), r"--config: cannot parse .*bad_yaml.yaml"),
    "config missing": (_with(REG, **{"{d}/fast.yaml": "{d}/none.yaml"}), r"--config: no such file or directory"),
    # apply
    "apply moving": (["apply", "-m", "{d}/none.nii.gz", "-r", "{d}/f.nii.gz", "-t", "{d}/eye.mat", "-o", "{t}/w.nii.gz"],
                     r"--moving: no such file or directory"),
    "apply reference": (["apply", "-m", "{d}/m.nii.gz", "-r", "{d}/garbage.nii.gz", "-t", "{d}/eye.mat", "-o", "{t}/w.nii.gz"],
                        r"--reference: cannot read image"),
    "apply transform": (["apply", "-m", "{d}/m.nii.gz", "-r", "{d}/f.nii.gz", "-t", "{d}/none.mat", "-o", "{t}/w.nii.gz"],
                        r"--transform: no such file or directory"),
    "apply bad transform": (["apply", "-m", "{d}/m.nii.gz", "-r", "{d}/f.nii.gz", "-t", "{d}/garbage.mat", "-o", "{t}/w.nii.gz"],
                            r"--transform: "),
    "apply dimension": (["apply", "-m", "{d}/two.nii.gz", "-r", "{d}/f.nii.gz", "-t", "{d}/eye.mat", "-o", "{t}/w.nii.gz"],
                        r"--moving: expected a 3D image like --reference, got 2D"),
    "apply nan": (["apply", "-m", "{d}/nan.nii.gz", "-r", "{d}/f.nii.gz", "-t", "{d}/eye.mat", "-o", "{t}/w.nii.gz"],
                  r"--moving: the image contains NaN or infinite values"),
    # evaluate
    "evaluate float labels": (["evaluate", "--fixed-labels", "{d}/float_labels.nii.gz", "--warped-labels", "{d}/labels.nii.gz"],
                              r"--fixed-labels: expected a label map \(integer values\), got non-integer values"),
    "evaluate label grid": (["evaluate", "--fixed-labels", "{d}/labels.nii.gz", "--warped-labels", "{d}/other_grid.nii.gz"],
                            r"--warped-labels: expected a label map on the grid of --fixed-labels"),
    "evaluate missing": (["evaluate", "--fixed-labels", "{d}/labels.nii.gz", "--warped-labels", "{d}/none.nii.gz"],
                         r"--warped-labels: no such file or directory"),
    "evaluate landmarks": (["evaluate", "--landmarks-fixed", "{d}/lm_bad.csv", "--landmarks-moving", "{d}/lm.csv"],
                           r"--landmarks-fixed: .*lm_bad.csv, line 3"),
    "evaluate landmark dims": (["evaluate", "--landmarks-fixed", "{d}/lm.csv", "--landmarks-moving", "{d}/lm2d.csv"],
                               r"--landmarks-moving: expected 3D points like --landmarks-fixed, got 2D"),
    "evaluate jacobian": (["evaluate", "--jacobian-of", "{d}/garbage.mat", "--reference", "{d}/f.nii.gz"],
                          r"--jacobian-of: "),
    "evaluate empty mask": (["evaluate", "--jacobian-of", "{d}/eye.mat", "--reference", "{d}/f.nii.gz", "--mask",
                             "{d}/empty.nii.gz"], r"--mask: the mask is empty \(all zero\)"),
    # landmarks
    "landmarks missing": (["landmarks", "--fixed", "{d}/none.csv", "--moving", "{d}/lm.csv", "--model", "rigid", "-o", "{t}/out"],
                          r"--fixed: no such file or directory"),
    "landmarks malformed": (["landmarks", "--fixed", "{d}/lm.csv", "--moving", "{d}/lm_bad.csv", "--model", "rigid", "-o",
                             "{t}/out"], r"--moving: .*lm_bad.csv, line 3: expected a number for y"),
    "landmarks dims": (["landmarks", "--fixed", "{d}/lm.csv", "--moving", "{d}/lm2d.csv", "--model", "rigid", "-o", "{t}/out"],
                       r"--moving: expected 3D points like --fixed, got 2D"),
    "landmarks model": (["landmarks", "--fixed", "{d}/lm.csv", "--moving", "{d}/lm.csv", "--model", "foo", "-o", "{t}/out"],
                        r"argument --model: invalid choice: 'foo'"),
    # batch
    "batch columns": (["batch", "{d}/pairs_no_moving.csv", "--out", "{t}/out", "--no-dask"],
                      r"pairs_no_moving.csv header: missing required column\(s\) 'moving'"),
    "batch preset": (["batch", "{d}/pairs.csv", "--out", "{t}/out", "--preset", "foo"], r"argument --preset: invalid choice"),
    "batch config": (["batch", "{d}/pairs.csv", "--out", "{t}/out", "--config", "{d}/bad_key.yaml", "--no-dask"],
                     r"--config .*bad_key.yaml: unknown key 'foo'"),
    "batch threads": (["batch", "{d}/pairs.csv", "--out", "{t}/out", "--threads-per-task", "0"],
                      r"--threads-per-task: expected an integer >= 1, got 0"),
    "batch missing csv": (["batch", "{d}/none.csv", "--out", "{t}/out"], r"PAIRS: no such file: .*none.csv"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_is_one_line_naming_the_flag_with_exit_code_2(files, case, capsys, tmp_path):
    argv, pattern = CASES[case]
    argv = [a.format(d=files, t=tmp_path) for a in argv]
    code = main(argv)
    err = capsys.readouterr().err
    command = argv[0]
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert re.match(rf"omnireg {command}: error: {pattern}", err.strip()), err
    for bad in ("name:", "fixed:", "moving:", "config:", "Traceback"):
        assert not re.search(rf"(^|: ){re.escape(bad)}", err.split("error: ", 1)[1]), err
    assert list(tmp_path.iterdir()) == [], "outputs were written"


def test_a_float_label_map_holding_integers_is_accepted_as_labels(files, capsys, tmp_path):
    out = tmp_path / "out"
    argv = [a.format(d=files, t=tmp_path) for a in REG]
    assert main(argv + ["--fixed-labels", f"{files}/integral_float_labels.nii.gz",
                        "--moving-labels", f"{files}/integral_float_labels.nii.gz"]) == 0, capsys.readouterr().err
    from omnireg.io import load_image

    warped = load_image(out / "warped_labels.nii.gz")
    assert not warped.data.is_floating_point() and set(warped.data.unique().tolist()) <= {0, 3}
    import json

    result = json.loads((out / "result.json").read_text())
    assert result["evaluation"]["labels"]["per_label"][0]["label"] == 3
