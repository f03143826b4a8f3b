"""``omnireg segment`` and ``omnireg train segmenter``: labels on the input's own grid with an integer dtype,
atomic refusal to overwrite, one-line user errors, and a short training run that records its command and resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from omnireg.cli.main import main
from omnireg.core import Grid, Image
from omnireg.io import load_image, save_image
from omnireg.networks.segmenter import Segmenter, SegmenterConfig
from omnireg.networks.store import load_model, read_model_file, save_model

TINY = {"enc_channels": (4, 8, 8), "dec_channels": (8, 8, 4, 4), "norm": "none"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def threshold_segmenter(ndim: int, labels=(0, 17)) -> Segmenter:
    """As in tests/networks/test_segmenter.py: class 1 where the [0, 1]-scaled intensity exceeds 0.5."""
    net = Segmenter(SegmenterConfig(ndim=ndim, labels=labels, spacing_mm=2.0, **TINY))
    centre = (1,) * ndim
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        for block in net.unet.encoder:
            block.conv.weight[(0, 0) + centre] = 1.0
        net.unet.remaining[0].conv.weight[(0, net.unet.dec_channels[net.unet.levels - 1]) + centre] = 1.0
        net.head.weight[(1, 0) + (0,) * ndim] = 1.0
        net.head.bias[1] = -0.5
    return net.eval()


@pytest.fixture
def ball_case(tmp_path):
    """An off-centre ball (radius 18 mm, intensity 900 on 100) on an oblique 1.2 x 0.9 x 3 mm grid, and the model file."""
    rot = np.linalg.qr(np.random.default_rng(4).normal(size=(3, 3)))[0]
    grid = Grid((40, 52, 18), spacing=(1.2, 0.9, 3.0), origin=(-20.0, -25.0, -22.0), direction=rot)
    centre = grid.transform_points(np.array([22.0, 24.0, 8.0]), "voxel", "world")
    dist = (grid.points("world", dtype=torch.float64) - torch.from_numpy(centre)).norm(dim=-1)
    save_image(Image(torch.where(dist < 18.0, 900.0, 100.0).float()[None], grid), tmp_path / "ball.nii.gz")
    model = save_model(tmp_path / "seg.pt", threshold_segmenter(3, labels=(0, 53)), kind="segmenter")
    return tmp_path / "ball.nii.gz", model, dist


def test_segment_writes_integer_labels_on_the_oblique_anisotropic_input_grid(ball_case, tmp_path, capsys):
    image, model, dist = ball_case
    out = tmp_path / "labels.nii.gz"
    assert main(["segment", str(image), "--model", str(model), "--out", str(out)]) == 0
    assert "1 structures" in capsys.readouterr().err
    labels = load_image(out)
    assert labels.grid.same_as(load_image(image).grid, atol=1e-4)
    assert not labels.data.dtype.is_floating_point and set(labels.data.unique().tolist()) == {0, 53}
    wrong = labels.data[0] != torch.where(dist < 18.0, 53, 0)
    assert float(wrong.float().mean()) < 0.05 and float((dist[wrong] - 18.0).abs().max()) < 2.5
    # an existing output is kept unless --force
    before = out.read_bytes()
    assert main(["segment", str(image), "--model", str(model), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["segment", str(image), "--model", str(model), "--out", str(out), "--force"]) == 0


def test_segment_user_errors_are_one_line(ball_case, tmp_path, capsys):
    image, _, _ = ball_case
    model_2d = save_model(tmp_path / "seg2d.pt", threshold_segmenter(2), kind="segmenter")
    out = str(tmp_path / "l.nii.gz")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model")
    for argv, text in [
        (["segment", str(image), "--model", str(model_2d), "--out", out], "2D segmenter"),
        (["segment", str(image), "--model", str(tmp_path / "none.pt"), "--out", out], "none.pt"),
        (["segment", str(tmp_path / "missing.nii.gz"), "--model", str(model_2d), "--out", out], "missing.nii.gz"),
        (["segment", str(image), "--model", str(garbage), "--out", out], "--model: "),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert text in err and "\n" not in err and err.startswith("omnireg segment: error:")
    assert not (tmp_path / "l.nii.gz").exists()
    from omnireg.networks.store import packaged_weights

    try:
        packaged_weights("segmenter_3d")
    except ValueError:  # until the shipped weights exist, the default names what is missing
        assert main(["segment", str(image), "--out", out]) == 2
        err = capsys.readouterr().err
        assert "--model: no packaged model 'segmenter_3d'" in err and "pass --model" in err


def test_train_segmenter_cli_runs_three_steps_records_its_command_and_resumes(tiny_label_maps, tmp_path, capsys):
    out = tmp_path / "seg.pt"
    argv = ["-q", "train", "segmenter", "--label-maps", str(tiny_label_maps), "--out", str(out), "--ndim", "2",
            "--steps", "3", "--val-every", "2", "--batch-size", "2", "--warmup", "1", "--checkpoint-every", "1",
            "--model-options", json.dumps({k: list(v) for k, v in TINY.items() if k != "norm"})]
    assert main(argv) == 0
    model, meta = load_model(out, kind="segmenter")
    assert model.config.ndim == 2 and meta["steps_done"] == 3
    assert meta["command"].startswith("omnireg -q train segmenter --label-maps")
    assert meta["training"]["synthesis"]["mode"] == "random" and 0 <= meta["validation"]["dice"] <= 1
    assert "validation Dice" in capsys.readouterr().err
    assert main(argv) == 2 and "exists" in capsys.readouterr().err
    state = read_model_file(out)["state_dict"]
    assert main(argv + ["--resume"]) == 0  # a finished run resumes to itself
    for k, v in read_model_file(out)["state_dict"].items():
        assert torch.equal(v, state[k])
    assert main(["train", "segmenter", "--label-maps", str(tiny_label_maps), "--out", str(tmp_path / "x.pt"),
                 "--model-options", '{"labels": [0, 1]}']) == 2
    assert "reserved" in capsys.readouterr().err


def test_register_with_metric_deepsim_and_a_weights_file(tmp_path, capsys):
    from omnireg.data import sample_path

    torch.manual_seed(0)
    weights = save_model(tmp_path / "seg2d.pt", Segmenter(SegmenterConfig(ndim=2, **{**TINY, "norm": "batch"})).eval(),
                         kind="segmenter")
    res = tmp_path / "res"
    code = main(["-q", "register", str(sample_path("t1_2d")), str(sample_path("pd_2d")), "--out", str(res), "--metric", "deepsim",
                 "--weights", str(weights), "--transform", "bspline", "--no-report", "--iterations", "3"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((res / "result.json").read_text())
    assert [s["metric"] for s in summary["config"]["stages"]] == ["deepsim"] * 3  # rigid, affine, bspline
    assert all(s["metric_options"]["weights"] == str(weights) for s in summary["config"]["stages"])
    assert np.isfinite(summary["metric_after"]["deepsim"]) and (res / "deformation.nii.gz").is_file()
