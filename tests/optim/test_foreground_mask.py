"""The similarity mask of deformable stages: the fixed image's foreground dilated by FOREGROUND_DILATION_MM."""

import numpy as np
import torch

from omnireg.core import Grid
from omnireg.optim import preset
from omnireg.optim.problem import FOREGROUND_DILATION_MM, ProblemBuilder


def test_the_similarity_mask_reaches_just_past_the_edge_of_the_foreground():
    # a bright ball of radius 12 mm on a black background, 1 mm voxels, anisotropic grid to catch axis mix-ups
    grid = Grid((48, 48, 24), spacing=(1.0, 1.0, 2.0))
    pts = grid.points("world", dtype=torch.float64)
    centre = pts.reshape(-1, 3).mean(0)
    r = (pts - centre).norm(dim=-1)
    data = (r <= 12.0).to(torch.float32)[None, None]
    builder = ProblemBuilder(preset("deformable"), data, grid, data, grid, None, None, torch.Generator().manual_seed(0))
    mask = builder.foreground()[0, 0].numpy() > 0
    r = r.numpy()
    assert FOREGROUND_DILATION_MM == 2.0
    # everything within the ball and a band of the dilation is measured, nothing 1.5 voxels beyond that band
    assert mask[r <= 12.0 + FOREGROUND_DILATION_MM - 1.0].all()
    assert not mask[r >= 12.0 + FOREGROUND_DILATION_MM + 2.0].any()
    # the band is thinner than the 5 mm used before (which let the field move more outside the brain than inside)
    assert not mask[r >= 16.5].any()
    assert np.isclose(mask.sum() * 2.0, 4 / 3 * np.pi * (12.0 + FOREGROUND_DILATION_MM) ** 3, rtol=0.25)
