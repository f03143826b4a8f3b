"""DeepSim: identity and symmetry, masks, gradients (to the images, never into the frozen segmenter), the
engine-facing feature maps, and a registration through the engine."""

import math

import numpy as np
import pytest
import torch

from omnireg.core import Grid, Image
from omnireg.networks.segmenter import Segmenter, SegmenterConfig, feature_grid
from omnireg.networks.store import save_model
from omnireg.similarity import DeepSim, get_similarity
from omnireg.similarity.deepsim import DeepSimFeatures, cosine_map, deepsim_features, pool_mask

TINY = {"enc_channels": (4, 8, 8), "dec_channels": (8, 8, 4, 4)}


def _decoder(net, x):
    """The U-Net's last decoder features of ``x`` zero-padded at the high end to the stride 8, cropped back."""
    h, w = x.shape[2:]
    return net.unet(torch.nn.functional.pad(x, (0, (-w) % 8, 0, (-h) % 8)))[..., :h, :w]


@pytest.fixture(scope="module")
def weights_2d(tmp_path_factory):
    torch.manual_seed(0)
    net = Segmenter(SegmenterConfig(ndim=2, spacing_mm=1.0, **TINY))
    return str(save_model(tmp_path_factory.mktemp("seg") / "seg2d.pt", net, kind="segmenter"))


@pytest.fixture(scope="module")
def weights_3d(tmp_path_factory):
    torch.manual_seed(1)
    net = Segmenter(SegmenterConfig(ndim=3, spacing_mm=1.0, **TINY))
    return str(save_model(tmp_path_factory.mktemp("seg") / "seg3d.pt", net, kind="segmenter"))


def test_registered_by_name_with_its_options(weights_2d):
    m = get_similarity("deepsim", weights=weights_2d, levels=["decoder", 2, 0])
    assert isinstance(m, DeepSim) and m.options()["levels"] == (0, 2, "decoder") and m.options()["weights"] == weights_2d
    with pytest.raises(ValueError, match="levels"):
        DeepSim(levels=["encoder"])
    with pytest.raises(ValueError, match="engine_level"):
        DeepSim(engine_level=-1)


@pytest.mark.parametrize("which", ["weights_2d", "weights_3d"])
def test_an_image_with_itself_is_the_maximum_one_and_the_measure_is_symmetric(which, request, field):
    weights = request.getfixturevalue(which)
    shape = (37, 30) if which == "weights_2d" else (17, 14, 12)
    a = field(shape, seed=1, dtype=torch.float32)
    b = field(shape, seed=2, dtype=torch.float32)
    m = DeepSim(weights=weights)
    torch.testing.assert_close(m(a, a), torch.ones(1), rtol=0, atol=1e-6)
    ab, ba = m(a, b), m(b, a)
    torch.testing.assert_close(ab, ba, rtol=0, atol=1e-7)
    assert float(ab) < 1 - 1e-4
    torch.testing.assert_close(m.loss(a, b), -ab)


def test_formula_mean_over_levels_of_the_mean_cosine(weights_2d, field):
    a = field((24, 20), seed=3, dtype=torch.float32)
    b = field((24, 20), seed=4, dtype=torch.float32)
    m = DeepSim(weights=weights_2d, normalize=False, levels=(0, 1, 2))
    net = m.network(2)
    fa, fb = net.features(a), net.features(b)
    expected = sum(float(torch.nn.functional.cosine_similarity(x, y, dim=1, eps=1e-12).mean()) for x, y in zip(fa, fb)) / 3
    assert float(m(a, b)) == pytest.approx(expected, abs=1e-6)
    # the default: the last decoder layer (the class head's input) at full resolution
    d = DeepSim(weights=weights_2d, normalize=False)
    assert d.levels == ("decoder",)
    da, db = _decoder(net, a), _decoder(net, b)
    assert float(d(a, b)) == pytest.approx(float(torch.nn.functional.cosine_similarity(da, db, dim=1).mean()), abs=1e-6)
    # a level subset averages only those levels
    m1 = DeepSim(weights=weights_2d, normalize=False, levels=(1,))
    assert float(m1(a, b)) == pytest.approx(float(torch.nn.functional.cosine_similarity(fa[1], fb[1], dim=1).mean()), abs=1e-6)


def test_mask_weights_are_pooled_onto_each_level():
    torch.manual_seed(0)
    fa = [torch.randn(2, 3, 7, 5), torch.randn(2, 4, 4, 3)]
    fb = [torch.randn(2, 3, 7, 5), torch.randn(2, 4, 4, 3)]
    mask = torch.rand(2, 1, 7, 5)
    got = deepsim_features(fa, fb, mask=mask)
    # level 1: the mask averaged over 2 x 2 cells, the cells cut by the image's high end over their inside part
    padded = torch.zeros(2, 1, 8, 6)
    padded[:, :, :7, :5] = mask
    count = torch.zeros(1, 1, 8, 6)
    count[:, :, :7, :5] = 1
    w1 = padded.reshape(2, 1, 4, 2, 3, 2).sum((3, 5)) / count.reshape(1, 1, 4, 2, 3, 2).sum((3, 5))
    torch.testing.assert_close(pool_mask(mask, 1), w1)
    ref = 0.0
    for a, b, w in zip(fa, fb, [mask, w1]):
        ref = ref + (cosine_map(a, b) * w).flatten(1).sum(1) / w.flatten(1).sum(1)
    torch.testing.assert_close(got, ref / 2)
    torch.testing.assert_close(deepsim_features(fa, fb, mask=torch.ones(2, 1, 7, 5)), deepsim_features(fa, fb))
    with pytest.raises(ValueError, match="empty support"):
        deepsim_features(fa, fb, mask=torch.zeros(2, 1, 7, 5))


def test_gradients_reach_the_moving_image_and_never_the_frozen_segmenter(weights_2d, field):
    m = DeepSim(weights=weights_2d)
    fixed = field((32, 28), seed=5, dtype=torch.float32)
    moving = field((32, 28), seed=6, dtype=torch.float32).requires_grad_(True)
    m.loss(fixed, moving).sum().backward()
    assert moving.grad is not None and torch.isfinite(moving.grad).all() and moving.grad.abs().sum() > 0
    net = m.network(2)
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())


def test_gradcheck_float64_in_the_moving_image(weights_2d, field):
    m = DeepSim(weights=weights_2d, normalize=False)
    fixed = field((8, 8), seed=7)
    moving = field((8, 8), seed=8).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: m(fixed, x), (moving,), eps=1e-6, atol=1e-5)
    assert all(p.grad is None for p in m.network(2, dtype=torch.float64).parameters())


def test_images_at_another_spacing_are_resampled_to_the_segmenters(weights_2d, field):
    # the model was trained at 1 mm: a 0.5 mm pair is compared at 1 mm, a pair within 10 % is used as it is
    m = DeepSim(weights=weights_2d, normalize=False)
    a = field((40, 40), seed=9, dtype=torch.float32)
    b = field((40, 40), seed=10, dtype=torch.float32)
    assert float(m(a, b, spacing=(1.05, 0.95))) == pytest.approx(float(m(a, b)), abs=1e-7)
    assert abs(float(m(a, b, spacing=0.5)) - float(m(a, b))) > 1e-4


def test_scores_equal_forward_with_the_fixed_features_computed_once(weights_2d, field):
    m = DeepSim(weights=weights_2d)
    f = field((30, 26), seed=11, dtype=torch.float32)
    movings = [field((30, 26), seed=s, dtype=torch.float32) for s in (12, 13)]
    mask = torch.ones(1, 1, 30, 26)
    mask[..., :4] = 0
    got = m.scores(f, movings, [None, mask], spacing=(1.0, 1.0))
    torch.testing.assert_close(got[0], m(f, movings[0]))
    torch.testing.assert_close(got[1], m(f, movings[1], mask))


def test_engine_features_are_unit_vectors_of_every_level_on_the_engine_level_grid(weights_2d, field):
    m = DeepSim(weights=weights_2d, normalize=False, engine_level=1, levels=(0, 1, 2))
    grid = Grid((30, 22), spacing=(1.0, 1.0), origin=(5.0, -3.0))
    x = field((30, 22), seed=14, dtype=torch.float32)
    feats, fgrid = m.feature_level(x, grid)
    assert fgrid.same_as(feature_grid(grid, 1)) and feats.shape == (1, 4 + 8 + 8, 15, 11)
    net = m.network(2)
    levels = net.features(x)
    unit = [f / f.norm(dim=1, keepdim=True).clamp_min(1e-6) for f in levels]
    torch.testing.assert_close(feats[:, 4:12], unit[1])
    torch.testing.assert_close(feats[:, :4], torch.nn.functional.avg_pool2d(unit[0], 2))
    sim = m.feature_similarity()
    assert isinstance(sim, DeepSimFeatures) and sim.groups == (4, 8, 8) and sim.traits.sampling.value == "points" and sim.traits.mean_over_fixed
    torch.testing.assert_close(sim(feats, feats), torch.ones(1), rtol=0, atol=1e-5)
    # the decoder level is pooled onto the engine grid like encoder level 0
    dec, _ = DeepSim(weights=weights_2d, normalize=False, levels=("decoder",)).feature_level(x, grid)
    dx = _decoder(net, x)
    unit = dx / dx.norm(dim=1, keepdim=True).clamp_min(1e-6)
    torch.testing.assert_close(dec, torch.nn.functional.avg_pool2d(unit, 2))


def test_engine_recovers_a_known_translation_of_a_2d_image(weights_2d, field):
    from omnireg.optim import register

    grid = Grid((64, 56), spacing=(1.0, 1.0))
    data = field((64, 56), seed=15, sigma=3.0, dtype=torch.float32)
    fixed = Image(data[0], grid)
    shift = np.array([2.6, -1.8])  # moving(x) = fixed(x - shift): the registration maps x to x + shift
    moving = Image(data[0], Grid((64, 56), spacing=(1.0, 1.0), origin=tuple(shift)))
    cfg = {"init": "none", "stages": [{"transform": "translation", "metric": "deepsim",
                                       "metric_options": {"weights": weights_2d}, "shrink": [2, 1], "iterations": [40, 30]}]}
    result = register(fixed, moving, config=cfg)
    got = result.transform.matrix().detach().numpy().reshape(3, 3)[:2, 2]
    assert np.abs(got - shift).max() < 0.3, got
    assert result.metric_after["deepsim"] > result.metric_before["deepsim"]
