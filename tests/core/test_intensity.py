"""robust_normalize: the quantiles are numpy's, inside the mask, with the constant-image fallback."""

import numpy as np
import torch

from omnireg.core.intensity import robust_normalize


def test_quantiles_match_numpy_inside_the_mask():
    g = torch.Generator().manual_seed(0)
    x = torch.randn((1, 2, 17, 19, 23), generator=g, dtype=torch.float64) ** 3
    mask = (torch.rand((1, 1, 17, 19, 23), generator=g) > 0.3).double()
    out = robust_normalize(x, mask, quantiles=(0.01, 0.98))
    vals = x[:, :1][mask > 0].numpy().astype(np.float32)
    lo, hi = np.quantile(vals, [0.01, 0.98])
    np.testing.assert_allclose(out.numpy(), (x.float().numpy() - lo) / (hi - lo), rtol=1e-5, atol=1e-5)
    assert out.dtype == torch.float32 and out.shape == x.shape


def test_constant_image_keeps_a_unit_scale():
    x = torch.full((1, 1, 4, 5), 3.0)
    np.testing.assert_array_equal(robust_normalize(x).numpy(), np.zeros((1, 1, 4, 5), np.float32))
