"""Convention pins for transforms: pull warping, composition order, world displacement components."""

from __future__ import annotations

import math

import numpy as np
import torch

from omnireg.core import Grid, Image
from omnireg.transforms import (
    DisplacementField,
    Rigid,
    Similarity,
    Translation,
    compose,
    resample,
    transform_points,
)

D64 = torch.float64


def test_translation_by_plus_t_along_world_r_moves_content_by_minus_t():
    grid = Grid((11, 5, 5), spacing=(1.0, 1.0, 1.0), origin=(-5.0, -2.0, -2.0))
    data = torch.zeros(1, 11, 5, 5, dtype=D64)
    data[0, 8, 2, 2] = 1.0  # world R = +3
    out = resample(Image(data, grid), Translation(3, translation=[2.0, 0.0, 0.0], dtype=D64), onto=grid)
    peak = torch.nonzero(out.data[0] == 1.0).tolist()
    assert peak == [[6, 2, 2]]  # world R = +1 = 3 - 2


def test_translation_pin_holds_on_a_grid_whose_first_axis_points_left():
    # tensor axis 0 runs towards L (like a radiological/LPS-stored volume): world R decreases with i
    grid = Grid((11, 5), spacing=(1.0, 1.0), origin=(5.0, -2.0), direction=np.diag([-1.0, 1.0]))
    data = torch.zeros(1, 11, 5, dtype=D64)
    data[0, 2, 2] = 1.0  # world R = 5 - 2 = +3
    out = resample(Image(data, grid), Translation(2, translation=[2.0, 0.0], dtype=D64), onto=grid)
    assert torch.nonzero(out.data[0] == 1.0).tolist() == [[4, 2]]  # world R = +1


def test_landmarks_and_images_use_the_same_mapping():
    grid = Grid((21, 21), spacing=(1.0, 1.0), origin=(-10.0, -10.0))
    tr = Rigid(2, rotation=math.pi / 2, translation=[1.0, 2.0], dtype=D64)
    x0 = torch.tensor([[[3.0, -4.0]]], dtype=D64)  # a fixed-space landmark on a voxel centre
    y0 = transform_points(tr, x0)  # its position in the moving image
    data = torch.zeros(1, 21, 21, dtype=D64)
    vox = grid.transform_points(y0, "world", "voxel").round().long()[0, 0]
    data[0, vox[0], vox[1]] = 1.0
    out = resample(Image(data, grid), tr, onto=grid)
    peak = grid.transform_points(torch.nonzero(out.data[0] > 0.5).to(D64), "voxel", "world")
    torch.testing.assert_close(peak, x0[0])


def test_compose_a_b_applies_b_first():
    a = Translation(2, translation=[1.0, 0.0], dtype=D64)
    b = Similarity(2, scale=2.0, dtype=D64)
    x = torch.tensor([[[1.0, 1.0]]], dtype=D64)
    torch.testing.assert_close(compose(a, b)(x), torch.tensor([[[3.0, 2.0]]], dtype=D64))  # a(b(x)) = 2x + (1, 0)
    torch.testing.assert_close(compose(b, a)(x), torch.tensor([[[4.0, 2.0]]], dtype=D64))  # b(a(x)) = 2(x + (1, 0))


def test_2d_rotation_turns_r_towards_a_and_3d_rotation_vector_is_right_handed():
    r2 = Rigid(2, rotation=math.pi / 2, dtype=D64)
    torch.testing.assert_close(r2(torch.tensor([[[1.0, 0.0]]], dtype=D64)), torch.tensor([[[0.0, 1.0]]], dtype=D64))
    r3 = Rigid(3, rotation=[math.pi / 2, 0.0, 0.0], dtype=D64)  # about +R: A -> S
    torch.testing.assert_close(r3(torch.tensor([[[0.0, 1.0, 0.0]]], dtype=D64)), torch.tensor([[[0.0, 0.0, 1.0]]], dtype=D64))


def test_world_displacement_components_are_world_axes_not_tensor_axes():
    # an oblique grid: tensor axis 0 points towards A, axis 1 towards L
    direction = np.array([[0.0, -1.0], [1.0, 0.0]])
    grid = Grid((4, 5), spacing=(2.0, 3.0), direction=direction)
    u = Translation(2, translation=[1.0, 0.0], dtype=D64).displacement(grid)
    assert u.shape == (1, 2, 4, 5)
    torch.testing.assert_close(u[:, 0], torch.ones(1, 4, 5, dtype=D64))  # world R
    torch.testing.assert_close(u[:, 1], torch.zeros(1, 4, 5, dtype=D64))  # world A
    vox = DisplacementField(u, grid).to_voxel_displacement()
    torch.testing.assert_close(vox[:, 0], torch.zeros(1, 4, 5, dtype=D64))  # tensor axis 0 (A)
    torch.testing.assert_close(vox[:, 1], torch.full((1, 4, 5), -1.0 / 3.0, dtype=D64))  # axis 1 (L): -1/3 voxel
