"""VoxelMorph and VoxelMorph-diff: any input shape, diffeomorphism, exact inverse, model files, overfitting a pair."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from omnireg.core import Grid
from omnireg.evaluation.jacobian import jacobian_determinant
from omnireg.networks.registration import (
    NetworkOutput,
    RegistrationNetwork,
    compose_displacements,
    integrate_velocity_voxels,
    pad_to_multiple,
    resize_displacement,
    warp_voxels,
)
from omnireg.networks.store import load_model, save_model
from omnireg.networks.voxelmorph import VoxelMorph, VoxelMorphConfig

TINY = {"enc_channels": (8, 8, 8), "dec_channels": (8, 8, 8, 8)}


def det_j(u):
    """Jacobian determinant of x -> x + u(x), u (1, D, *S) in voxel units (unit grid: voxel = mm)."""
    return jacobian_determinant(u[0].detach().double(), Grid(tuple(u.shape[2:])))


def with_large_output(net, inputs, amplitude, seed=0):
    """Random flow-layer weights scaled so that the network's raw field on ``inputs`` peaks at ``amplitude``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.flow.weight.copy_(torch.randn(net.flow.weight.shape, generator=g, dtype=net.flow.weight.dtype))
        raw = net.flow(net.unet(pad_to_multiple(torch.cat(inputs, dim=1), net.stride)[0]))
        net.flow.weight.mul_(amplitude / raw.abs().max())
    return net


@pytest.mark.parametrize("kind", ["voxelmorph", "voxelmorph-diff"])
@pytest.mark.parametrize("shape", [(23, 37), (13, 18, 11)])
def test_any_input_shape_gives_fields_of_the_input_shape(kind, shape):
    torch.manual_seed(0)
    net = VoxelMorph(VoxelMorphConfig.from_kind(kind, ndim=len(shape), **TINY)).eval()
    moving, fixed = torch.rand(2, 1, *shape), torch.rand(2, 1, *shape)
    out = net(moving, fixed)
    d = len(shape)
    assert isinstance(out, NetworkOutput) and isinstance(net, RegistrationNetwork)
    assert out.displacement.shape == (2, d, *shape) and out.scales == []
    if kind == "voxelmorph":
        assert out.inverse is None and out.velocity is None and not net.diffeomorphic
    else:
        padded = [s + (-s) % 8 for s in shape]
        assert out.inverse.shape == (2, d, *shape) and net.diffeomorphic
        assert out.velocity.shape == (2, d, *[p // 2 for p in padded])
    # a new network predicts an almost-identity map (flow weights ~ N(0, 1e-5))
    assert out.displacement.abs().max() < 1e-3


def test_diff_model_output_is_exp_of_its_velocity_upsampled():
    torch.manual_seed(1)
    x, y = torch.rand(1, 1, 24, 32), torch.rand(1, 1, 24, 32)
    net = with_large_output(VoxelMorph(VoxelMorphConfig.from_kind("voxelmorph-diff", ndim=2, **TINY)), (x, y), 3.0).eval()
    out = net(x, y)
    assert out.velocity.abs().max() > 2.9
    expected = resize_displacement(integrate_velocity_voxels(out.velocity, steps=7), (24, 32))
    torch.testing.assert_close(out.displacement, expected)
    torch.testing.assert_close(out.inverse, resize_displacement(integrate_velocity_voxels(-out.velocity, steps=7), (24, 32)))


def test_diff_model_is_diffeomorphic_at_initialisation_and_for_large_outputs():
    torch.manual_seed(2)
    cfg = VoxelMorphConfig.from_kind("voxelmorph-diff", ndim=3, **TINY)
    net = VoxelMorph(cfg).eval()
    x, y = torch.rand(1, 1, 20, 24, 18), torch.rand(1, 1, 20, 24, 18)
    assert det_j(net(x, y).displacement).min() > 0.999
    out = with_large_output(net, (x, y), 4.0)(x, y)  # half-resolution voxels: 8 voxels at full resolution
    assert out.displacement.abs().max() > 3.0 and det_j(out.velocity).min() < 0  # v as a displacement would fold
    assert det_j(out.displacement).min() > 0 and det_j(out.inverse).min() > 0


def test_exponential_of_a_smooth_random_velocity_never_folds_where_the_velocity_itself_would():
    rng = np.random.default_rng(5)
    v = np.stack([ndimage.gaussian_filter(rng.standard_normal((24, 28, 20)), 2.0, mode="wrap") for _ in range(3)])
    v = torch.from_numpy(v / np.abs(v).max() * 6.0)[None]
    assert det_j(v).min() < 0  # used as a displacement, this field folds
    u = resize_displacement(integrate_velocity_voxels(v, steps=7), (48, 56, 40))  # the diff model's path
    assert det_j(u).min() > 0


class FixedVelocity(torch.nn.Module):
    """Stands in for the flow layer: returns a given velocity whatever the features."""

    def __init__(self, velocity):
        super().__init__()
        self.velocity = velocity

    def forward(self, features):
        assert features.shape[2:] == self.velocity.shape[2:]
        return self.velocity


@pytest.mark.parametrize("shape", [(45, 39), (27, 25, 23)])
def test_diff_model_inverse_round_trips_within_a_tenth_of_a_voxel_for_a_smooth_velocity(shape):
    ndim = len(shape)
    net = VoxelMorph(VoxelMorphConfig.from_kind("voxelmorph-diff", ndim=ndim, **TINY)).double().eval()
    half = [(s + (-s) % net.stride) // 2 for s in shape]
    rng = np.random.default_rng(8)
    v = np.stack([ndimage.gaussian_filter(rng.standard_normal(half), 3.0, mode="wrap") for _ in range(ndim)])
    net.flow = FixedVelocity(torch.from_numpy(v / np.abs(v).max() * 1.5)[None])  # 3 voxels at full resolution
    x = torch.rand(1, 1, *shape, dtype=torch.float64)
    out = net(x, x)
    assert out.displacement.abs().max() > 2.5
    for err in (compose_displacements(out.inverse, out.displacement), compose_displacements(out.displacement, out.inverse)):
        inner = err[(slice(None), slice(None)) + (slice(4, -4),) * ndim]
        assert inner.norm(dim=1).max() < 0.1


@pytest.mark.parametrize("kind", ["voxelmorph", "voxelmorph-diff"])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, kind):
    torch.manual_seed(4)
    x, y = torch.rand(1, 1, 17, 15, 19), torch.rand(1, 1, 17, 15, 19)
    net = with_large_output(VoxelMorph(VoxelMorphConfig.from_kind(kind, ndim=3, **TINY)), (x, y), 2.0).eval()
    path = save_model(tmp_path / "m.pt", net, kind=net.kind, meta={"note": "round trip"})
    loaded, meta = load_model(path)
    assert isinstance(loaded, VoxelMorph) and loaded.config == net.config and meta["note"] == "round trip"
    a, b = net(x, y), loaded(x, y)
    assert torch.equal(a.displacement, b.displacement)
    if kind == "voxelmorph-diff":
        assert torch.equal(a.inverse, b.inverse)


def test_loading_rejects_mismatched_weights_and_configs_naming_the_file(tmp_path):
    torch.manual_seed(5)
    net = VoxelMorph(VoxelMorphConfig.from_kind("voxelmorph-diff", ndim=2, **TINY))
    path = save_model(tmp_path / "vm.pt", net, kind=net.kind)
    obj = torch.load(path, weights_only=True)

    def rewrite(name, **config):
        bad = dict(obj, config={**obj["config"], **config})
        torch.save(bad, tmp_path / name)
        return tmp_path / name

    cases = {
        rewrite("wider.pt", enc_channels=[16, 8, 8]): "does not match its 'voxelmorph-diff' config",
        rewrite("threed.pt", ndim=3): "does not match",
        rewrite("notdiff.pt", diffeomorphic=False): "invalid 'voxelmorph-diff' config: config: a 'voxelmorph-diff' model needs diffeomorphic=True",
        rewrite("badsteps.pt", int_steps=0): "invalid 'voxelmorph-diff' config: int_steps",
    }
    for file, message in cases.items():
        with pytest.raises(ValueError, match=message) as info:
            load_model(file)
        text = str(info.value)
        assert str(file) in text and "\n" not in text
    with pytest.raises(ValueError, match="holds a 'voxelmorph-diff' model, expected 'voxelmorph'"):
        load_model(path, kind="voxelmorph")


def test_inputs_that_do_not_fit_are_rejected_naming_the_argument():
    net = VoxelMorph(VoxelMorphConfig(ndim=2, **TINY))
    with pytest.raises(ValueError, match="moving, fixed: expected the same batch size and spatial shape"):
        net(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))
    with pytest.raises(ValueError, match="expected 2 channels together"):
        net(torch.zeros(1, 2, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="moving: expected shape .* 2 spatial axes"):
        net(torch.zeros(1, 1, 8, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="int_downsize"):
        VoxelMorphConfig(int_downsize=3)
    with pytest.raises(ValueError, match="kind"):
        VoxelMorphConfig.from_kind("vxm")


def blobs(shape):
    """A smooth test image: a few Gaussian blobs."""
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"))
    img = np.zeros(shape)
    for centre, sigma, amp in (((0.4, 0.45), 3.0, 1.0), ((0.62, 0.6), 2.5, 0.8), ((0.35, 0.7), 2.0, 0.6)):
        c = np.asarray(centre[: len(shape)] + (0.5,) * (len(shape) - 2)) * (np.asarray(shape) - 1)
        r2 = sum((grid[a] - c[a]) ** 2 for a in range(len(shape)))
        img += amp * np.exp(-r2 / (2 * sigma**2))
    return torch.from_numpy(img).float()[None, None]


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread (on a busy machine, two threads make each small op ~100x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("kind", ["voxelmorph", "voxelmorph-diff"])
def test_a_tiny_model_overfits_one_pair_moved_by_a_known_smooth_field(kind, one_thread):
    torch.manual_seed(6)
    shape = (24, 24)
    fixed = blobs(shape)
    g = np.random.default_rng(7)
    w = np.stack([ndimage.gaussian_filter(g.standard_normal(shape), 4.0, mode="wrap") for _ in range(2)])
    w = torch.from_numpy(w / np.abs(w).max() * 2.5).float()[None]
    moving = warp_voxels(fixed, w, padding="border")  # moving(x) = fixed(x + w(x))
    net = VoxelMorph(VoxelMorphConfig.from_kind(kind, ndim=2, enc_channels=(16, 16), dec_channels=(16, 16, 16)))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)

    def loss_of(out):
        return ((warp_voxels(moving, out.displacement, padding="border") - fixed) ** 2).mean()

    start = float(((moving - fixed) ** 2).mean())
    for _ in range(150):
        opt.zero_grad()
        loss = loss_of(net(moving, fixed))
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = net(moving, fixed)
        final = float(loss_of(out))
    assert final < start / 30, (start, final)  # measured: ~300x
    if kind == "voxelmorph-diff":
        assert det_j(out.displacement).min() > 0
