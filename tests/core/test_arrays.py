"""omnireg.core.arrays: the one check of user point lists and homogeneous matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnireg.core.arrays import as_homogeneous_matrix, as_point_array


def test_points_from_tensors_and_lists_are_float64_copies_of_the_values():
    t = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float32, requires_grad=True)
    out = as_point_array(t, "p")
    assert out.dtype == np.float64 and out.tolist() == [[1.0, 2.0, 3.0]]
    assert as_point_array([[0, 1], [2, 3]], "p", ndim=2).shape == (2, 2)


def test_point_errors_name_the_argument():
    with pytest.raises(TypeError, match="fixed_points: expected a \\(P, D\\) array"):
        as_point_array({"a": 1}, "fixed_points")
    with pytest.raises(ValueError, match=r"q: expected shape \(P, 3\)"):
        as_point_array(np.zeros((4, 2)), "q", ndim=3)
    with pytest.raises(ValueError, match=r"q: expected shape \(P, 2\) or \(P, 3\)"):
        as_point_array(np.zeros(3), "q")
    with pytest.raises(ValueError, match="q: expected finite coordinates"):
        as_point_array([[np.nan, 0.0]], "q")


def test_homogeneous_matrix_accepts_a_batch_of_one_and_checks_shape_values_and_last_row():
    m = np.eye(4)
    m[:3, 3] = [1.0, 2.0, 3.0]
    np.testing.assert_array_equal(as_homogeneous_matrix(torch.from_numpy(m)[None], "t", ndim=3), m)
    assert as_homogeneous_matrix(np.eye(3), "t").shape == (3, 3)
    with pytest.raises(ValueError, match=r"t: expected a homogeneous \(3, 3\) matrix, got shape \(4, 4\)"):
        as_homogeneous_matrix(m, "t", ndim=2)
    bad = m.copy()
    bad[3, 0] = 1e-6
    with pytest.raises(ValueError, match="t: expected the last row to be"):
        as_homogeneous_matrix(bad, "t")
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match="t: expected finite values"):
        as_homogeneous_matrix(bad, "t")
