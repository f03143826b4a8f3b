"""DISA training: the teacher, the batch sampler, a short training run that learns, exact resume."""

import json

import numpy as np
import pytest
import torch

from omnireg.core import Grid, Image
from omnireg.core.filters import gaussian_blur
from omnireg.networks.disa import DISAConfig, DISANet
from omnireg.networks.store import load_model
from omnireg.similarity import lc2_patch
from omnireg.training.disa import DISAPairSampler, DISATrainConfig, disa_loss, teacher_similarity, train_disa
from omnireg.training.loop import FitConfig
from omnireg.training.patches import load_training_volume, random_frames, sample_patches


def _pair(seed=0, size=72):
    g = torch.Generator().manual_seed(seed)
    x = gaussian_blur(torch.rand(1, 1, size, size, generator=g, dtype=torch.float64), 3.0)
    x = (x - x.min()) / (x.max() - x.min())
    y = torch.sin(3.0 * x) ** 2 + 0.2 * x  # a non-monotone "second modality"
    grid = Grid((size, size), spacing=(1.0, 1.0))
    return Image(x[0].float(), grid), Image(y[0].float(), grid)


def _sampler(pairs, **kw):
    cfg = DISATrainConfig(ndim=2, patch_size=17, batch_size=16, radii=(3, 5), max_offset_mm=8.0, **kw)
    vols = [(load_training_volume(a), load_training_volume(b)) for a, b in pairs]
    return DISAPairSampler(vols, cfg), cfg


def test_lc2_teacher_is_one_for_a_linear_copy_and_matches_lc2_patch():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 1, 17, 17, generator=g, dtype=torch.float64)
    torch.testing.assert_close(teacher_similarity("lc2", a, 2 * a + 1, radii=(3, 5)), torch.ones(4, dtype=torch.float64), atol=1e-5, rtol=0)
    b = torch.rand(4, 1, 17, 17, generator=g, dtype=torch.float64)
    torch.testing.assert_close(teacher_similarity("lc2", a, b, radii=(3, 5)), lc2_patch(a, b, radii=(3, 5)))
    for name in ("nmi", "mi", "mind"):
        v = teacher_similarity(name, a.float(), b.float())
        assert v.shape == (4,) and bool(((v >= 0) & (v <= 1)).all())


def test_patches_of_an_identity_frame_are_the_voxels():
    a, _ = _pair()
    vol = load_training_volume(a)
    centre = torch.as_tensor(a.grid.transform_points(np.array([[30.0, 40.0]]), "voxel", "world"))
    frame = torch.eye(2, dtype=torch.float64)[None]
    patch = sample_patches(vol, centre, frame, size=5, spacing_mm=1.0)
    torch.testing.assert_close(patch[0, 0], vol.data[0, 0, 28:33, 38:43])


def test_random_frames_are_orthonormal():
    f = random_frames(50, 3, 2, torch.Generator().manual_seed(1))
    torch.testing.assert_close(f.transpose(1, 2) @ f, torch.eye(2, dtype=torch.float64).expand(50, 2, 2))


def test_sampler_is_seeded_and_caps_low_targets():
    sampler, cfg = _sampler([_pair(0)])
    a = sampler.batch(0, torch.Generator().manual_seed(5))
    b = sampler.batch(0, torch.Generator().manual_seed(5))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
    p1, p2, t = a
    assert p1.shape == (16, 1, 17, 17) and t.shape == (16,)
    assert float((t < cfg.low_target).float().mean()) <= 0.5


def test_short_training_reduces_the_held_out_loss_and_resume_is_exact(tmp_path):
    a, b = _pair(0)
    va, vb = _pair(1)
    sampler, _ = _sampler([(va, vb)])
    held_out = sampler.batch(0, torch.Generator().manual_seed(99), augment=False)
    rows = [{"fixed": a, "moving": b, "split": "train"}]
    cfg = DISATrainConfig(ndim=2, patch_size=17, batch_size=16, radii=(3, 5), max_offset_mm=8.0,
                          validation_patches=64, fit=FitConfig(steps=30, lr=3e-3, warmup=5, checkpoint_every=15, seed=3))
    torch.manual_seed(cfg.fit.seed)

    untrained = DISANet(DISAConfig(ndim=2))
    with torch.no_grad():
        before = float(disa_loss(untrained.eval(), held_out))
    meta = train_disa(rows + [{"fixed": va, "moving": vb, "split": "val"}], tmp_path / "m.pt", config=cfg)
    model, saved = load_model(tmp_path / "m.pt", kind="disa")
    with torch.no_grad():
        after = float(disa_loss(model, held_out))
    assert after < 0.8 * before, (before, after)
    assert saved["steps"] == 30 and saved["validation"]["n"] == 64
    assert np.isfinite(saved["validation"]["pearson"])
    assert (tmp_path / "m.validation.png").stat().st_size > 1000
    assert json.loads((tmp_path / "m.validation.json").read_text())["steps"] == 30
    # resume: interrupt the same run after its checkpoint at step 15, resume: same weights as uninterrupted
    def interrupt(ev):
        if ev.step == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_disa(rows, tmp_path / "r.pt", config=cfg, progress=interrupt)
    assert not (tmp_path / "r.pt").exists() and (tmp_path / "r.pt.ckpt").exists()
    train_disa(rows, tmp_path / "r.pt", config=cfg, resume=True)
    resumed, _ = load_model(tmp_path / "r.pt", kind="disa")
    for (k, v), w in zip(model.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(v, w, msg=k)
    assert meta["loss_last_10pct"] < meta["loss_first_10pct"]


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="patch_size"):
        DISATrainConfig(patch_size=24)
    with pytest.raises(ValueError, match="teacher"):
        DISATrainConfig(teacher="ssd")
    with pytest.raises(ValueError, match="radii"):
        DISATrainConfig(patch_size=9, radii=(3, 5))
