"""MAD training: files written, exact resume after an interruption, batches with known distances, CLI errors."""

import argparse

import pytest
import torch

from omnireg.core import Grid, Image
from omnireg.core.filters import gaussian_blur
from omnireg.io import save_image
from omnireg.networks.store import load_model
from omnireg.training.loop import step_generator
from omnireg.networks.mad import MADConfig
from omnireg.training.loop import FitConfig
from omnireg.training.mad import MADPairSampler, MADTrainConfig, load_mad_volume, train_mad


def _blobs(path, seed):
    g = torch.Generator().manual_seed(seed)
    x = gaussian_blur(torch.rand(1, 1, 64, 64, generator=g), 2.0)[0]
    save_image(Image(x, Grid((64, 64), (2.0, 2.0))), path)
    return path


def _tiny(**kw):
    network = MADConfig(ndim=2, patch_size=8, patch_spacing_mm=2.0, widths=(2, 4, 4, 4), head_width=4, max_distance_mm=10.0)
    fit = FitConfig(steps=4, lr=2e-3, weight_decay=1e-4, warmup=50, checkpoint_every=1)
    return MADTrainConfig(network=network, pairs_per_volume=4, fit=fit, **kw)


def test_pairs_have_the_requested_offsets_and_identical_patches_at_zero(tmp_path):
    vol = load_mad_volume(_blobs(tmp_path / "a.nii.gz", 0), spacing_mm=2.0)
    cfg = _tiny(original_fraction=1.0)
    sampler = MADPairSampler([vol], cfg)
    off = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    pairs, dist = sampler.pairs_from(vol, vol.data, vol.data, 2, torch.Generator().manual_seed(0), offsets_mm=off, rotate=False)
    torch.testing.assert_close(dist, torch.tensor([0.0, 5.0]))
    torch.testing.assert_close(pairs[0, 0], pairs[0, 1])  # same appearance, same place: identical patches
    batch = sampler(0, step_generator(0, 0))
    assert batch[0].shape == (4, 2, 8, 8) and bool((batch[1] <= 10.0 + 1e-6).all())


def test_training_writes_model_and_report_and_resume_is_exact(tmp_path):
    imgs = [_blobs(tmp_path / f"i{k}.nii.gz", k) for k in range(2)]
    full = train_mad(imgs, tmp_path / "full.pt", config=_tiny(), validation_images=[imgs[0]])
    assert (tmp_path / "full.validation.json").is_file() and (tmp_path / "full.validation.png").is_file()
    assert "volumes" in full and full["training"]["steps"] == 4

    def stop_at_two(ev):
        if ev.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_mad(imgs, tmp_path / "part.pt", config=_tiny(), progress=stop_at_two)
    assert (tmp_path / "part.pt.ckpt").is_file()
    resumed = train_mad(imgs, tmp_path / "part.pt", config=_tiny(), resume=True)
    assert resumed["training"]["resumed_from"] == 2
    a, _ = load_model(tmp_path / "full.pt", kind="mad")
    b, _ = load_model(tmp_path / "part.pt", kind="mad")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)


def test_cli_refuses_to_overwrite_and_names_missing_images(tmp_path):
    from omnireg.cli.train_mad import add_arguments, run

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "m.pt"
    out.write_bytes(b"x")
    with pytest.raises(FileExistsError, match="--out"):
        run(parser.parse_args(["--images", str(tmp_path / "a.nii.gz"), "--out", str(out)]))
    with pytest.raises(FileNotFoundError, match="--images"):
        run(parser.parse_args(["--images", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "n.pt")]))
    with pytest.raises(ValueError, match="kernel_sizes"):
        _tiny(randconv={"kernel_sizes": (2,)})
