"""Local NCC: agreement with a scipy.ndimage reference, windows in mm vs voxels, invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from omnireg.similarity import lncc


def _reference(f: np.ndarray, m: np.ndarray, w: np.ndarray, size, eps: float) -> float:
    """Direct computation: box means over the window, zeros outside, weighted by w; global standardisation."""

    def standardize(x):
        mu = np.sum(w * x) / np.sum(w)
        sd = np.sqrt(np.sum(w * (x - mu) ** 2) / np.sum(w))
        return (x - mu) / sd

    f, m = standardize(f), standardize(m)

    def box(x):
        return ndimage.uniform_filter(x, size=size, mode="constant", cval=0.0)

    sw = box(w)
    mf, mm = box(w * f) / sw, box(w * m) / sw
    var_f = box(w * f * f) / sw - mf**2
    var_m = box(w * m * m) / sw - mm**2
    cov = box(w * f * m) / sw - mf * mm
    local = cov**2 / (var_f * var_m + eps)
    return float(np.sum(w * local) / np.sum(w))


@pytest.mark.parametrize("shape, window", [((14, 15), (5, 3)), ((10, 11, 12), (3, 5, 3))])
def test_lncc_equals_scipy_box_filter_reference(shape, window, field):
    f = field(shape, seed=1)
    m = (field(shape, seed=2) + f) ** 2
    w = 0.2 + (field(shape, seed=3) > 0.4).double()
    out = lncc(f, m, mask=w, window=window, eps=1e-5)
    ref = _reference(f.numpy()[0, 0], m.numpy()[0, 0], w.numpy()[0, 0], window, 1e-5)
    assert float(out) == pytest.approx(ref, rel=1e-9)


def test_window_in_mm_equals_window_in_voxels_on_anisotropic_spacing(field):
    f = field((16, 14), seed=1)
    m = field((16, 14), seed=2) + 0.5 * f
    spacing = (1.0, 3.0)
    in_mm = lncc(f, m, spacing=spacing, window=9.0, window_unit="mm")
    torch.testing.assert_close(in_mm, lncc(f, m, window=(9, 3), window_unit="voxel"))
    assert not torch.allclose(in_mm, lncc(f, m, window=9, window_unit="voxel"))
    # 3D, box widths rounded to the nearest odd voxel count: 4 mm / (2, 1, 0.5) mm -> (2, 4, 8) -> (3, 5, 9)
    f3 = field((10, 11, 12), seed=3)
    m3 = field((10, 11, 12), seed=4) + f3
    torch.testing.assert_close(
        lncc(f3, m3, spacing=(2.0, 1.0, 0.5), window=4.0, window_unit="mm"), lncc(f3, m3, window=(3, 5, 9))
    )
    # Gaussian: the FWHM in voxels is not rounded
    torch.testing.assert_close(
        lncc(f3, m3, spacing=(2.0, 1.0, 0.5), window=4.0, window_unit="mm", kernel="gaussian"),
        lncc(f3, m3, window=(2.0, 4.0, 8.0), kernel="gaussian"),
    )


@pytest.mark.parametrize("kernel", ["box", "gaussian"])
def test_lncc_is_one_for_linear_copies_of_either_sign(kernel, field):
    f = field((12, 12, 12), seed=1)
    for a, b in [(2.0, 1.0), (-0.5, 3.0)]:
        torch.testing.assert_close(lncc(f, a * f + b, kernel=kernel, window=5, eps=0.0), torch.ones(1, dtype=f.dtype))


def test_lncc_invariant_to_linear_intensity_change(field):
    f = field((14, 14), seed=1)
    m = field((14, 14), seed=2) ** 2
    torch.testing.assert_close(lncc(f, 40.0 * m - 7.0, window=5), lncc(f, m, window=5), rtol=1e-9, atol=1e-12)


def test_lncc_float32_with_large_intensity_offset_stays_accurate(field):
    f = field((20, 20), seed=1)
    m = field((20, 20), seed=2) + f
    ref = lncc(f, m, window=7)
    f32 = (1000.0 + 300.0 * f).float()
    m32 = (-2000.0 + 50.0 * m).float()
    assert float(lncc(f32, m32, window=7)) == pytest.approx(float(ref), abs=1e-4)
