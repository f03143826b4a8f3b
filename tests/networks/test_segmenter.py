"""The segmenter: shapes and feature levels, its frame and feature grids, the model store, and labels on the image's own grid."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from omnireg.core import Grid
from omnireg.networks.segmenter import (
    DEFAULT_LABELS,
    Segmenter,
    SegmenterConfig,
    feature_grid,
    model_grid,
    predict_labels,
    resample_to_grid,
)
from omnireg.networks.store import load_model, save_model

TINY = {"enc_channels": (4, 8, 8), "dec_channels": (8, 8, 4, 4), "norm": "none"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def threshold_segmenter(ndim: int, labels=(0, 17)) -> Segmenter:
    """A segmenter whose weights pass the image through (centre taps) so that class 1 = intensity > 0.5.

    Every encoder convolution copies channel 0 (LeakyReLU keeps non-negative values), the full-resolution
    decoder convolution copies the level-0 skip's channel 0, and the head gives logits ``(0, x - 0.5)``.
    """
    net = Segmenter(SegmenterConfig(ndim=ndim, labels=labels, spacing_mm=2.0, **TINY))
    centre = (1,) * ndim
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        for block in net.unet.encoder:
            block.conv.weight[(0, 0) + centre] = 1.0
        last = net.unet.remaining[0].conv
        skip0 = net.unet.dec_channels[net.unet.levels - 1]  # the enc-0 skip follows the last level's channels
        last.weight[(0, skip0) + centre] = 1.0
        net.head.weight[(1, 0) + (0,) * ndim] = 1.0
        net.head.bias[1] = -0.5
    return net.eval()


@pytest.mark.parametrize("shape", [(23, 37), (13, 18, 11), (16, 16)])
def test_any_shape_gives_logits_of_the_input_shape_and_levels_of_ceil_size(shape):
    torch.manual_seed(0)
    net = Segmenter(SegmenterConfig(ndim=len(shape), **TINY)).eval()
    x = torch.rand(2, 1, *shape)
    assert net(x).shape == (2, len(DEFAULT_LABELS), *shape)
    feats = net.features(x)
    assert [f.shape[1] for f in feats] == [4, 8, 8]
    for level, f in enumerate(feats):
        assert tuple(f.shape[2:]) == tuple(math.ceil(s / 2**level) for s in shape)
    assert [f.shape for f in net.features(x, (2, 0))] == [feats[0].shape, feats[2].shape]
    with pytest.raises(ValueError, match="levels"):
        net.features(x, (3,))


def test_features_are_the_encoder_levels_max_pooled_from_the_padded_input():
    # the threshold segmenter's level-l channel 0 is x max-pooled l times (x >= 0, zero padding at the high end)
    net = threshold_segmenter(2)
    x = torch.rand(1, 1, 13, 21)
    feats = net.features(x)
    padded = F.pad(x, (0, 3, 0, 3))
    for level, f in enumerate(feats):
        ref = padded
        for _ in range(level):
            ref = F.max_pool2d(ref, 2)
        ref = ref[..., : math.ceil(13 / 2**level), : math.ceil(21 / 2**level)]
        torch.testing.assert_close(f[:, :1], ref, rtol=0, atol=1e-6)
    # and the logits are (0, x - 0.5) at full resolution
    torch.testing.assert_close(net(x)[:, 1:], x - 0.5, rtol=0, atol=1e-6)


def test_default_labels_are_background_and_the_32_named_structures():
    from omnireg.training.labelmaps import NAMED_STRUCTURES

    assert DEFAULT_LABELS == (0,) + tuple(NAMED_STRUCTURES)
    assert len(DEFAULT_LABELS) == 33


def test_feature_grid_nodes_are_the_centres_of_the_pooled_cells():
    grid = Grid((9, 6, 7), spacing=(1.5, 0.8, 2.0), origin=(3.0, -2.0, 5.0),
                direction=np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0])
    for level in (1, 2):
        fg = feature_grid(grid, level)
        f = 2**level
        assert fg.shape == tuple(math.ceil(s / f) for s in grid.shape)
        k = np.array([1, 0, 1])
        cell = np.stack(np.meshgrid(*[np.arange(f * i, f * i + f) for i in k], indexing="ij"), -1).reshape(-1, 3)
        centre = grid.transform_points(cell.astype(float), "voxel", "world").mean(0)
        np.testing.assert_allclose(fg.transform_points(k.astype(float), "voxel", "world"), centre, atol=1e-9)


def test_model_grid_covers_the_field_of_view_in_the_models_frame():
    config = SegmenterConfig(ndim=3, spacing_mm=2.0)
    rot = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    grid = Grid((20, 31, 9), spacing=(1.1, 0.7, 3.0), origin=(10.0, -4.0, 7.0), direction=rot)
    target = model_grid(grid, config)
    assert target.spacing == (2.0, 2.0, 2.0) and np.allclose(target.direction, np.eye(3))
    corners = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in grid.shape], indexing="ij")).reshape(3, -1).T
    inside = target.transform_points(grid.transform_points(corners, "voxel", "world"), "world", "voxel")
    assert (inside >= -0.5 - 1e-9).all() and (inside <= np.array(target.shape) - 0.5 + 1e-9).all()
    # at most one voxel more than needed per axis
    assert all(n * 2.0 < e + 2.0 + 1e-9 for n, e in zip(target.shape, np.ptp(grid.transform_points(corners, "voxel", "world"), 0)))
    # a grid already in the model's frame (spacing within 10 %) is used as it is
    same = Grid((10, 10, 10), spacing=(2.1, 1.9, 2.0))
    assert model_grid(same, config) is same


def test_resample_to_grid_reproduces_a_linear_function_of_world_position():
    rot = np.linalg.qr(np.random.default_rng(2).normal(size=(2, 2)))[0]
    src = Grid((40, 36), spacing=(2.0, 2.0), origin=(-30.0, -20.0))
    dst = Grid((12, 10), spacing=(2.5, 2.5), origin=(-10.0, -5.0), direction=rot)
    w = src.points("world", dtype=torch.float64)
    data = (0.3 * w[..., 0] - 0.2 * w[..., 1] + 1.0)[None, None]
    out = resample_to_grid(data, src, dst)
    wd = dst.points("world", dtype=torch.float64)
    torch.testing.assert_close(out[0, 0], 0.3 * wd[..., 0] - 0.2 * wd[..., 1] + 1.0, rtol=0, atol=1e-9)


def test_store_round_trip_and_mismatched_weights_are_rejected_naming_the_file(tmp_path):
    torch.manual_seed(0)
    net = Segmenter(SegmenterConfig(ndim=2, labels=(0, 2, 41), direction=((0.0, 1.0), (1.0, 0.0)), **TINY)).eval()
    path = save_model(tmp_path / "seg.pt", net, kind="segmenter", meta={"note": "x"})
    loaded, meta = load_model(path, kind="segmenter")
    assert loaded.config == net.config and meta == {"note": "x"}
    x = torch.rand(1, 1, 17, 12)
    torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    # the same file with the config of another width
    obj = torch.load(path, weights_only=True)
    obj["config"]["enc_channels"] = [4, 8, 16]
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as err:
        load_model(tmp_path / "bad.pt")
    assert str(tmp_path / "bad.pt") in str(err.value) and "\n" not in str(err.value)


def test_predicted_labels_follow_an_oblique_anisotropic_input_grid():
    # an off-centre ball of radius 18 mm, intensity 1 inside, on an oblique grid of 1.2 x 0.9 x 3 mm voxels
    net = threshold_segmenter(3, labels=(0, 17))
    rot = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
    grid = Grid((40, 52, 18), spacing=(1.2, 0.9, 3.0), origin=(-20.0, -25.0, -22.0), direction=rot)
    centre = grid.transform_points(np.array([22.0, 24.0, 8.0]), "voxel", "world")
    dist = (grid.points("world", dtype=torch.float64) - torch.from_numpy(centre)).norm(dim=-1)
    data = (dist < 18.0).float()[None, None]
    labels = predict_labels(net, data, grid, max_points=5000)
    assert labels.shape == (1, 1, *grid.shape) and labels.dtype == torch.int16
    assert set(labels.unique().tolist()) == {0, 17}
    truth = torch.where(dist < 18.0, 17, 0)
    wrong = labels[0, 0] != truth
    # disagreement only within 2.5 mm of the sphere (the 2 mm model grid and the interpolation)
    assert float(wrong.float().mean()) < 0.05
    assert float((dist[wrong] - 18.0).abs().max()) < 2.5


def test_normalisation_option_of_the_unet():
    from omnireg.networks.unet import UNet

    plain = UNet(2, 1, (4, 8), (8, 8, 4))
    batch = UNet(2, 1, (4, 8), (8, 8, 4), norm="batch")
    assert all(".norm." not in k for k in plain.state_dict())  # VoxelMorph's parameter names are unchanged
    assert {k for k in batch.state_dict() if ".norm." not in k} == set(plain.state_dict())
    assert isinstance(batch.encoder[0].norm, torch.nn.BatchNorm2d)
    assert isinstance(UNet(3, 1, (4,), (4,), norm="instance").encoder[0].norm, torch.nn.InstanceNorm3d)
    with pytest.raises(ValueError, match="norm"):
        UNet(2, 1, (4,), (4,), norm="layer")
    # the segmenter's default: batch normalisation, a fixed affine map in eval mode (batch-independent features)
    torch.manual_seed(0)
    net = Segmenter(SegmenterConfig(ndim=2, enc_channels=(4, 8, 8), dec_channels=(8, 8, 4, 4))).eval()
    x = torch.rand(3, 1, 16, 16)
    torch.testing.assert_close(net.features(x[:1])[1], net.features(x)[1][:1])
