"""LC2 (dense and patch forms): exact linear combinations, NumPy least squares per patch, invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnireg.similarity import lc2, lc2_patch


def _grad_norm(x: np.ndarray, spacing) -> np.ndarray:
    return np.linalg.norm(np.stack(np.gradient(x, *spacing, edge_order=1)), axis=0)


def _combination(f: torch.Tensor, spacing, a=2.0, b=-3.0, c=0.7) -> torch.Tensor:
    """``a f + b |grad f| + c`` with the gradient from numpy.gradient (independent of the library)."""
    fn = f.numpy()
    g = np.stack([[_grad_norm(fn[n, 0], spacing)] for n in range(fn.shape[0])])
    return a * f + b * torch.from_numpy(g) + c


@pytest.mark.parametrize("shape, spacing", [((16, 17), (1.0, 2.0)), ((10, 11, 12), (1.5, 1.0, 0.8))])
def test_dense_lc2_is_one_for_an_exact_linear_combination(shape, spacing, field):
    f = field(shape, seed=1)
    m = _combination(f, spacing)
    assert float(lc2(f, m, spacing=spacing, radius=2, alpha=1e-9)) == pytest.approx(1.0, abs=1e-9)
    # the default ridge costs at most ~alpha^2 relative
    assert float(lc2(f, m, spacing=spacing, radius=2)) == pytest.approx(1.0, abs=1e-5)
    # unrelated fine structure is not explained
    noise = torch.rand(f.shape, generator=torch.Generator().manual_seed(2), dtype=f.dtype)
    assert float(lc2(f, m + noise, spacing=spacing, radius=2)) < 0.8


def test_dense_lc2_is_one_with_a_mask(field):
    f = field((16, 16), seed=1)
    m = _combination(f, (1.0, 1.0))
    w = (field((16, 16), seed=3) > 0.35).double()
    corrupted = torch.where(w > 0, m, torch.full_like(m, 40.0))
    assert float(lc2(f, corrupted, mask=w, radius=2, alpha=1e-9)) == pytest.approx(1.0, abs=1e-9)


def test_dense_lc2_invariant_to_linear_moving_intensity_change_and_bounded(field):
    f = field((14, 15), seed=1)
    m = field((14, 15), seed=2) + f**2
    ref = lc2(f, m, radius=2)
    torch.testing.assert_close(lc2(f, -2.0 * m + 5.0, radius=2), ref, rtol=1e-10, atol=0)
    torch.testing.assert_close(lc2(3.0 * f - 1.0, m, radius=2), ref, rtol=1e-10, atol=0)
    assert 0.0 <= float(ref) <= 1.0
    assert float(lc2(f, torch.full_like(m, 3.0), radius=2)) == 0.0


def _reference_patch(f, m, radii, alpha, beta):
    """Per patch and radius: 3-column ridge least squares with numpy, unpenalised intercept."""
    out = []
    d = f.ndim - 2
    for n in range(f.shape[0]):
        fn, mn = f[n, 0], m[n, 0]
        g = _grad_norm(fn, (1.0,) * d)
        scores = []
        for r in radii:
            sl = tuple(slice(s // 2 - r, s // 2 + r + 1) for s in fn.shape)
            x = np.stack([fn[sl].ravel(), g[sl].ravel(), np.ones(fn[sl].size)], axis=1)
            y = mn[sl].ravel()
            k = len(y)
            ridge = alpha * 0.5 * (np.var(x[:, 0]) + np.var(x[:, 1]))
            beta_hat = np.linalg.solve(x.T @ x / k + np.diag([ridge, ridge, 0.0]), x.T @ y / k)
            res = np.mean((y - x @ beta_hat) ** 2)
            var = np.var(y)
            scores.append(np.clip((var - res) / max(var, beta), 0.0, 1.0))
        out.append(np.mean(scores))
    return np.array(out)


@pytest.mark.parametrize("size, radii", [((15, 15), (3, 5, 7)), ((9, 10, 11), (2, 4))])
def test_lc2_patch_equals_numpy_least_squares_per_patch(size, radii):
    g = torch.Generator().manual_seed(0)
    n = 6
    f = torch.rand((n, 1, *size), generator=g, dtype=torch.float64)
    noise = torch.rand((n, 1, *size), generator=g, dtype=torch.float64)
    levels = torch.linspace(0.0, 1.0, n, dtype=torch.float64).view(n, 1, *([1] * len(size)))
    m = (1 - levels) * f**2 + levels * noise  # from well explained to pure noise
    m[0] = 0.5  # a flat moving patch: score 0
    m[1] = 0.5 + 0.001 * noise[1]  # variance below beta
    out = lc2_patch(f, m, radii=radii, alpha=1e-3, beta=1e-2)
    ref = _reference_patch(f.numpy(), m.numpy(), radii, 1e-3, 1e-2)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-9, atol=1e-12)
    assert float(out[0]) == 0.0 and float(out[1]) < 0.01


@pytest.mark.parametrize("size", [(15, 15), (11, 11, 11)])
def test_lc2_patch_is_one_for_an_exact_linear_combination(size, field):
    f = torch.cat([field(size, seed=s) for s in range(3)])
    m = _combination(f, (1.0,) * len(size), a=-1.5, b=4.0, c=2.0)
    out = lc2_patch(f, m, radii=(2, 3, 5), alpha=1e-9, beta=1e-12)  # beta: no variance floor here
    torch.testing.assert_close(out, torch.ones(3, dtype=f.dtype), atol=1e-8, rtol=0)


def test_lc2_patch_batch_equals_single_and_validates_radii(field):
    f = torch.cat([field((15, 15), seed=s) for s in range(4)])
    m = torch.cat([field((15, 15), seed=10 + s) for s in range(4)]) + f
    batch = lc2_patch(f, m)
    single = torch.cat([lc2_patch(f[i : i + 1], m[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, single, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="radii: window radius 8"):
        lc2_patch(f, m, radii=(3, 8))
    with pytest.raises(ValueError, match="radii"):
        lc2_patch(f, m, radii=(0,))
    with pytest.raises(ValueError, match="beta"):
        lc2_patch(f, m, beta=0.0)


def test_lc2_patch_gradcheck():
    g = torch.Generator().manual_seed(1)
    f = torch.rand(3, 1, 7, 7, generator=g, dtype=torch.float64, requires_grad=True)
    m = (f.detach() ** 2 + 0.5 * torch.rand(3, 1, 7, 7, generator=g, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: lc2_patch(a, b, radii=(2, 3), beta=1e-3), (f, m), atol=1e-6)


@pytest.mark.parametrize("ndim", [2, 3])
def test_lc2_patch_map_equals_lc2_patch_of_the_patches_centred_at_each_interior_voxel(ndim):
    from omnireg.similarity import lc2_patch_map

    g = torch.Generator().manual_seed(ndim)
    size = (24,) * ndim
    f = torch.rand(1, 1, *size, generator=g, dtype=torch.float64)
    m = 0.5 * f ** 2 + 0.3 * torch.rand(1, 1, *size, generator=g, dtype=torch.float64)
    radii, sp = (2, 3, 5), [2.0] * ndim
    out = lc2_patch_map(f, m, radii=radii, spacing=sp)
    assert out.shape == f.shape
    for c in [(6,) * ndim, (12,) * ndim, (17, 6, 11)[:ndim]]:  # 6 = max radius + 1 from the low border
        sl = tuple(slice(x - 6, x + 7) for x in c)
        ref = lc2_patch(f[(slice(None), slice(None)) + sl], m[(slice(None), slice(None)) + sl], radii=radii, spacing=sp)
        torch.testing.assert_close(out[(0, 0) + c], ref[0], atol=1e-12, rtol=0)
