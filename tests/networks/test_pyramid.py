"""The pyramid registration network (arXiv 2408.05717): composition, diffeomorphism, inverse, MSFB, ablations, I/O."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from omnireg.core import Grid
from omnireg.evaluation.jacobian import jacobian_determinant
from omnireg.core.filters import gaussian_blur
from omnireg.networks.msfb import FeatureFusion, GroupWeights, lowpass
from omnireg.networks.pyramid import (
    PyramidConfig,
    PyramidNet,
    _input_extent,
    compose_level,
    compose_pyramid,
)
from omnireg.networks.registration import (
    compose_displacements,
    crop_to_shape,
    identity_voxel_points,
    integrate_velocity_voxels,
    resize_displacement,
    warp_voxels,
)
from omnireg.networks.store import load_model, save_model
from omnireg.networks.voxelmorph import VoxelMorph, VoxelMorphConfig

TINY = dict(channels=(4, 8, 8), attention_kernels=(3, 5))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread (two threads on a loaded 2-core machine made these tests 20-50x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pair(shape, seed=0, n=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, *shape, generator=g), torch.rand(n, 1, *shape, generator=g)


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def _min_det(u: torch.Tensor) -> float:
    """Smallest Jacobian determinant of ``x + u(x)`` (voxel units, unit grid) over a batch."""
    return min(float(jacobian_determinant(ui.detach().double(), Grid(tuple(u.shape[2:]))).min()) for ui in u)


def _smooth_velocity(shape, amp, seed):
    """A sinusoid of half a period over the grid per axis, amplitude ``amp`` voxels, random phases."""
    g = torch.Generator().manual_seed(seed)
    x = identity_voxel_points(shape, dtype=torch.float64)[0]
    v = torch.zeros(1, len(shape), *shape, dtype=torch.float64)
    for c in range(len(shape)):
        phase = torch.rand(len(shape), generator=g, dtype=torch.float64) * 2 * math.pi
        v[0, c] = amp * torch.sin(sum(math.pi / shape[a] * x[..., a] + phase[a] for a in range(len(shape))))
    return v


# ----------------------------------------------------------------------------- composition
@pytest.mark.parametrize("ndim, shape, stride", [(2, (37, 29), 1), (2, (37, 29), 2), (3, (13, 18, 11), 2)])
def test_pyramid_composition_equals_composing_the_scale_fields_explicitly(ndim, shape, stride):
    torch.manual_seed(0)
    net = PyramidNet(PyramidConfig(ndim=ndim, finest_stride=stride, head_init_std=0.02, **TINY)).eval()
    m, f = _pair(shape)
    with torch.no_grad():
        fields = net.pyramid(m, f)
        out = net(m, f)
    steps = net.config.integration_steps
    u = inv = None
    for k, v in enumerate(fields.velocities):
        r = integrate_velocity_voxels(v, steps=steps)
        torch.testing.assert_close(fields.residuals[k], r)
        if u is None:
            u, inv = r, integrate_velocity_voxels(-v, steps=steps)
        else:  # T_k = up(T_{k-1}) o exp(v_k);  T_k^-1 = exp(-v_k) o up(T_{k-1}^-1)
            u = compose_displacements(resize_displacement(u, v.shape[2:]), r)
            inv = compose_displacements(integrate_velocity_voxels(-v, steps=steps), resize_displacement(inv, v.shape[2:]))
        torch.testing.assert_close(fields.displacements[k], u)
        torch.testing.assert_close(fields.inverses[k], inv)
    assert float(u.abs().max()) > 0.05  # a field that exercises the composition
    padded = net.padded_shape(shape)
    torch.testing.assert_close(out.displacement, crop_to_shape(resize_displacement(u, padded), shape))
    torch.testing.assert_close(out.inverse, crop_to_shape(resize_displacement(inv, padded), shape))
    assert out.velocity is None
    assert net.scale_levels == (2, 1) and net.scale_strides == (4 * stride, 2 * stride)  # TINY: levels 0, 1, 2
    for s, st, d in zip(out.scales, net.scale_strides, fields.displacements[:2]):
        torch.testing.assert_close(s, _input_extent(d, shape, st))
    for n, levels in ((0, ()), (1, (1,)), (5, (2, 1))):
        assert PyramidNet(PyramidConfig(ndim=ndim, supervised_levels=n, **TINY)).scale_levels == levels


def test_composed_map_sends_points_through_the_residual_then_the_coarser_map():
    """Pointwise: T_k(x) = up(T_{k-1})(x + r_k(x)) (pull convention: the residual acts first)."""
    g = torch.Generator().manual_seed(3)
    coarse = 0.8 * torch.randn(1, 2, 6, 7, generator=g, dtype=torch.float64)
    v = _smooth_velocity((12, 14), 0.7, 1)
    r, u, _ = compose_level(v, coarse, torch.zeros_like(coarse), steps=7)
    up = resize_displacement(coarse, (12, 14))
    x = identity_voxel_points((12, 14), dtype=torch.float64)[0]
    y = x + r[0].movedim(0, -1)  # where the residual sends each fixed point
    i, j = 5, 9  # an interior point: bilinear interpolation of up at y by hand
    p = y[i, j]
    i0, j0 = int(p[0].floor()), int(p[1].floor())
    a, b = p[0] - i0, p[1] - j0
    val = (1 - a) * (1 - b) * up[0, :, i0, j0] + a * (1 - b) * up[0, :, i0 + 1, j0] + (1 - a) * b * up[0, :, i0, j0 + 1] + a * b * up[0, :, i0 + 1, j0 + 1]
    torch.testing.assert_close(x[i, j] + u[0, :, i, j], p + val)


def test_inverse_of_the_composed_pyramid_is_accurate_for_smooth_residuals():
    shapes = [(8, 10), (16, 20), (32, 40)]
    vs = [_smooth_velocity(s, 0.5, k) for k, s in enumerate(shapes)]
    disp, inv = compose_pyramid(vs, steps=7)
    assert float(disp[-1].norm(dim=1).max()) > 2.5  # several voxels at the finest level
    for a, b in ((disp[-1], inv[-1]), (inv[-1], disp[-1])):
        err = compose_displacements(a, b)[..., 4:-4, 4:-4].norm(dim=1)  # interior: the maps stay on the grid
        assert float(err.mean()) < 0.06 and float(err.max()) < 0.12  # measured 0.04 / 0.07 voxel


# ----------------------------------------------------------------------------- diffeomorphism
def _overfit(net, moving, fixed, steps):
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        out = net(moving, fixed)
        loss = torch.mean((warp_voxels(moving, out.displacement) - fixed) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _blob_pair(shape, shift):
    x = identity_voxel_points(shape)[0]
    centre = torch.tensor([s / 2 for s in shape])
    fixed = torch.exp(-((x - centre) ** 2).sum(-1) / 30.0)
    moving = torch.exp(-((x - centre - torch.tensor(shift)) ** 2).sum(-1) / 30.0)
    return moving[None, None], fixed[None, None]


def test_every_scale_is_diffeomorphic_at_initialisation_and_after_a_short_overfit():
    torch.manual_seed(0)
    net = PyramidNet(PyramidConfig(ndim=2, finest_stride=1, head_init_std=0.02, **TINY))
    moving, fixed = _blob_pair((32, 28), (3.0, -2.0))
    with torch.no_grad():
        fields = net.pyramid(moving, fixed)
    assert float(fields.displacements[-1].abs().max()) > 0.05
    for u in fields.residuals + fields.displacements + fields.inverses:
        assert _min_det(u) > 0
    losses = _overfit(net, moving, fixed, 20)
    assert losses[-1] < 0.05 * losses[0]
    with torch.no_grad():
        fields = net.pyramid(moving, fixed)
        out = net(moving, fixed)
    torch.testing.assert_close(out.displacement[0, :, 16, 14], torch.tensor([3.0, -2.0]), atol=0.3, rtol=0)  # the blob's shift
    for u in fields.residuals + fields.displacements + fields.inverses + [out.displacement, out.inverse]:
        assert _min_det(u) > 0


def test_a_tiny_pyramid_overfits_one_pair_better_than_a_tiny_voxelmorph_diff_of_the_same_size():
    """Same pair (blobs moved by a smooth field of up to 4 voxels), optimiser, steps; ~45 k parameters each."""
    g = np.random.default_rng(0)
    shape = (32, 32)
    x = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"))
    img = np.zeros(shape)
    for _ in range(12):
        c, s, a = g.uniform(4, 28, 2), g.uniform(1.5, 4), g.uniform(0.5, 1)
        img += a * np.exp(-((x[0] - c[0]) ** 2 + (x[1] - c[1]) ** 2) / (2 * s * s))
    fixed = torch.from_numpy(img).float()[None, None]
    w = np.stack([ndimage.gaussian_filter(g.standard_normal(shape), 6.0, mode="wrap") for _ in range(2)])
    moving = warp_voxels(fixed, torch.from_numpy(w / np.abs(w).max() * 4.0).float()[None], padding="border")
    start = float(((moving - fixed) ** 2).mean())

    def overfit(net):
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(30):
            loss = ((warp_voxels(moving, net(moving, fixed).displacement, padding="border") - fixed) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return float(((warp_voxels(moving, net(moving, fixed).displacement, padding="border") - fixed) ** 2).mean())

    torch.manual_seed(0)
    pyramid = PyramidNet(PyramidConfig(ndim=2, channels=(8, 16, 16), attention_kernels=(3, 5)))
    torch.manual_seed(0)
    vm = VoxelMorph(VoxelMorphConfig.from_kind("voxelmorph-diff", ndim=2, enc_channels=(16, 26, 26), dec_channels=(26, 26, 26, 16)))
    assert abs(_params(pyramid) - _params(vm)) < 0.03 * _params(vm)  # 45,344 and 44,732
    final_pyramid, final_vm = overfit(pyramid), overfit(vm)
    assert final_pyramid < start / 10  # measured 22x
    assert final_pyramid < 0.3 * final_vm  # measured 0.12 (loss 0.0030 vs 0.0246; 0.11-0.18 over 4 pairs)


# ----------------------------------------------------------------------------- MSFB
def test_msfb_global_weights_sum_to_one_per_sample_and_do_not_mix_samples():
    torch.manual_seed(0)
    fusion = FeatureFusion(3, [6, 6, 7], 4, fusion="msfb", branches="both")
    g = torch.Generator().manual_seed(1)
    groups = [torch.randn(3, c, 6, 5, 4, generator=g) * s for c, s in zip([6, 6, 7], [1.0, 3.0, 0.5])]
    fused, w = fusion.fuse(groups)
    assert fused.shape == (3, 4, 6, 5, 4) and w.shape == (3, 3)
    torch.testing.assert_close(w.sum(1), torch.ones(3))
    assert bool((w > 0).all()) and float((w[0] - w[1]).abs().max().detach()) > 1e-6
    one, w1 = fusion.fuse([x[1:2] for x in groups])  # a sample's result does not depend on its batch
    torch.testing.assert_close(one, fused[1:2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w1, w[1:2])
    weights = GroupWeights(2, 4)([torch.randn(3, 4, 5, 6, generator=g), torch.randn(3, 4, 5, 6, generator=g)])
    torch.testing.assert_close(weights.sum(1), torch.ones(3))


@pytest.mark.parametrize("ndim, sigma", [(2, 1.0), (3, 1.0), (3, 1.7)])
def test_msfb_lowpass_equals_the_core_gaussian_filter(ndim, sigma):
    x = torch.randn(2, 3, *([7, 6, 5][:ndim]), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(lowpass(x, sigma), gaussian_blur(x, sigma, truncate=1.0))


def test_msfb_gradcheck_float64():
    torch.manual_seed(0)
    fusion = FeatureFusion(2, [2, 3], 2, attention_kernels=(3,)).double()
    g = torch.Generator().manual_seed(2)
    a = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: fusion([x, y]), (a, b), eps=1e-6, atol=1e-5)


# ----------------------------------------------------------------------------- ablations
def _conv(cin, cout, k, d):
    return cin * cout * k**d + cout


def _block(cin, cout, d):
    return _conv(cin, cout, 3, d) + _conv(cout, cout, 3, d)


def _attention(kernels, d):
    return sum(2 * k**d + 1 for k in kernels) + len(kernels) + 1


def _mlp(groups, c):
    return (2 * groups * c) * c + c + c * groups + groups


@pytest.mark.parametrize("ndim", [2, 3])
def test_ablation_switches_change_the_parameter_count_by_the_removed_parts(ndim):
    cfg = dict(ndim=ndim, channels=(4, 8, 8, 16), attention_kernels=(3, 5, 7))
    c, d, fused = cfg["channels"], ndim, range(len(cfg["channels"]) - 1)
    count = {k: _params(PyramidNet(PyramidConfig(**cfg, **kw))) for k, kw in {
        "full": {}, "no_aux": dict(aux_decoder=False), "concat": dict(fusion="concat"),
        "global": dict(msfb_branches="global"), "local": dict(msfb_branches="local"),
    }.items()}
    mlp = {g: sum(_mlp(g, c[l]) for l in fused) for g in (2, 3)}
    local = sum(2 * _attention((3, 5, 7), d) + _conv(2 * c[l], c[l], 1, d) for l in fused)
    aux = sum(_block(c[l + 1] + c[l], c[l], d) for l in fused)
    aux_fusion = sum(_conv(2 * c[l], c[l], 1, d) + c[l] * c[l] * 3**d for l in fused)  # projection + wider mixing
    assert _params(PyramidNet(PyramidConfig(**cfg)).aux_decoder) == aux
    assert count["full"] - count["no_aux"] == aux + aux_fusion + mlp[3] - mlp[2]
    assert count["full"] - count["global"] == local
    assert count["full"] - count["local"] == mlp[3]
    assert count["full"] - count["concat"] == local + mlp[3]


# ----------------------------------------------------------------------------- shapes and I/O
@pytest.mark.parametrize("ndim, shape, stride", [(2, (37, 29), 2), (2, (9, 50), 1), (3, (13, 18, 11), 2), (3, (7, 9, 5), 1)])
def test_any_input_shape_gives_the_input_shape_back(ndim, shape, stride):
    net = PyramidNet(PyramidConfig(ndim=ndim, finest_stride=stride, head_init_std=0.02, **TINY)).eval()
    m, f = _pair(shape, n=2)
    with torch.no_grad():
        out = net(m, f)
    assert out.displacement.shape == out.inverse.shape == (2, ndim, *shape)
    padded = net.padded_shape(shape)
    assert all(p % net.stride == 0 and p >= s for p, s in zip(padded, shape))
    for s, st in zip(out.scales, net.scale_strides):
        assert s.shape == (2, ndim, *[-(-n // st) for n in shape])


@pytest.mark.parametrize("shape, stride", [((32, 16), 2), ((37, 29), 4), ((36, 13, 20), 4)])
def test_scales_cover_the_input_extent_exactly_for_an_affine_field(shape, stride):
    """A level field of w(x) = A x + b (computed on the padded input) becomes w on ceil(S / stride) voxels spanning S."""
    d = len(shape)
    net_stride = 4 * stride  # as a network with two more levels would pad
    padded = [max(-(-s // net_stride), 2) * net_stride for s in shape]
    level = [p // stride for p in padded]
    g = torch.Generator().manual_seed(0)
    a, b = 0.05 * torch.randn(d, d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    x = identity_voxel_points(level, dtype=torch.float64)[0] * stride + (stride - 1) / 2  # level centres, input voxels
    u = ((x @ a.T + b) / stride).movedim(-1, 0)[None]  # in level voxels
    out = _input_extent(u, shape, stride)
    target = [-(-s // stride) for s in shape]
    assert tuple(out.shape[2:]) == tuple(target)
    size = torch.tensor([s / q for s, q in zip(shape, target)], dtype=torch.float64)  # target voxel, in input voxels
    y = (identity_voxel_points(target, dtype=torch.float64)[0] + 0.5) * size - 0.5
    expected = ((y @ a.T + b) / size).movedim(-1, 0)[None]
    inner = (slice(None), slice(None)) + (slice(1, -1),) * d  # the outer voxels may clamp at the border
    torch.testing.assert_close(out[inner], expected[inner])
    if padded == list(shape) and all(s % stride == 0 for s in shape):
        assert out is u


def test_inputs_and_config_are_validated_with_named_errors():
    net = PyramidNet(PyramidConfig(ndim=2, **TINY))
    with pytest.raises(ValueError, match="moving, fixed"):
        net(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 17))
    with pytest.raises(ValueError, match="fusion"):
        PyramidConfig(fusion="sum")
    with pytest.raises(ValueError, match="msfb_branches"):
        PyramidConfig(msfb_branches="none")
    with pytest.raises(ValueError, match="finest_stride"):
        PyramidConfig(finest_stride=3)
    with pytest.raises(ValueError, match="in_channels"):
        PyramidConfig(in_channels=3)
    two = PyramidNet(PyramidConfig(ndim=2, in_channels=4, **TINY))  # two channels per image
    assert two(torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16)).displacement.shape == (1, 2, 16, 16)
    with pytest.raises(ValueError, match="channels each"):
        two(torch.zeros(1, 1, 16, 16), torch.zeros(1, 3, 16, 16))


def test_save_load_round_trip_and_mismatched_weights_are_rejected(tmp_path):
    torch.manual_seed(0)
    net = PyramidNet(PyramidConfig(ndim=2, fusion="concat", head_init_std=0.02, **TINY)).eval()
    path = save_model(tmp_path / "p.pt", net, kind="pyramid", meta={"note": "t"})
    loaded, meta = load_model(path, kind="pyramid")
    assert loaded.config == net.config and meta["note"] == "t"
    m, f = _pair((20, 24))
    with torch.no_grad():
        a, b = net(m, f), loaded(m, f)
    torch.testing.assert_close(a.displacement, b.displacement)
    torch.testing.assert_close(a.inverse, b.inverse)
    obj = torch.load(path, weights_only=True)
    obj["config"]["fusion"] = "msfb"
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not match its 'pyramid' config"):
        load_model(tmp_path / "bad.pt")
