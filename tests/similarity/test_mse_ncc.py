"""MSE and global NCC against direct NumPy formulas; NCC invariance to linear intensity changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnireg.similarity import mse, ncc


def _weighted_pearson(f: np.ndarray, m: np.ndarray, w: np.ndarray) -> float:
    mf = np.sum(w * f) / np.sum(w)
    mm = np.sum(w * m) / np.sum(w)
    cov = np.sum(w * (f - mf) * (m - mm))
    return cov / np.sqrt(np.sum(w * (f - mf) ** 2) * np.sum(w * (m - mm) ** 2))


def test_mse_equals_numpy_weighted_mean_of_squared_differences(field):
    f = field((11, 12), seed=1)
    m = field((11, 12), seed=2)
    w = (field((11, 12), seed=3) > 0.4).double() * 0.5
    expected = -np.sum(w.numpy() * (f.numpy() - m.numpy()) ** 2) / np.sum(w.numpy())
    assert float(mse(f, m, mask=w)) == pytest.approx(expected, rel=1e-12)
    assert float(mse(f, m)) == pytest.approx(-np.mean((f.numpy() - m.numpy()) ** 2), rel=1e-12)
    assert float(mse(f, f)) == 0.0


def test_ncc_equals_numpy_weighted_pearson_averaged_over_channels(field):
    f = torch.cat([field((9, 10, 11), seed=1), field((9, 10, 11), seed=4)], dim=1)
    m = torch.cat([field((9, 10, 11), seed=2), field((9, 10, 11), seed=5) ** 2], dim=1)
    w = field((9, 10, 11), seed=3)
    fn, mn, wn = f.numpy()[0], m.numpy()[0], w.numpy()[0, 0]
    expected = np.mean([_weighted_pearson(fn[c], mn[c], wn) for c in range(2)])
    assert float(ncc(f, m, mask=w, eps=0.0)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("shape", [(12, 13), (8, 9, 10)])
@pytest.mark.parametrize("a, b", [(2.5, -3.0), (0.01, 100.0), (1e3, 0.5)])
def test_ncc_invariant_to_positive_linear_intensity_change(shape, a, b, field):
    f = field(shape, seed=1)
    m = field(shape, seed=2) ** 3
    w = (field(shape, seed=3) > 0.3).double()
    torch.testing.assert_close(ncc(f, a * m + b, mask=w, eps=0.0), ncc(f, m, mask=w, eps=0.0), rtol=1e-10, atol=0)
    torch.testing.assert_close(ncc(f, -a * m + b, mask=w, eps=0.0), -ncc(f, m, mask=w, eps=0.0), rtol=1e-10, atol=0)


def test_ncc_of_linear_copy_is_one_and_of_constant_is_zero(field):
    f = field((10, 10), seed=1)
    torch.testing.assert_close(ncc(f, 3 * f + 1), torch.ones(1, dtype=f.dtype))
    assert float(ncc(f, torch.full_like(f, 2.0))) == 0.0
