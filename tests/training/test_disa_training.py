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
    with pytest.raises(ValueError, match="patch_size"):
        DISATrainConfig(patch_size=21)  # 4 m + 1 with m odd: the centre is not a feature node
    with pytest.raises(ValueError, match="teacher"):
        DISATrainConfig(teacher="ssd")
    with pytest.raises(ValueError, match="radii"):
        DISATrainConfig(patch_size=9, radii=(3, 5))


def test_normalised_within_group_error_weighs_every_place_by_its_own_spread():
    from omnireg.training.disa import RELATIVE_NORM_FLOOR, _within_group_error

    t = torch.tensor([[0.60, 0.58, 0.55, 0.50], [0.9, 0.5, 0.2, 0.1]]).reshape(-1)  # two groups of 4
    # a constant offset per group is free, with or without the normalisation
    assert float(_within_group_error(t + torch.tensor([0.3] * 4 + [-0.2] * 4), t, 4, normalize=True)) < 1e-12
    # a prediction flat within each group: the plain error is the mean target variance, the normalised one is
    # each group's variance over (variance + floor), averaged: the flat group of small changes counts as much
    flat = torch.zeros(8)
    var = t.reshape(2, 4).var(1, unbiased=False)
    torch.testing.assert_close(_within_group_error(flat, t, 4), var.mean())
    torch.testing.assert_close(_within_group_error(flat, t, 4, normalize=True), (var / (var + RELATIVE_NORM_FLOOR)).mean())
    # the normalised error of a prediction with half the target's deviations is the same for both groups
    half = 0.5 * (t.reshape(2, 4) - t.reshape(2, 4).mean(1, keepdim=True)).reshape(-1)
    per_group = [float(_within_group_error(half[i * 4:(i + 1) * 4], t[i * 4:(i + 1) * 4], 4, normalize=True)) for i in range(2)]
    ratio = [0.25 * float(v / (v + RELATIVE_NORM_FLOOR)) for v in var]
    assert per_group == pytest.approx(ratio, rel=1e-5)
    # dense form (groups of K crops x n nodes): each node of each group is one place
    tn = torch.stack([t, t.flip(0)], dim=1)  # (8, 2)
    flat2 = torch.zeros_like(tn)
    v2 = tn.reshape(2, 4, 2).var(1, unbiased=False)
    torch.testing.assert_close(_within_group_error(flat2, tn, 4, normalize=True), (v2 / (v2 + RELATIVE_NORM_FLOOR)).mean())


def test_grouped_batches_share_one_anchor_per_group_and_single_pairs_are_unchanged():
    a, b = _pair(0)
    sampler, cfg = _sampler([(a, b)], group_size=4, relative_weight=1.0)
    p1, p2, t = sampler.batch(0, torch.Generator().manual_seed(2), augment=False)
    assert p1.shape == (16, 1, 17, 17) and t.shape == (16,)
    groups = p1.reshape(4, 4, -1)
    torch.testing.assert_close(groups, groups[:, :1].expand_as(groups))  # one anchor per group
    assert not torch.equal(p2[0], p2[1])  # its own offset per member
    # augmented anchors stay shared (one augmentation per group)
    q1, _, _ = sampler.batch(0, torch.Generator().manual_seed(2))
    torch.testing.assert_close(q1.reshape(4, 4, -1), q1.reshape(4, 4, -1)[:, :1].expand(4, 4, -1))
    # the relative loss is zero for a prediction that differs from the target by a constant per group
    net = DISANet(DISAConfig(ndim=2))
    with torch.no_grad():
        plain = disa_loss(net, (p1, p2, t))
        grouped = disa_loss(net, (p1, p2, t), group_size=4, relative_weight=1.0)
    assert float(grouped) > float(plain)
    with pytest.raises(ValueError, match="group_size"):
        DISATrainConfig(batch_size=10, group_size=4)
    with pytest.raises(ValueError, match="relative_weight"):
        DISATrainConfig(relative_weight=1.0)


def test_dense_crop_targets_are_the_patch_scores_at_the_feature_nodes():
    from omnireg.similarity import lc2_patch_map
    from omnireg.training.disa import dense_nodes

    a, b = _pair(0)
    sampler, cfg = _sampler([(a, b)], group_size=2, crop_size=29)
    ga, gb = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    A, B, t, w = sampler.dense_batch(0, ga, augment=False)
    again = sampler.dense_batch(0, gb, augment=False)
    for x, y in zip((A, B, t, w), again):
        torch.testing.assert_close(x, y)
    nodes = dense_nodes(29, 5)
    assert nodes.tolist() == [2, 3, 4, 5]  # 4 k in [6, 22]
    assert A.shape == (8, 1, 29, 29) and B.shape == (16, 1, 29, 29) and t.shape == (16, 16) and w.shape == (16, 16)
    # each target is lc2_patch of the 17-voxel patches centred at that node
    i, j = 3, 5  # member 3 (group 1), node (3, 5) -> voxel (12, 20)
    ref = lc2_patch(A[1:2, :, 4:21, 12:29].double(), B[3:4, :, 4:21, 12:29].double(), radii=(3, 5))
    torch.testing.assert_close(t[3, (nodes == i).nonzero().item() * 4 + (nodes == j).nonzero().item()].double(), ref[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(lc2_patch_map(A[1:2].double(), B[3:4].double(), radii=(3, 5))[0, 0, 12, 20], ref[0], atol=1e-12, rtol=0)
    assert bool(((w > 0) & (w <= 1)).all())
    with pytest.raises(ValueError, match="crop_size"):
        DISATrainConfig(ndim=2, patch_size=17, radii=(3, 5), crop_size=15)


def _within_group_pearson(pred, target, k):
    p = pred.reshape(-1, k, pred.shape[-1]) if pred.ndim == 2 else pred.reshape(-1, k, 1)
    t = target.reshape(p.shape)
    p, t = p - p.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    den = (p.norm(dim=1) * t.norm(dim=1)).clamp_min(1e-12)
    ok = t.norm(dim=1) > 1e-3
    return float(((p * t).sum(1) / den)[ok].mean())


@pytest.mark.slow
def test_dense_crop_loss_learns_how_the_score_changes_with_the_offset():
    from omnireg.networks.disa import clip_norm
    from omnireg.training.disa import dense_nodes, disa_dense_loss

    a, _ = _pair(0, size=96)
    sampler, cfg = _sampler([(a, a)], group_size=4, crop_size=33, sign_flip=0.0, intensity_shift=0.0,
                            intensity_scale=(1.0, 1.0), patch_spacing_mm=1.0, background_fraction=0.0)
    batch = sampler.dense_batch(0, torch.Generator().manual_seed(0))
    nodes = torch.meshgrid(*([dense_nodes(33, 5)] * 2), indexing="ij")

    def within(net):
        with torch.no_grad():
            f = clip_norm(net(torch.cat(batch[:2])))
        fa, fb = f[:4][(slice(None), slice(None)) + nodes], f[4:][(slice(None), slice(None)) + nodes]
        pred = (fa.repeat_interleave(4, 0) * fb).sum(1).reshape(16, -1)
        return _within_group_pearson(pred, batch[2], 4)

    torch.manual_seed(0)
    net = DISANet(DISAConfig(ndim=2))
    before = within(net)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(150):
        loss = disa_dense_loss(net, batch, radius=5, group_size=4, relative_weight=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.3 * losses[0]
    # the dot products now follow the teacher across each place's offsets (an untrained network does not)
    after = within(net)
    assert after > 0.6 and after > before + 0.5, (before, after)


def test_offset_profile_is_seeded_and_follows_the_teacher_for_a_perfect_predictor():
    from omnireg.training.disa import offset_profile

    a, b = _pair(0)
    sampler, _ = _sampler([(a, b)])
    net = DISANet(DISAConfig(ndim=2))
    first, second = offset_profile(net, sampler, centres=16), offset_profile(net, sampler, centres=16)
    assert first == second and len(first["pred_mean"]) == len(first["offsets_mm"]) == 6
    assert first["teacher_mean"][0] > first["teacher_mean"][3] > first["teacher_mean"][5]


def test_init_starts_from_a_model_and_refuses_another_architecture(tmp_path):
    from omnireg.networks.store import save_model

    a, b = _pair(0)
    rows = [{"fixed": a, "moving": b, "split": "train"}]
    start = DISANet(DISAConfig(ndim=2))
    save_model(tmp_path / "start.pt", start, kind="disa")
    cfg = DISATrainConfig(ndim=2, patch_size=17, batch_size=4, radii=(3, 5), fit=FitConfig(steps=1, lr=1e-9, warmup=1))
    meta = train_disa(rows, tmp_path / "m.pt", config=cfg, init=tmp_path / "start.pt")
    model, saved = load_model(tmp_path / "m.pt", kind="disa")
    assert saved["init"] == str(tmp_path / "start.pt") and meta["init"] == saved["init"]
    for (k, v), w in zip(start.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(v, w, atol=1e-6, rtol=0, msg=k)  # one step at lr 1e-9
    save_model(tmp_path / "wide.pt", DISANet(DISAConfig(ndim=2, channels=(4, 8, 8))), kind="disa")
    with pytest.raises(ValueError, match="init: .*wide.pt"):
        train_disa(rows, tmp_path / "w.pt", config=cfg, init=tmp_path / "wide.pt")
