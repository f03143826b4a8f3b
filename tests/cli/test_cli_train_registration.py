"""``omnireg train registration``: a short run writes a loadable model that records its command; user errors are one line."""

from __future__ import annotations

import json

from omnireg.cli.main import main
from omnireg.networks.store import load_model

TINY = '{"enc_channels": [4, 8], "dec_channels": [8, 8, 4]}'


def test_train_registration_cli_writes_model_log_and_provenance(tiny_label_maps, tmp_path, capsys):
    out = tmp_path / "vm.pt"
    argv = ["-q", "train", "registration", "--model", "voxelmorph", "--label-maps", str(tiny_label_maps), "--out", str(out),
            "--loss", "mse:1,dice:0.5", "--reg", "diffusion:0.1", "--mode", "t1", "--steps", "3", "--val-every", "2",
            "--lr", "1e-3", "--warmup", "1", "--model-options", TINY, "--synthesis-options", '{"deform_std_max_vox": 1}']
    assert main(argv) == 0
    model, meta = load_model(out)
    assert model.config.ndim == 3 and not model.config.diffeomorphic
    assert meta["command"].startswith("omnireg -q train registration --model voxelmorph")
    assert meta["training"]["loss"] == "mse:1,dice:0.5" and meta["training"]["synthesis"]["mode"] == "t1"
    assert meta["training"]["synthesis"]["deform_std_max_vox"] == 1
    assert meta["steps_done"] == 3 and 0 < meta["validation"]["dice"] <= 1
    assert "validation Dice" in capsys.readouterr().err
    lines = (tmp_path / "vm.log.jsonl").read_text().splitlines()
    assert sum("loss" in json.loads(x) for x in lines) == 3
    # refuses to overwrite without --force; resuming a finished run is allowed and changes nothing
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0
    capsys.readouterr()
    # fine-tuning from that model: another architecture is refused before any work, in one line naming the flag
    tuned = ["-q", "train", "registration", "--model", "voxelmorph", "--label-maps", str(tiny_label_maps), "--steps", "1",
             "--init-from", str(out), "--out", str(tmp_path / "ft.pt")]
    assert main(tuned + ["--model-options", '{"enc_channels": [4, 4], "dec_channels": [8, 8, 4]}']) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: --init-from:" in err and "enc_channels" in err
    assert not (tmp_path / "ft.pt").exists()
    (tmp_path / "junk.pt").write_text("junk")
    assert main(tuned[:-3] + [str(tmp_path / "junk.pt"), "--out", str(tmp_path / "ft.pt")]) == 2
    assert "error: --init-from: " in capsys.readouterr().err and not (tmp_path / "ft.pt").exists()
    assert main(tuned + ["--model-options", TINY]) == 0
    assert load_model(tmp_path / "ft.pt")[1]["data"]["init_from"]["steps_done"] == 3


def test_train_registration_cli_user_errors(tiny_label_maps, tmp_path, capsys):
    base = ["train", "registration", "--out", str(tmp_path / "m.pt")]
    assert main(base) == 2
    assert "--label-maps" in capsys.readouterr().err
    assert main(base + ["--label-maps", str(tiny_label_maps), "--loss", "ncc:x"]) == 2
    assert "weight of 'ncc'" in capsys.readouterr().err
    assert main(base + ["--label-maps", str(tiny_label_maps), "--model-options", "[1]"]) == 2
    assert "--model-options" in capsys.readouterr().err
    assert main(base + ["--label-maps", str(tmp_path)]) == 2
    assert "prepared.json" in capsys.readouterr().err


def test_train_registration_on_real_images_without_labels(tmp_path, capsys):
    import torch

    from omnireg.core import Grid, Image
    from omnireg.io import save_image

    grid = Grid((16, 20, 16), spacing=(2.0, 2.0, 2.0))
    paths = []
    for k in range(3):
        g = torch.Generator().manual_seed(k)
        x = torch.nn.functional.interpolate(torch.rand(1, 1, 4, 5, 4, generator=g), size=(16, 20, 16), mode="trilinear")
        save_image(Image(100 * x[0], grid), tmp_path / f"im{k}.nii.gz")
        paths.append(str(tmp_path / f"im{k}.nii.gz"))
    out = tmp_path / "img.pt"
    argv = ["-q", "train", "registration", "--model", "voxelmorph", "--images", ",".join(paths), "--out", str(out),
            "--loss", "ncc", "--steps", "2", "--model-options", TINY]
    assert main(argv) == 0
    _, meta = load_model(out)
    assert meta["data"] == {"images": 3} and meta["validation"] is None and meta["steps_done"] == 2
    assert main(argv[:-6] + ["--loss", "dice", "--steps", "2", "--force", "--model-options", TINY]) == 2
    assert "dice term needs label maps" in capsys.readouterr().err
