"""Warping images and mapping points: identity, commuting diagrams, labels, batches, SimpleITK agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnireg.core import Grid, Image, sample
from omnireg.transforms import (
    Affine,
    DisplacementField,
    Identity,
    Rigid,
    Translation,
    moving_voxel_points,
    resample,
    transform_points,
    warp,
)

D64 = torch.float64


def test_identity_reproduces_the_image_exactly(oblique_grid):
    g = torch.Generator().manual_seed(0)
    data = torch.randn(2, *oblique_grid.shape, generator=g, dtype=D64)
    img = Image(data, oblique_grid)
    for tr in (None, Identity(3, dtype=D64), Rigid(3, dtype=D64, center=[3.0, 4.0, 5.0]),
               DisplacementField(torch.zeros(1, 3, *oblique_grid.shape, dtype=D64), oblique_grid)):
        out = resample(img, tr, onto=oblique_grid)
        assert out.grid == oblique_grid
        torch.testing.assert_close(out.data, data, rtol=0, atol=1e-12)


def test_identity_reproduces_a_float32_image(oblique_grid):
    data = torch.randn(1, *oblique_grid.shape)
    out = resample(Image(data, oblique_grid), Identity(3), onto=oblique_grid)
    torch.testing.assert_close(out.data, data, rtol=0, atol=1e-5)


def test_warp_then_sample_equals_map_points_then_sample(helpers, oblique_grid):
    moving_grid = Grid((14, 12, 11), spacing=(1.8, 1.6, 2.2), origin=(-12.0, 0.0, -8.0),
                       direction=helpers.rotation_3d((-0.1, 0.2, 0.1)))
    moving = helpers.smooth_image(moving_grid)
    tr = Rigid(3, rotation=[0.05, -0.1, 0.08], translation=[1.0, -2.0, 0.5], center=[0.0, 5.0, 2.0], dtype=D64)
    warped = warp(moving, moving_grid, tr, oblique_grid)
    # map the fixed world points by hand, convert to moving voxels, sample
    x = oblique_grid.points("world", dtype=D64)[None]
    vox = moving_grid.transform_points(tr(x), "world", "voxel")
    torch.testing.assert_close(warped, sample(moving, vox), rtol=0, atol=1e-12)
    torch.testing.assert_close(moving_voxel_points(tr, oblique_grid, moving_grid), vox, rtol=0, atol=1e-10)


def test_pull_semantics_for_a_dense_field(oblique_grid):
    moving = torch.randn(1, 1, *oblique_grid.shape, dtype=D64)
    u = torch.randn(1, 3, *oblique_grid.shape, dtype=D64) * 0.5
    df = DisplacementField(u, oblique_grid)
    x = oblique_grid.points("world", dtype=D64)[None]
    expected = sample(moving, oblique_grid.transform_points(x + u.movedim(1, -1), "world", "voxel"))
    torch.testing.assert_close(warp(moving, oblique_grid, df, oblique_grid), expected, rtol=0, atol=1e-12)


def test_label_maps_use_nearest_and_keep_their_dtype():
    grid = Grid((8, 8), spacing=(1.0, 1.0))
    labels = torch.zeros(1, 8, 8, dtype=torch.int64)
    labels[0, 2:6, 3:7] = 7
    out = resample(Image(labels, grid), Translation(2, translation=[0.4, -0.3]), onto=grid)
    assert out.dtype == torch.int64
    assert set(out.data.unique().tolist()) <= {0, 7}
    assert torch.equal(out.data, labels)  # shifts below half a voxel round back to the same labels


def test_resample_onto_a_finer_grid_covers_the_same_world_content(helpers):
    coarse = Grid((10, 10), spacing=(2.0, 2.0), origin=(-9.0, -9.0))
    fine = coarse.with_spacing(1.0)
    img = Image(helpers.smooth_image(coarse)[0], coarse)
    out = resample(img, onto=fine)
    truth = helpers.smooth_image(fine)[0]
    inner = (slice(None), slice(3, -3), slice(3, -3))
    assert (out.data[inner] - truth[inner]).abs().max() < 0.05


def test_batch_of_transforms_on_one_image():
    grid = Grid((9, 9))
    img = torch.zeros(1, 1, 9, 9)
    img[0, 0, 4, 4] = 1.0
    tr = Translation(2, translation=torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, -2.0]]))
    out = warp(img, grid, tr, grid)
    assert out.shape == (3, 1, 9, 9)
    assert out[0, 0, 4, 4] == 1 and out[1, 0, 3, 4] == 1 and out[2, 0, 4, 6] == 1
    with pytest.raises(ValueError, match="batch size 1"):
        resample(Image(img[0], grid), tr, onto=grid)


def test_warp_validates_its_inputs():
    grid = Grid((5, 5))
    with pytest.raises(ValueError, match="moving_data"):
        warp(torch.zeros(1, 1, 5, 4), grid, Identity(2), grid)
    with pytest.raises(ValueError, match="fixed_grid"):
        warp(torch.zeros(1, 1, 5, 5), grid, Identity(2), Grid((5, 5, 5)))
    with pytest.raises(ValueError, match="batch"):
        warp(torch.zeros(2, 1, 5, 5), grid, Translation(2, batch_size=3), grid)
    with pytest.raises(TypeError, match="moving"):
        resample(torch.zeros(1, 5, 5), Identity(2), onto=grid)


def test_transform_points_is_the_image_mapping():
    tr = Rigid(2, rotation=0.2, translation=[1.0, 2.0])
    p = torch.tensor([[[3.0, 4.0], [0.0, 1.0]]])
    torch.testing.assert_close(transform_points(tr, p), tr(p))
    with pytest.raises(ValueError, match="points"):
        transform_points(tr, torch.zeros(2, 2))


def test_gradcheck_of_warp_wrt_affine_and_rigid_parameters():
    grid = Grid((5, 6, 4), spacing=(1.0, 1.2, 1.5))
    g = torch.Generator().manual_seed(0)
    moving = torch.randn(1, 1, 5, 6, 4, generator=g, dtype=D64)
    center = [2.0, 3.0, 2.5]

    def f_aff(lin, t):
        return warp(moving, grid, Affine(3, linear=lin, translation=t, center=center, learnable=False, dtype=D64), grid)

    lin = (torch.eye(3, dtype=D64) + 0.05 * torch.randn(3, 3, generator=g, dtype=D64))[None].requires_grad_()
    t = torch.tensor([[0.13, -0.21, 0.17]], dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(f_aff, (lin, t))

    def f_rig(rot, t):
        return warp(moving, grid, Rigid(3, rotation=rot, translation=t, center=center, learnable=False, dtype=D64), grid)

    rot = torch.tensor([[0.05, -0.03, 0.02]], dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(f_rig, (rot, t))


def _interior_mask(vox: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.all((vox >= 0) & (vox <= np.asarray(shape) - 1), axis=-1)


def test_resample_onto_an_oblique_anisotropic_grid_agrees_with_simpleitk(helpers, oblique_grid):
    sitk = pytest.importorskip("SimpleITK")
    moving_grid = Grid((16, 14, 12), spacing=(1.2, 1.5, 2.0), origin=(-10.0, -4.0, -9.0),
                       direction=helpers.rotation_3d((0.3, 0.1, -0.2)))
    g = torch.Generator().manual_seed(5)
    moving = torch.rand(1, 1, *moving_grid.shape, generator=g, dtype=D64)
    aff = Affine(3, linear=torch.eye(3, dtype=D64) + 0.08 * torch.randn(3, 3, generator=g, dtype=D64),
                 translation=[1.5, -2.0, 0.7], center=[1.0, 2.0, -1.0], dtype=D64)
    ours = resample(Image(moving[0], moving_grid), aff, onto=oblique_grid).numpy()[0]

    m = aff.matrix()[0].detach().numpy()
    ref_img = helpers.to_sitk_image(np.zeros(oblique_grid.shape), oblique_grid)
    out = sitk.Resample(helpers.to_sitk_image(moving[0, 0].numpy(), moving_grid), ref_img, helpers.sitk_affine(m),
                        sitk.sitkLinear, 0.0, sitk.sitkFloat64)
    ref = helpers.from_sitk_array(out)
    vox = moving_voxel_points(aff, oblique_grid, moving_grid)[0].detach().numpy()
    inside = _interior_mask(vox, moving_grid.shape)
    assert inside.sum() > 50
    np.testing.assert_allclose(ours[inside], ref[inside], atol=1e-4)


def test_warp_by_a_displacement_field_agrees_with_simpleitk(helpers, oblique_grid):
    sitk = pytest.importorskip("SimpleITK")
    moving_grid = Grid((14, 12, 12), spacing=(1.5, 1.7, 2.0), origin=(-9.0, 0.0, -7.0),
                       direction=helpers.rotation_3d((0.1, -0.2, 0.3)))
    g = torch.Generator().manual_seed(6)
    moving = torch.rand(1, 1, *moving_grid.shape, generator=g, dtype=D64)
    u = torch.randn(1, 3, *oblique_grid.shape, generator=g, dtype=D64) * 1.5
    df = DisplacementField(u, oblique_grid)
    target = Grid((10, 9, 8), spacing=(2.0, 1.8, 2.6), origin=(-6.0, 3.0, -3.0),
                  direction=helpers.rotation_3d((0.25, -0.25, 0.35)))
    ours = resample(Image(moving[0], moving_grid), df, onto=target).data[0].detach().numpy()
    ref_img = helpers.to_sitk_image(np.zeros(target.shape), target)
    out = sitk.Resample(helpers.to_sitk_image(moving[0, 0].numpy(), moving_grid), ref_img,
                        helpers.sitk_displacement(u[0].numpy(), oblique_grid), sitk.sitkLinear, 0.0, sitk.sitkFloat64)
    ref = helpers.from_sitk_array(out)
    vox = moving_voxel_points(df, target, moving_grid)[0].detach().numpy()
    inside = _interior_mask(vox, moving_grid.shape)
    assert inside.sum() > 50
    np.testing.assert_allclose(ours[inside], ref[inside], atol=1e-4)
