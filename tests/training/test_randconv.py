"""Random convolutions keep the geometry (boundaries stay where they were) and change the intensities."""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from omnireg.data import sample_path
from omnireg.io import load_image
from omnireg.training import RandConvConfig, RandomConvolution, random_convolution

SEEDS = range(8)


@pytest.fixture(scope="module")
def brain():
    """The bundled T1 (2 mm), its tissue labels, and voxel sets next to / away from label boundaries."""
    t1 = load_image(sample_path("t1")).batch().float()
    lab = load_image(sample_path("labels")).data[0].numpy().astype(np.int32)
    boundary = np.zeros(lab.shape, bool)
    for a in range(3):
        diff = np.diff(lab, axis=a) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[a], hi[a] = slice(0, -1), slice(1, None)
        boundary[tuple(lo)] |= diff
        boundary[tuple(hi)] |= diff
    dist = ndi.distance_transform_edt(~boundary)
    region = ndi.binary_dilation(lab > 0, iterations=2)
    near = torch.from_numpy(boundary & region)
    far = torch.from_numpy((dist >= 3) & region)
    return t1, torch.from_numpy(lab), near, far


@pytest.fixture(scope="module")
def outputs(brain):
    """Random convolutions (default config) of the bundled T1 with seeds 0..7."""
    t1 = brain[0]
    return [random_convolution(t1, generator=torch.Generator().manual_seed(s)) for s in SEEDS]


def _edge_contrast(y: torch.Tensor, near: torch.Tensor, far: torch.Tensor) -> float:
    """Mean gradient magnitude on label boundaries over that >= 3 voxels away from them."""
    g = torch.stack(torch.gradient(y[0, 0]), 0).norm(dim=0)
    return float(g[near].mean() / g[far].mean())


def _ncc(a: torch.Tensor, b: torch.Tensor, m: torch.Tensor) -> float:
    a, b = a[0, 0][m].double(), b[0, 0][m].double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_same_generator_seed_gives_the_same_output_and_other_seeds_differ():
    x = torch.rand(2, 1, 12, 13, 14, generator=torch.Generator().manual_seed(0))
    a = random_convolution(x, generator=torch.Generator().manual_seed(5))
    b = RandomConvolution()(x, torch.Generator().manual_seed(5))
    c = random_convolution(x, generator=torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == x.dtype
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])  # every batch item gets its own network


def test_piecewise_constant_regions_stay_constant_away_from_boundaries(brain):
    # input constant per label: the output is constant per label beyond the receptive-field radius
    _, lab, _, _ = brain
    values = torch.rand(int(lab.max()) + 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = values[lab.long()].float()[None, None]
    cfg = RandConvConfig(kernel_sizes=(1, 3), depth=2)
    radius = cfg.depth * (max(cfg.kernel_sizes) // 2)  # receptive-field radius (voxels, per axis)
    for seed in range(3):
        y = random_convolution(x, config=cfg, generator=torch.Generator().manual_seed(seed))[0, 0]
        spread = []
        for label in lab.unique().tolist():
            core = ndi.binary_erosion((lab == label).numpy(), structure=np.ones((3, 3, 3)), iterations=radius + 1)
            if core.sum() > 20:
                spread.append(float(y[torch.from_numpy(core)].std()))
        assert len(spread) >= 2 and max(spread) < 1e-4 * float(y.std()), (seed, spread)


def test_edges_stay_on_label_boundaries(brain, outputs):
    t1, _, near, far = brain
    assert _edge_contrast(t1, near, far) > 3
    assert _edge_contrast(torch.randn_like(t1), near, far) < 1.3  # the check can fail
    assert _edge_contrast(torch.roll(t1, 3, dims=2), near, far) < 0.6 * _edge_contrast(t1, near, far)
    for seed, y in zip(SEEDS, outputs):
        assert _edge_contrast(y, near, far) > 2.0, seed


def test_intensities_change_substantially(brain, outputs):
    t1, lab, _, _ = brain
    inside = lab > 0
    nccs = [abs(_ncc(y, t1, inside)) for y in outputs]
    assert float(np.median(nccs)) < 0.5, nccs
    assert sum(n < 0.6 for n in nccs) >= 6, nccs


def test_2d_images_and_mixing_with_the_input():
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    full = random_convolution(x, config=RandConvConfig(mix=(1.0, 1.0)), generator=torch.Generator().manual_seed(0))
    z = (x - x.mean()) / x.std(unbiased=False)
    torch.testing.assert_close(full, z, atol=1e-4, rtol=1e-4)  # alpha = 1: the standardised input


@pytest.mark.parametrize(
    "kwargs, match",
    [({"kernel_sizes": (2,)}, "kernel_sizes"), ({"depth": 0}, "depth"), ({"mix": (0.5, 0.2)}, "mix"),
     ({"nonlinearity": "tanh"}, "nonlinearity"), ({"hidden_channels": 0}, "hidden_channels")],
)
def test_invalid_config_names_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandConvConfig(**kwargs)


def test_invalid_images_are_rejected():
    with pytest.raises(TypeError, match="image"):
        random_convolution(torch.zeros(1, 1, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="image"):
        random_convolution(torch.zeros(1, 1, 8))
