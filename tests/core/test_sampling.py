"""The sampling primitive agrees with scipy.ndimage and is differentiable."""

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from omnireg.core import Grid, sample
from omnireg.core.filters import gaussian_blur
from omnireg.core.sampling import bspline_prefilter


@pytest.mark.parametrize("order,interp", [(0, "nearest"), (1, "linear"), (3, "cubic")])
def test_sample_matches_scipy_map_coordinates_inside(order, interp):
    rng = np.random.default_rng(1)
    vol = rng.random((9, 11, 8))
    pts = rng.random((200, 3)) * (np.array(vol.shape) - 1)
    if order == 0:  # avoid exact .5 ties
        pts = np.round(pts) + rng.uniform(-0.4, 0.4, pts.shape)
        pts = np.clip(pts, 0, np.array(vol.shape) - 1)
    ref = ndi.map_coordinates(vol, pts.T, order=order, mode="mirror")
    out = sample(torch.tensor(vol)[None, None], torch.tensor(pts)[None, :, None, None, :], interp=interp)
    np.testing.assert_allclose(out.reshape(-1).numpy(), ref, atol=1e-12)


def test_padding_zeros_and_border_outside():
    data = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    pts = torch.tensor([[[[10.0, 1.0]], [[-5.0, 2.0]]]], dtype=torch.float64)
    assert sample(data, pts, padding="zeros").abs().sum().item() == 0.0
    assert sample(data, pts, padding="border").min().item() == 1.0


def test_bspline_prefilter_matches_scipy_spline_filter():
    vol = np.random.default_rng(2).random((7, 12, 5))
    out = bspline_prefilter(torch.tensor(vol)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(out, ndi.spline_filter(vol, order=3, mode="mirror"), atol=1e-12)


@pytest.mark.parametrize("interp", ["linear", "cubic"])
def test_gradcheck_wrt_points_and_data(interp):
    torch.manual_seed(0)
    data = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    pts = (torch.rand(1, 4, 3, 2, dtype=torch.float64) * torch.tensor([4.0, 5.0], dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda d, p: sample(d, p, interp=interp), (data, pts))


def test_gaussian_blur_matches_scipy():
    vol = np.random.default_rng(3).random((10, 12, 9))
    out = gaussian_blur(torch.tensor(vol)[None, None], [1.0, 0.0, 2.5])[0, 0].numpy()
    np.testing.assert_allclose(out, ndi.gaussian_filter(vol, [1.0, 0.0, 2.5], mode="nearest", truncate=3.0), atol=1e-12)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="points"):
        sample(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="interp"):
        sample(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 3, 2), interp="quintic")
    with pytest.raises(ValueError, match="spacing"):
        Grid((3, 3), spacing=(1.0, -1.0))


def test_with_spacing_keeps_world_centre():
    g = Grid((10, 20, 7), spacing=(1.0, 0.5, 3.0), origin=(5.0, 1.0, -3.0))
    c = g.downsample(2)
    centre = lambda gr: gr.transform_points((np.asarray(gr.shape) - 1) / 2, "voxel", "world")  # noqa: E731
    np.testing.assert_allclose(centre(g), centre(c), atol=1e-12)
    assert c.shape == (5, 10, 4)
