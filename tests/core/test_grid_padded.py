"""Grid.padded: whole voxels added on every side; existing voxels keep their world positions."""

import math

import numpy as np
import pytest

from omnireg.core import Grid


def _oblique_grid():
    c, s = math.cos(0.3), math.sin(0.3)
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, -1.0]])
    return Grid((10, 12, 7), (2.0, 1.5, 3.0), (5.0, -7.0, 11.0), direction)


def test_padded_grid_keeps_world_positions_and_centre():
    g = _oblique_grid()
    p = g.padded((4.0, 3.1, 0.0))
    extra = np.array([2, 3, 0])  # ceil(4 / 2), ceil(3.1 / 1.5), 0
    assert p.shape == tuple(np.asarray(g.shape) + 2 * extra)
    assert p.spacing == g.spacing
    np.testing.assert_allclose(p.direction, g.direction)
    vox = np.array([[0.0, 0.0, 0.0], [9.0, 11.0, 6.0], [3.5, 2.0, 4.0]])
    np.testing.assert_allclose(p.transform_points(vox + extra, "voxel", "world"), g.transform_points(vox, "voxel", "world"), atol=1e-9)
    centre = lambda grid: grid.transform_points((np.asarray(grid.shape) - 1) / 2.0, "voxel", "world")  # noqa: E731
    np.testing.assert_allclose(centre(p), centre(g), atol=1e-9)
    assert g.padded(3.0).shape == (10 + 4, 12 + 4, 7 + 2)  # one value for every axis


def test_padded_rejects_negative_or_non_finite_margins():
    with pytest.raises(ValueError, match="pad_mm"):
        _oblique_grid().padded(-1.0)
    with pytest.raises(ValueError, match="pad_mm"):
        _oblique_grid().padded(float("nan"))
