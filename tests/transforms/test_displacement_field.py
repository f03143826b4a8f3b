"""Dense displacement fields: evaluation, ITK agreement, voxel units, inversion, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnireg.core import Grid
from omnireg.transforms import DisplacementField, warp

D64 = torch.float64


def _smooth_field(grid: Grid, amplitude: float = 1.5) -> torch.Tensor:
    x = grid.points("world", dtype=D64)
    comps = [amplitude * torch.sin(0.2 * x[..., (a + 1) % grid.ndim] + a) for a in range(grid.ndim)]
    return torch.stack(comps, 0)[None]


def test_zero_field_is_the_identity():
    grid = Grid((6, 7, 5), spacing=(2.0, 1.0, 1.5))
    df = DisplacementField(torch.zeros(1, 3, 6, 7, 5), grid)
    x = torch.randn(1, 10, 3) * 5
    assert torch.equal(df(x), x)


def test_evaluation_at_voxel_centres_returns_the_field(oblique_grid):
    u = _smooth_field(oblique_grid)
    df = DisplacementField(u, oblique_grid, learnable=False)
    x = oblique_grid.points("world", dtype=D64)[None]
    torch.testing.assert_close(df(x) - x, u.movedim(1, -1), rtol=0, atol=1e-10)
    torch.testing.assert_close(df.displacement(oblique_grid), u, rtol=0, atol=1e-12)


def test_evaluation_between_voxels_is_linear():
    grid = Grid((4, 4), spacing=(2.0, 3.0), origin=(1.0, 1.0))
    u = torch.zeros(1, 2, 4, 4, dtype=D64)
    u[0, 0, 1, 1], u[0, 0, 2, 1] = 1.0, 3.0
    df = DisplacementField(u, grid)
    mid = torch.tensor([[[1.0 + 2.0 * 1.5, 1.0 + 3.0]]], dtype=D64)
    torch.testing.assert_close(df(mid) - mid, torch.tensor([[[2.0, 0.0]]], dtype=D64))


def test_outside_the_field_the_displacement_is_zero_as_in_itk(helpers, oblique_grid):
    sitk = pytest.importorskip("SimpleITK")
    u = _smooth_field(oblique_grid)
    df = DisplacementField(u, oblique_grid)
    st = helpers.sitk_displacement(u[0].numpy(), oblique_grid)
    g = torch.Generator().manual_seed(3)
    vox = torch.rand(200, 3, generator=g, dtype=D64) * (torch.tensor(oblique_grid.shape, dtype=D64) + 3) - 2.0
    pts = oblique_grid.transform_points(vox, "voxel", "world")
    ours = df(pts[None])[0].detach().numpy()
    f = helpers.lps_from_ras
    ref = np.array([f @ np.array(st.TransformPoint(tuple((f @ p).tolist()))) for p in pts.numpy()])
    np.testing.assert_allclose(ours, ref, atol=1e-8)
    outside = ((vox < -0.5) | (vox > torch.tensor(oblique_grid.shape) - 0.5)).any(-1)
    assert outside.sum() > 10
    np.testing.assert_allclose(ours[outside.numpy()], pts.numpy()[outside.numpy()], atol=0)


def test_voxel_displacement_round_trip_and_units(oblique_grid):
    g = torch.Generator().manual_seed(0)
    u_vox = torch.randn(2, 3, *oblique_grid.shape, generator=g, dtype=D64)
    df = DisplacementField.from_voxel_displacement(u_vox, oblique_grid)
    torch.testing.assert_close(df.to_voxel_displacement(), u_vox)
    # a unit voxel step along tensor axis 1 is spacing[1] mm along the grid's axis-1 direction
    step = torch.zeros(1, 3, *oblique_grid.shape, dtype=D64)
    step[:, 1] = 1.0
    w = DisplacementField.from_voxel_displacement(step, oblique_grid).field[0, :, 0, 0, 0]
    np.testing.assert_allclose(w.detach().numpy(), oblique_grid.spacing[1] * oblique_grid.direction[:, 1], atol=1e-12)


def test_voxel_displacement_maps_fixed_voxels_to_moving_voxels(oblique_grid):
    u_vox = torch.zeros(1, 3, *oblique_grid.shape, dtype=D64)
    u_vox[:, 0] = 1.0
    df = DisplacementField.from_voxel_displacement(u_vox, oblique_grid)
    x = oblique_grid.points("world", dtype=D64)[None]
    vox = oblique_grid.transform_points(df.transform_grid(oblique_grid), "world", "voxel")
    torch.testing.assert_close(vox - oblique_grid.points("voxel", dtype=D64)[None], u_vox.movedim(1, -1))
    assert x.shape == vox.shape


def test_inverse_of_a_smooth_field_round_trips_points():
    grid = Grid((24, 24, 20), spacing=(1.5, 1.5, 2.0), origin=(-10.0, -12.0, 0.0))
    u = _smooth_field(grid, amplitude=1.5)
    df = DisplacementField(u, grid)
    inv = df.inverse(max_iter=100, tol=1e-4)
    assert isinstance(inv, DisplacementField) and inv.grid == grid
    # interior voxel centres (away from the border, where the field is cut off)
    x = grid.points("world", dtype=D64)[4:-4, 4:-4, 4:-4].reshape(1, -1, 3)
    err = (df(inv(x)) - x).norm(dim=-1).max().item()
    assert err < 1e-2
    # the other way round adds the linear interpolation error of v between voxel centres
    err2 = (inv(df(x)) - x).norm(dim=-1).max().item()
    assert err2 < 0.1


def test_inverse_validates_options():
    df = DisplacementField(torch.zeros(1, 2, 4, 4), Grid((4, 4)))
    with pytest.raises(ValueError, match="max_iter"):
        df.inverse(max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        df.inverse(tol=-1.0)


def test_field_shape_is_validated():
    with pytest.raises(ValueError, match="field"):
        DisplacementField(torch.zeros(1, 3, 4, 4), Grid((4, 4)))
    with pytest.raises(TypeError, match="grid"):
        DisplacementField(torch.zeros(1, 2, 4, 4), (4, 4))


def test_gradcheck_of_warp_wrt_displacement_field():
    grid = Grid((5, 6), spacing=(1.5, 1.0), origin=(0.3, -0.2))
    g = torch.Generator().manual_seed(0)
    moving = torch.randn(1, 2, 5, 6, generator=g, dtype=D64)
    u0 = torch.rand(1, 2, 5, 6, generator=g, dtype=D64) * 0.6 + 0.1

    def f(u, img):
        return warp(img, grid, DisplacementField(u, grid, learnable=False), grid)

    assert torch.autograd.gradcheck(f, (u0.requires_grad_(), moving.requires_grad_()))


def test_learnable_field_is_a_parameter_and_network_fields_keep_their_graph():
    grid = Grid((4, 4))
    net_out = torch.zeros(1, 2, 4, 4, requires_grad=True)
    df = DisplacementField(net_out * 2, grid, learnable=False)
    df(torch.ones(1, 3, 2)).sum().backward()
    assert net_out.grad is not None
    learn = DisplacementField(torch.zeros(1, 2, 4, 4), grid)
    assert [n for n, _ in learn.named_parameters()] == ["field"]
    assert learn.clone().field is not learn.field
    assert DisplacementField(net_out * 2, grid, learnable=False).clone().field.grad_fn is not None
