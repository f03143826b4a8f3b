"""MI and NMI: Parzen histogram against a direct NumPy evaluation, analytic cases, alignment, sampling."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from omnireg.similarity import joint_histogram, mi, nmi

mi_module = importlib.import_module("omnireg.similarity.mi")


def _bspline3(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return np.where(ax < 1, 2 / 3 - ax**2 + ax**3 / 2, np.where(ax < 2, (2 - ax) ** 3 / 6, 0.0))


def _reference_histogram(f, m, w, bins, frange, mrange):
    """Dense Parzen weights by direct evaluation of the cubic B-spline at every bin centre."""

    def coords(x, lo, hi):
        return np.clip(1 + (x - lo) / (hi - lo) * (bins - 3), 1, bins - 2)

    centres = np.arange(bins)[None, :]
    wf = _bspline3(coords(f.ravel(), *frange)[:, None] - centres)
    wm = _bspline3(coords(m.ravel(), *mrange)[:, None] - centres)
    h = wf.T @ (w.ravel()[:, None] * wm)
    return h / h.sum()


def _mi_from(p: np.ndarray) -> tuple[float, float]:
    pf, pm = p.sum(1), p.sum(0)

    def ent(x):
        x = x[x > 0]
        return -np.sum(x * np.log(x))

    hf, hm, hfm = ent(pf), ent(pm), ent(p)
    return hf + hm - hfm, (hf + hm) / hfm


@pytest.mark.parametrize("shape", [(13, 14), (7, 8, 9)])
def test_parzen_histogram_and_mi_equal_direct_numpy_evaluation(shape, field):
    f = field(shape, seed=1)
    m = torch.sin(5 * field(shape, seed=2)) + 0.3 * f
    w = 0.1 + field(shape, seed=3)
    frange, mrange = (0.1, 0.9), (-0.2, 1.1)  # some values fall outside and are clamped
    opts = dict(bins=10, fixed_range=frange, moving_range=mrange)
    p = joint_histogram(f, m, mask=w, **opts)[0, 0].numpy()
    ref = _reference_histogram(f.numpy(), m.numpy(), w.numpy(), 10, frange, mrange)
    np.testing.assert_allclose(p, ref, rtol=1e-10, atol=1e-14)
    ref_mi, ref_nmi = _mi_from(ref)
    assert float(mi(f, m, mask=w, **opts)) == pytest.approx(ref_mi, rel=1e-10)
    assert float(nmi(f, m, mask=w, **opts)) == pytest.approx(ref_nmi, rel=1e-10)


def test_box_windows_give_the_plain_joint_histogram(field):
    f = field((20, 21), seed=1)
    m = field((20, 21), seed=2)
    p = joint_histogram(f, m, bins=8, fixed_window="box", moving_window="box", fixed_range=(0, 1), moving_range=(0, 1))
    ref, _, _ = np.histogram2d(f.numpy().ravel(), m.numpy().ravel(), bins=8, range=[[0, 1], [0, 1]])
    np.testing.assert_allclose(p[0, 0].numpy(), ref / ref.sum(), atol=1e-15)


def test_box_window_mi_of_identical_images_is_the_entropy_and_nmi_is_two(field):
    f = field((16, 16), seed=1)
    opts = dict(bins=12, fixed_window="box", moving_window="box")
    p = joint_histogram(f, f, **opts)[0, 0]
    pf = p.sum(1)
    entropy = -(pf[pf > 0] * pf[pf > 0].log()).sum()
    torch.testing.assert_close(mi(f, f, **opts)[0], entropy)
    torch.testing.assert_close(nmi(f, f, **opts), torch.full((1,), 2.0, dtype=f.dtype))


def test_automatic_range_is_min_max_for_quantile_zero_and_ignores_masked_voxels(field):
    f = field((12, 12), seed=1)
    m = field((12, 12), seed=2)
    w = torch.ones_like(f)
    w[..., :3, :] = 0
    fs, ms = f[..., 3:, :], m[..., 3:, :]
    auto = mi(f, m, mask=w, robust_quantile=0.0, bins=10)
    given = mi(
        f, m, mask=w, bins=10,
        fixed_range=(float(fs.min()), float(fs.max())), moving_range=(float(ms.min()), float(ms.max())),
    )
    torch.testing.assert_close(auto, given)


def test_histogram_rows_sum_to_one_per_item_and_channel(field):
    f = torch.cat([field((9, 9), seed=1), field((9, 9), seed=2)], dim=1).expand(3, -1, -1, -1)
    m = torch.cat([field((9, 9), seed=3), field((9, 9), seed=4)], dim=1).expand(3, -1, -1, -1)
    p = joint_histogram(f, m, bins=7)
    assert p.shape == (3, 2, 7, 7) and (p >= 0).all()
    torch.testing.assert_close(p.sum(dim=(2, 3)), torch.ones(3, 2, dtype=f.dtype))


@pytest.mark.parametrize("shape", [(24, 24), (14, 14, 14)])
@pytest.mark.parametrize("measure", [mi, nmi])
def test_maximal_at_alignment_for_a_non_monotone_remapping(shape, measure, crops, shifts):
    fixed, moved = crops(shape, [(0,) * len(shape)] + shifts(len(shape)), seed=7)

    def remap(x):  # non-monotone: folds the intensity range twice
        return torch.cos(3 * torch.pi * x)

    aligned = measure(fixed, remap(moved[0]), bins=16)
    for s, m in zip(shifts(len(shape)), moved[1:]):
        assert aligned > measure(fixed, remap(m), bins=16), f"shift {s}"


def test_chunked_histogram_and_gradient_do_not_depend_on_chunk_size(field, monkeypatch):
    f = field((10, 11), seed=1)
    m = (field((10, 11), seed=2) + f).requires_grad_(True)
    w = (0.5 + field((10, 11), seed=3)).requires_grad_(True)
    v1 = nmi(f, m, mask=w, bins=9)
    g1 = torch.autograd.grad(v1.sum(), (m, w))
    monkeypatch.setattr(mi_module, "_CHUNK_ELEMENTS", 50)  # 5 samples per chunk
    v2 = nmi(f, m, mask=w, bins=9)
    g2 = torch.autograd.grad(v2.sum(), (m, w))
    torch.testing.assert_close(v1, v2)
    torch.testing.assert_close(g1, g2)


def test_gradcheck_with_box_fixed_window_and_given_ranges(field):
    f = field((6, 7), seed=1)
    m = (field((6, 7), seed=2) + 0.5 * f).requires_grad_(True)
    opts = dict(bins=8, fixed_window="box", fixed_range=(0.0, 1.0), moving_range=(0.0, 1.5))
    assert torch.autograd.gradcheck(lambda x: mi(f, x, **opts), (m,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(lambda x: nmi(f, x, **opts), (m,), eps=1e-6, atol=1e-6)


def test_random_sampling_is_reproducible_with_a_generator(field):
    f = field((20, 20), seed=1)
    m = field((20, 20), seed=2) + f
    a = mi(f, m, sampling=0.3, generator=torch.Generator().manual_seed(5))
    b = mi(f, m, sampling=0.3, generator=torch.Generator().manual_seed(5))
    c = mi(f, m, sampling=0.3, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(mi(f, m, sampling=1.0), mi(f, m))
    with pytest.raises(ValueError, match="sampling"):
        mi(f, m, sampling=1.5)


def test_mi_of_independent_images_is_small(field):
    g = torch.Generator().manual_seed(0)
    f = torch.rand(1, 1, 64, 64, generator=g, dtype=torch.float64)
    m = torch.rand(1, 1, 64, 64, generator=g, dtype=torch.float64)
    assert float(mi(f, m, bins=8)) < 0.02 < float(mi(f, f, bins=8))
