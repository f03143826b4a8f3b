"""The DISA feature network: architecture facts the method fixes, exact chunking, model files."""

import dataclasses

import numpy as np
import pytest
import torch

from omnireg.core import Grid
from omnireg.networks.disa import DISAConfig, DISANet, channels_last_copy, clip_norm, extract_features, feature_grid
from omnireg.networks.store import load_model, read_model_file, resolve_weights, save_model


def _net(ndim=3, seed=0):
    torch.manual_seed(seed)
    return DISANet(DISAConfig(ndim=ndim)).eval()


@pytest.mark.parametrize("ndim", [2, 3])
def test_stride_4_and_16_output_channels(ndim):
    shape = (37, 41, 45)[:ndim]
    out = _net(ndim)(torch.randn(1, 1, *shape))
    assert out.shape == (1, 16, *[int(np.ceil(s / 4)) for s in shape])


def test_ten_convolution_layers_and_blurpool_is_binomial():
    net = _net()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(convs) == 10
    assert convs[-1].kernel_size == (1, 1, 1) and convs[-1].bias is None and convs[-1].out_channels == 16
    assert all(c.kernel_size == (3, 3, 3) for c in convs[:-1])
    torch.testing.assert_close(net.pool1.taps, torch.tensor([1.0, 4, 6, 4, 1]) / 16)


@pytest.mark.parametrize("ndim", [2, 3])
def test_receptive_field_is_49_voxels_centred_on_4k(ndim):
    net = _net(ndim)
    n = 57
    x = torch.zeros(1, 1, *([n] * ndim), dtype=torch.float64, requires_grad=True)
    net.double()(x)[(0, slice(None)) + (7,) * ndim].sum().backward()
    for axis in range(ndim):
        other = tuple(a for a in range(ndim) if a != axis)
        support = (x.grad[0, 0].abs().sum(other) > 0).nonzero().reshape(-1)
        assert int(support.min()) == 28 - 24 and int(support.max()) == 28 + 24  # 49 voxels around 4 * 7


def test_chunked_extraction_equals_whole_image():
    net = _net()
    x = torch.randn(1, 1, 50, 23, 19)
    whole = extract_features(net, x)
    for max_voxels in (4 * 23 * 19, 12 * 23 * 19, 30 * 23 * 19):
        torch.testing.assert_close(extract_features(net, x, max_voxels=max_voxels), whole, rtol=1e-5, atol=1e-6)


def test_extraction_runs_channels_last_and_equals_the_plain_forward_without_touching_the_model():
    net = _net()
    x = torch.randn(1, 1, 30, 27, 33)
    with torch.no_grad():
        plain = clip_norm(net(x), dim=1)
    feats = extract_features(net, x)
    torch.testing.assert_close(feats, plain, rtol=1e-5, atol=1e-6)
    assert all(p.is_contiguous() for p in net.parameters())  # the caller's model keeps its layout
    twin = channels_last_copy(net)
    assert twin.conv2.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert twin.conv2.weight is not net.conv2.weight


def test_features_have_norm_at_most_one_and_clip_is_identity_inside_ball():
    f = extract_features(_net(), 10 * torch.randn(1, 1, 16, 16, 16))
    assert float(torch.linalg.vector_norm(f, dim=1).max()) <= 1 + 1e-6
    v = torch.tensor([[0.3], [0.4]]).reshape(1, 2, 1)
    torch.testing.assert_close(clip_norm(v), v)


def test_feature_grid_puts_feature_k_at_voxel_4k():
    grid = Grid((37, 41, 45), spacing=(1.5, 2.0, 0.8), origin=(10.0, -5.0, 3.0),
                direction=np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1.0]]))
    fg = feature_grid(grid)
    assert fg.shape == (10, 11, 12)
    k = np.array([3.0, 5.0, 7.0])
    np.testing.assert_allclose(fg.transform_points(k[None], "voxel", "world"), grid.transform_points(4 * k[None], "voxel", "world"))


def test_model_file_round_trip_and_config(tmp_path):
    net = _net(2, seed=3)
    path = save_model(tmp_path / "m.pt", net, kind="disa", meta={"note": "test"})
    back, meta = load_model(path, kind="disa")
    assert meta == {"note": "test"}
    assert dataclasses.asdict(back.config) == dataclasses.asdict(net.config)
    x = torch.randn(2, 1, 21, 17)
    torch.testing.assert_close(back(x), net(x))
    assert read_model_file(path)["kind"] == "disa"


def test_model_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.pt"):
        load_model(bad)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an omnireg model"):
        load_model(tmp_path / "other.pt")
    path = save_model(tmp_path / "m.pt", _net(2), kind="disa")
    with pytest.raises(ValueError, match="holds a 'disa' model, expected 'mad'"):
        load_model(path, kind="mad")
    with pytest.raises(ValueError, match="no packaged model"):
        resolve_weights("no_such_model", "disa", 3)


@pytest.mark.parametrize("stride", [2, 1])
def test_dense_extraction_interleaves_the_features_of_shifted_images(stride):
    net = _net()
    x = torch.randn(1, 1, 62, 19, 58)
    dense = extract_features(net, x, stride=stride)
    assert tuple(dense.shape[2:]) == tuple(-(-s // stride) for s in x.shape[2:])
    step = 4 // stride
    # every step-th feature is the stride-4 map, borders included
    torch.testing.assert_close(dense[:, :, ::step, ::step, ::step], extract_features(net, x), rtol=1e-5, atol=1e-6)
    # the others are the stride-4 features of the image shifted by multiples of stride, away from the low
    # borders of the shifted axes (where the shifted image sees its zero padding sooner): 28 > 24 voxels
    shifted = extract_features(net, x[:, :, stride:, :, 2 * stride % 4:])
    got = dense[:, :, 1::step, ::step, (2 * stride % 4) // stride::step]
    ref = shifted[:, :, : got.shape[2], : got.shape[3], : got.shape[4]]
    torch.testing.assert_close(got[:, :, 7:, :, 7:], ref[:, :, 7:, :, 7:], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="stride"):
        extract_features(net, x, stride=3)


@pytest.mark.parametrize("stride", [2, 1])
def test_dense_extraction_in_slabs_equals_one_pass(stride):
    net = _net(2)
    x = torch.randn(1, 1, 150, 40)
    whole = extract_features(net, x, stride=stride)
    slabs = extract_features(net, x, stride=stride, max_voxels=1000)
    torch.testing.assert_close(slabs, whole, rtol=1e-5, atol=1e-6)
