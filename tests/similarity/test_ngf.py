"""NGF: NumPy reference with numpy.gradient, contrast inversion, edge parameter modes, spacing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnireg.similarity import ngf


def _reference(f: np.ndarray, m: np.ndarray, w: np.ndarray, spacing, eps: float) -> float:
    gf = np.stack(np.gradient(f, *spacing, edge_order=1))
    gm = np.stack(np.gradient(m, *spacing, edge_order=1))
    dot = np.sum(gf * gm, axis=0)
    local = dot**2 / ((np.sum(gf**2, axis=0) + eps**2) * (np.sum(gm**2, axis=0) + eps**2))
    return float(np.sum(w * local) / np.sum(w))


@pytest.mark.parametrize("shape, spacing", [((13, 14), (1.0, 2.5)), ((8, 9, 10), (0.7, 1.0, 2.0))])
def test_ngf_equals_numpy_gradient_reference(shape, spacing, field):
    f = field(shape, seed=1)
    m = field(shape, seed=2) + f**2
    w = 0.3 + field(shape, seed=3)
    out = ngf(f, m, mask=w, spacing=spacing, eps=0.05, eps_mode="absolute")
    ref = _reference(f.numpy()[0, 0], m.numpy()[0, 0], w.numpy()[0, 0], spacing, 0.05)
    assert float(out) == pytest.approx(ref, rel=1e-10)


def test_relative_eps_is_a_fraction_of_the_mean_gradient_norm(field):
    f = field((12, 12), seed=1)
    m = field((12, 12), seed=2)
    norm_f = np.linalg.norm(np.stack(np.gradient(f.numpy()[0, 0])), axis=0).mean()
    norm_m = np.linalg.norm(np.stack(np.gradient(m.numpy()[0, 0])), axis=0).mean()
    gf = np.stack(np.gradient(f.numpy()[0, 0]))
    gm = np.stack(np.gradient(m.numpy()[0, 0]))
    dot = np.sum(gf * gm, axis=0)
    ef, em = 0.2 * norm_f, 0.2 * norm_m
    ref = np.mean(dot**2 / ((np.sum(gf**2, 0) + ef**2) * (np.sum(gm**2, 0) + em**2)))
    assert float(ngf(f, m, eps=0.2, eps_mode="relative")) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("shape", [(14, 15), (9, 10, 11)])
@pytest.mark.parametrize("eps_mode", ["absolute", "relative"])
def test_ngf_is_equal_for_a_contrast_inverted_moving_image(shape, eps_mode, field):
    f = field(shape, seed=1)
    m = field(shape, seed=2) + 0.5 * f
    torch.testing.assert_close(ngf(f, 1.0 - m, eps_mode=eps_mode), ngf(f, m, eps_mode=eps_mode), rtol=1e-12, atol=0)
    torch.testing.assert_close(ngf(f, 1.0 - f, eps_mode=eps_mode), ngf(f, f, eps_mode=eps_mode), rtol=1e-12, atol=0)


def test_relative_eps_makes_ngf_invariant_to_intensity_scale(field):
    f = field((14, 14), seed=1)
    m = field((14, 14), seed=2) + f
    torch.testing.assert_close(ngf(f, -30.0 * m + 4.0), ngf(f, m), rtol=1e-10, atol=0)
    # the absolute edge parameter is not: a small contrast falls under eps
    assert float(ngf(f, 0.01 * m, eps=0.1, eps_mode="absolute")) < 0.5 * float(ngf(f, m, eps=0.1, eps_mode="absolute"))


def test_spacing_changes_gradient_directions(field):
    f = field((14, 14), seed=1)
    m = field((14, 14), seed=2) + f
    assert not torch.allclose(ngf(f, m, spacing=(1.0, 4.0)), ngf(f, m))
