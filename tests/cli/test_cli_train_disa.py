"""`omnireg train disa` end to end (tiny 2D run): model file, validation report, resume, overwrite rules,
and `omnireg register --metric disa --weights` using the trained file."""

import json

import pytest
import torch

from omnireg.cli.main import main
from omnireg.core import Grid, Image
from omnireg.core.filters import gaussian_blur
from omnireg.io import save_image
from omnireg.networks.store import load_model


def _pairs(tmp_path):
    rows = ["fixed,moving,split"]
    for i, split in enumerate(("train", "val")):
        g = torch.Generator().manual_seed(i)
        x = gaussian_blur(torch.rand(1, 1, 64, 60, generator=g), 2.5)[0]
        x = (x - x.min()) / (x.max() - x.min())
        grid = Grid((64, 60), spacing=(1.5, 1.5))
        save_image(Image(x, grid), tmp_path / f"a{i}.nii.gz")
        save_image(Image(torch.sin(3 * x) ** 2, grid), tmp_path / f"b{i}.nii.gz")
        rows.append(f"a{i}.nii.gz,b{i}.nii.gz,{split}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "pairs.csv"


@pytest.mark.slow
def test_train_disa_writes_model_report_and_resumes(tmp_path, capsys):
    pairs = _pairs(tmp_path)
    out = tmp_path / "m.pt"
    args = ["-q", "train", "disa", "--pairs", str(pairs), "--out", str(out), "--ndim", "2", "--patch-size", "17",
            "--steps", "6", "--batch-size", "8", "--validation-patches", "32", "--checkpoint-every", "3"]
    assert main(args) == 0
    assert "held-out Pearson" in capsys.readouterr().out
    model, meta = load_model(out, kind="disa")
    assert model.config.ndim == 2 and meta["steps"] == 6 and "train disa" in meta["command"]
    report = json.loads((tmp_path / "m.validation.json").read_text())
    assert report["validation"]["n"] == 32 and (tmp_path / "m.validation.png").exists()
    # an existing model is not overwritten without --force; --resume continues the checkpoint
    assert main(args) == 2
    assert "exists; use --force" in capsys.readouterr().err
    assert main(args[:-2] + ["--checkpoint-every", "3", "--steps", "9", "--resume"]) == 0
    assert load_model(out)[1]["steps"] == 9


def test_train_disa_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "disa", "--pairs", str(tmp_path / "none.csv"), "--out", str(tmp_path / "m.pt")]) == 2
    assert "--pairs: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\nx,y\n")
    assert main(["train", "disa", "--pairs", str(bad), "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert "columns 'fixed' and 'moving'" in err and len(err.strip().splitlines()) == 1


def test_train_disa_on_dense_crops_from_an_initial_model(tmp_path, capsys):
    pairs = _pairs(tmp_path)
    first = tmp_path / "first.pt"
    assert main(["-q", "train", "disa", "--pairs", str(pairs), "--out", str(first), "--ndim", "2", "--patch-size", "17",
                 "--steps", "2", "--batch-size", "4", "--validation-patches", "8"]) == 0
    out = tmp_path / "dense.pt"
    args = ["-q", "train", "disa", "--pairs", str(pairs), "--out", str(out), "--ndim", "2", "--patch-size", "17",
            "--steps", "3", "--batch-size", "8", "--group-size", "4", "--relative-weight", "1", "--relative-norm",
            "--crop-size", "33", "--init", str(first), "--validation-patches", "8"]
    assert main(args) == 0, capsys.readouterr().err
    _, meta = load_model(out, kind="disa")
    cfg = meta["train_config"]
    assert (cfg["crop_size"], cfg["group_size"], cfg["relative_weight"], cfg["relative_norm"]) == (33, 4, 1.0, True)
    assert meta["init"] == str(first) and "--crop-size 33" in meta["command"]
    assert "within_pearson" in meta["validation"]["offset_profile"]
    capsys.readouterr()
    # bad values: one line naming the option, exit 2
    for bad, word in ((["--group-size", "3"], "group_size"), (["--crop-size", "30"], "crop_size"),
                      (["--init", str(tmp_path / "nope.pt")], "--init"), (["--patch-size", "21"], "patch_size")):
        assert main(args[:-2] + ["--force", "--validation-patches", "8"] + bad) == 2
        err = capsys.readouterr().err
        assert word in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("metric", ["disa"])
def test_register_with_a_learned_metric_and_weights_file(tmp_path, capsys, metric):
    pairs = _pairs(tmp_path)
    out = tmp_path / "m.pt"
    assert main(["-q", "train", "disa", "--pairs", str(pairs), "--out", str(out), "--ndim", "2", "--patch-size", "17",
                 "--steps", "2", "--batch-size", "4", "--validation-patches", "8"]) == 0
    res = tmp_path / "res"
    code = main(["-q", "register", str(tmp_path / "a1.nii.gz"), str(tmp_path / "b1.nii.gz"), "--out", str(res),
                 "--metric", metric, "--weights", str(out), "--transform", "rigid", "--no-report", "--iterations", "5"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((res / "result.json").read_text())
    assert summary["config"]["stages"][0]["metric_options"]["weights"] == str(out)
    # --weights without a learned metric, and a missing weights file, are one-line errors
    assert main(["register", str(tmp_path / "a1.nii.gz"), str(tmp_path / "b1.nii.gz"), "--out", str(tmp_path / "r2"),
                 "--weights", str(out)]) == 2
    assert "no stage uses a learned metric" in capsys.readouterr().err
    assert main(["register", str(tmp_path / "a1.nii.gz"), str(tmp_path / "b1.nii.gz"), "--out", str(tmp_path / "r3"),
                 "--metric", "disa", "--weights", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_train_mad_records_the_command_line_as_typed(tmp_path):
    from omnireg.data import sample_path

    out = tmp_path / "m.pt"
    images = f"{sample_path('t1_2d')},{sample_path('pd_2d')}"
    assert main(["-q", "train", "mad", "--images", images, "--out", str(out), "--ndim", "2", "--steps", "2",
                 "--batch-size", "4", "--no-progress"]) == 0
    command = load_model(out, kind="mad")[1]["command"]
    assert command.startswith("omnireg -q train mad --images ") and command.count("train mad") == 1
