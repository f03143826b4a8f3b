"""Convention pins for the core: axis order, align_corners, the three spaces, pull sampling."""

import numpy as np
import pytest
import torch

from omnireg.core import Grid, Image, sample, sample_world
from omnireg.core.sampling import _to_grid_sample_order


def test_axis_order_voxel_components_follow_tensor_axes():
    # a ramp along tensor axis 1 (j): sampling at (i, j, k) = (0, 2, 0) must return the j value
    data = torch.arange(5, dtype=torch.float64).view(1, 1, 1, 5, 1).expand(1, 1, 3, 5, 4).contiguous()
    pts = torch.tensor([[[[[1.0, 2.0, 3.0]]]]], dtype=torch.float64)
    assert sample(data, pts).item() == pytest.approx(2.0)


def test_grid_sample_order_reversal_is_the_only_flip():
    p = torch.tensor([[1.0, 2.0, 3.0]])
    assert _to_grid_sample_order(p).tolist() == [[3.0, 2.0, 1.0]]


def test_align_corners_true_voxel_centres_are_minus_one_and_plus_one():
    g = Grid((5, 9))
    n = g.transform_points([[0.0, 0.0], [4.0, 8.0], [2.0, 4.0]], "voxel", "normalized")
    np.testing.assert_allclose(n, [[-1, -1], [1, 1], [0, 0]])


def test_sampling_at_voxel_centres_is_exact_identity():
    torch.manual_seed(0)
    data = torch.rand(2, 3, 6, 7, 5, dtype=torch.float64)
    g = Grid((6, 7, 5))
    pts = g.points("voxel", dtype=torch.float64).unsqueeze(0).expand(2, -1, -1, -1, -1)
    for interp in ("nearest", "linear", "cubic"):
        out = sample(data, pts, interp=interp)
        torch.testing.assert_close(out, data, rtol=0, atol=1e-12)


def test_world_is_ras_mm_with_direction_columns():
    # axis i points to world -x (L), axis j to +y (A): orientation code "LA" style
    direction = np.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    g = Grid((4, 4, 4), spacing=(2.0, 3.0, 1.0), origin=(10.0, -5.0, 0.0), direction=direction)
    w = g.transform_points([[1.0, 1.0, 1.0]], "voxel", "world")
    np.testing.assert_allclose(w, [[8.0, -2.0, 1.0]])
    assert g.orientation_code() == "LAS"


def test_world_voxel_normalized_round_trip_oblique():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    g = Grid((7, 9, 11), spacing=(0.7, 1.3, 2.1), origin=(3.0, -4.0, 12.0), direction=q)
    p = rng.normal(size=(20, 3)) * 10
    for a, b in [("world", "voxel"), ("world", "normalized"), ("voxel", "normalized")]:
        back = g.transform_points(g.transform_points(p, a, b), b, a)
        np.testing.assert_allclose(back, p, atol=1e-10)
    np.testing.assert_allclose(g.voxel_from_world() @ g.world_from_voxel(), np.eye(4), atol=1e-12)


def test_pull_sampling_in_world_space():
    # a 1D-like bump at world x = 10 mm; sampling the image at world point 10 returns the bump
    g = Grid((21, 3), spacing=(1.0, 1.0), origin=(0.0, 0.0))
    data = torch.zeros(1, 21, 3, dtype=torch.float64)
    data[0, 10] = 1.0
    img = Image(data, g)
    pts = torch.tensor([[[[10.0, 1.0]], [[9.0, 1.0]]]], dtype=torch.float64)
    out = sample_world(img, pts)
    assert out[0, 0, 0, 0].item() == 1.0 and out[0, 0, 1, 0].item() == 0.0


def test_label_maps_keep_integer_dtype_and_use_nearest():
    lab = torch.tensor([[[1, 2], [3, 4]]], dtype=torch.uint8).unsqueeze(0)
    pts = torch.tensor([[[[0.4, 0.6]]]])
    out = sample(lab, pts, interp="linear")
    assert out.dtype == torch.uint8 and out.item() == 2
