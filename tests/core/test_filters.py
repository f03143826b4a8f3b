"""omnireg.core.filters: the one separable filter, against scipy.ndimage, with float64 gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from omnireg.core.filters import filter_of_ones, gaussian_blur, gaussian_kernel1d, separable_filter


def _kernels(d: int) -> list[torch.Tensor]:
    return [gaussian_kernel1d(s, dtype=torch.float64) for s in (0.8, 1.7, 0.5)[:d]]


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize(("padding", "mode"), [("zeros", "constant"), ("border", "nearest")])
def test_separable_filter_agrees_with_scipy_correlate(d, padding, mode):
    rng = np.random.default_rng(d)
    x = rng.normal(size=(2, 3, *(7, 3, 6)[:d]))  # an axis shorter than the kernel radius
    kernels = _kernels(d)
    expected = x.copy()
    for axis, k in enumerate(kernels):
        expected = ndimage.correlate1d(expected, k.numpy(), axis=2 + axis, mode=mode, cval=0.0)
    out = separable_filter(torch.from_numpy(x), kernels, padding=padding)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_separable_filter_gradcheck_in_float64(padding):
    x = torch.rand(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    kernels = [gaussian_kernel1d(1.0, dtype=torch.float64), None]
    assert torch.autograd.gradcheck(lambda t: separable_filter(t, kernels, padding=padding), (x,))
    assert torch.autograd.gradgradcheck(lambda t: separable_filter(t, kernels, padding=padding), (x,))


def test_filter_of_ones_is_the_zero_padded_filter_of_an_all_ones_image():
    kernels = [torch.full((5,), 0.2, dtype=torch.float64), gaussian_kernel1d(1.3, dtype=torch.float64)]
    ones = torch.ones(1, 1, 6, 9, dtype=torch.float64)
    torch.testing.assert_close(filter_of_ones((6, 9), kernels, ones), separable_filter(ones, kernels), rtol=0, atol=1e-15)


def test_gaussian_blur_replicates_the_border_and_keeps_constants():
    x = torch.rand(1, 1, 9, 8, dtype=torch.float64)
    expected = ndimage.gaussian_filter(x[0, 0].numpy(), (1.2, 0.0), mode="nearest", truncate=3.0)
    np.testing.assert_allclose(gaussian_blur(x, [1.2, 0.0])[0, 0].numpy(), expected, atol=1e-12)
    c = torch.full((1, 2, 4, 5, 3), 2.5)
    torch.testing.assert_close(gaussian_blur(c, 2.0), c)


def test_separable_filter_errors_name_the_argument():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="kernels: expected 2 kernels"):
        separable_filter(x, [None])
    with pytest.raises(ValueError, match="kernels: expected odd-length symmetric"):
        separable_filter(x, [torch.tensor([0.2, 0.3, 0.5]), None])
    with pytest.raises(ValueError, match="padding: expected one of"):
        separable_filter(x, [None, None], padding="mirror")
