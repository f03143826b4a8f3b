"""The configurable U-Net: VoxelMorph's channel mapping, per-level features, output resolution, errors."""

import pytest
import torch

from omnireg.networks.unet import UNet


def conv_params(ndim, pairs):
    return sum(3**ndim * cin * cout + cout for cin, cout in pairs)


@pytest.mark.parametrize("ndim", [2, 3])
def test_default_channel_lists_map_onto_levels_as_voxelmorph(ndim):
    enc = [(2, 16), (16, 32), (32, 32), (32, 32)]
    dec = [(32, 32), (64, 32), (64, 32), (64, 32)]  # bottleneck, then each after a 32-channel skip
    full = [(48, 32), (32, 16), (16, 16)]  # after the 16-channel full-resolution skip
    half = [(32, 32), (32, 16), (16, 16)]  # out_stride 2: no last upsampling and skip
    net = UNet(ndim, 2)
    assert sum(p.numel() for p in net.parameters()) == conv_params(ndim, enc + dec + full)
    net2 = UNet(ndim, 2, out_stride=2)
    assert sum(p.numel() for p in net2.parameters()) == conv_params(ndim, enc + dec + half)
    assert net.stride == 16 and net.out_channels == 16


def test_encoder_features_per_level_and_output_resolution():
    net = UNet(3, 1, (8, 12, 16), (16, 12, 8, 6), out_stride=2)
    x = torch.randn(2, 1, 16, 24, 8)
    feats = net.encode(x)
    assert [tuple(f.shape) for f in feats] == [
        (2, 8, 16, 24, 8),
        (2, 12, 8, 12, 4),
        (2, 16, 4, 6, 2),
        (2, 16, 2, 3, 1),
    ]
    out = net(x)
    assert out.shape == (2, 6, 8, 12, 4) and net.out_channels == 6
    torch.testing.assert_close(net.decode(feats), out)
    assert UNet(2, 1, (4, 4, 4), (4, 4, 4), out_stride=4)(torch.randn(1, 1, 16, 8)).shape == (1, 4, 4, 2)


def test_skip_connections_carry_fine_detail():
    # the output at full resolution depends on a single input voxel through the top-level skip: changing
    # one voxel changes the output inside the first convolution's 3x3 neighbourhood at least
    torch.manual_seed(0)
    net = UNet(2, 1, (4, 4), (4, 4, 4))
    x = torch.randn(1, 1, 16, 16)
    y = x.clone()
    y[0, 0, 8, 8] += 1.0
    diff = (net(x) - net(y)).abs().sum(dim=1)[0]
    assert diff[7:10, 7:10].min() > 0


def test_unet_rejects_bad_configurations_and_shapes():
    with pytest.raises(ValueError, match="dec_channels: expected at least 4"):
        UNet(3, 2, (16, 32, 32, 32), (32, 32))
    with pytest.raises(ValueError, match="out_stride"):
        UNet(3, 2, out_stride=3)
    with pytest.raises(ValueError, match="ndim"):
        UNet(4, 2)
    net = UNet(2, 2, (4, 4), (4, 4))
    with pytest.raises(ValueError, match="divisible by the U-Net's stride 4"):
        net(torch.zeros(1, 2, 6, 8))
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 2, \*S\)"):
        net(torch.zeros(1, 1, 8, 8))
