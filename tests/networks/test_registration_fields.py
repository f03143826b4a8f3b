"""Voxel-unit field operations of the registration networks: warp, compose, scaling and squaring, resize, padding."""

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy import ndimage

from omnireg.networks.registration import (
    compose_displacements,
    crop_to_shape,
    identity_voxel_points,
    integrate_velocity_voxels,
    pad_to_multiple,
    resize_displacement,
    warp_voxels,
)


def smooth_field(shape, amplitude, *, seed, sigma=3.0, batch=1):
    """A smooth random voxel field (N, D, *S), float64, max |component| = amplitude."""
    rng = np.random.default_rng(seed)
    d = len(shape)
    out = np.stack([[ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap") for _ in range(d)] for _ in range(batch)])
    return torch.from_numpy(out * (amplitude / np.abs(out).max()))


def interior(x, margin):
    """x (N, C, *S) without ``margin`` voxels at each side."""
    return x[(slice(None), slice(None)) + tuple(slice(margin, s - margin) for s in x.shape[2:])]


# ---------------------------------------------------------------------------- warp
@pytest.mark.parametrize("shape", [(13, 17), (9, 11, 10)])
def test_warp_voxels_agrees_with_scipy_map_coordinates_order_1(shape):
    rng = np.random.default_rng(0)
    image = rng.standard_normal(shape)
    u = smooth_field(shape, 4.0, seed=1, sigma=2.0)
    grid = identity_voxel_points(shape, dtype=torch.float64)[0].movedim(-1, 0).numpy()
    coords = grid + u[0].numpy()
    # border padding = scipy's "nearest" extension, everywhere (points leave the image here)
    ours = warp_voxels(torch.from_numpy(image)[None, None], u, padding="border")[0, 0].numpy()
    ref = ndimage.map_coordinates(image, coords, order=1, mode="nearest")
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    # zero padding agrees with scipy's constant 0 wherever the points stay inside the image
    ours0 = warp_voxels(torch.from_numpy(image)[None, None], u, padding="zeros")[0, 0].numpy()
    inside = np.all([(coords[a] >= 0) & (coords[a] <= shape[a] - 1) for a in range(len(shape))], axis=0)
    ref0 = ndimage.map_coordinates(image, coords, order=1, mode="constant", cval=0.0)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(ours0[inside], ref0[inside], atol=1e-10)


def test_warp_voxels_pulls_a_translation_and_keeps_label_dtype():
    image = torch.arange(8.0, dtype=torch.float64).view(1, 1, 8, 1).expand(1, 1, 8, 3).contiguous()
    u = torch.zeros(1, 2, 8, 3, dtype=torch.float64)
    u[:, 0] = 2.0  # fixed voxel i looks at moving voxel i + 2
    out = warp_voxels(image, u)
    assert out[0, 0, :6, 1].tolist() == pytest.approx([2.0, 3.0, 4.0, 5.0, 6.0, 7.0], abs=1e-12)
    assert out[0, 0, 7, 1] == 0.0  # moving voxel 9 lies beyond the image
    labels = torch.arange(8, dtype=torch.int64).view(1, 1, 8, 1).expand(1, 1, 8, 3)
    out = warp_voxels(labels, u + 0.3)
    assert out.dtype == torch.int64 and out[0, 0, :6, 0].tolist() == [2, 3, 4, 5, 6, 7]


def test_warp_voxels_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="image: expected spatial shape"):
        warp_voxels(torch.zeros(1, 1, 5, 6), torch.zeros(1, 2, 5, 7))
    with pytest.raises(ValueError, match="displacement: expected a voxel displacement"):
        warp_voxels(torch.zeros(1, 1, 5, 6), torch.zeros(1, 3, 5, 6))
    with pytest.raises(ValueError, match="padding"):
        warp_voxels(torch.zeros(1, 1, 5, 6), torch.zeros(1, 2, 5, 6), padding="reflect")


# ---------------------------------------------------------------------------- compose
def test_warping_by_a_composition_equals_warping_twice():
    shape = (40, 44)
    image = torch.from_numpy(ndimage.gaussian_filter(np.random.default_rng(3).standard_normal(shape), 3.0))[None, None]
    a = smooth_field(shape, 2.0, seed=4, sigma=5.0)
    b = smooth_field(shape, 2.0, seed=5, sigma=5.0)
    once = warp_voxels(image, compose_displacements(a, b))
    twice = warp_voxels(warp_voxels(image, a), b)  # warping by a, then warping that by b
    err = (interior(once, 6) - interior(twice, 6)).abs().max()
    assert err < 0.02 * image.abs().max(), err


def test_composing_translations_adds_them_exactly_even_across_the_border():
    a = torch.zeros(1, 3, 10, 11, 12, dtype=torch.float64)
    b = torch.zeros_like(a)
    a[:, 0], a[:, 2] = 1.25, -0.5
    b[:, 1] = 2.5  # x + u_b leaves the grid on the last three j-planes: a is extended by its border values
    torch.testing.assert_close(compose_displacements(a, b), a + b, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------- scaling and squaring
@pytest.mark.parametrize("steps", [0, 3, 7])
def test_constant_velocity_integrates_to_the_same_translation_everywhere(steps):
    v = torch.zeros(2, 2, 20, 24, dtype=torch.float64)
    v[0, 0], v[0, 1], v[1, 0], v[1, 1] = 1.5, -0.75, -2.0, 0.25
    u = integrate_velocity_voxels(v, steps=steps)  # the border-extended velocity is the same constant
    torch.testing.assert_close(u, v, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(31, 29), (17, 19, 15)])
def test_linear_velocity_integrates_to_the_matrix_exponential(shape):
    d = len(shape)
    rng = np.random.default_rng(7)
    a = rng.standard_normal((d, d)) * 0.12
    centre = (np.asarray(shape) - 1) / 2.0
    x = identity_voxel_points(shape, dtype=torch.float64)[0].numpy() - centre  # (*S, D)
    v = torch.from_numpy(np.moveaxis(x @ a.T, -1, 0))[None]
    steps = 10
    u = integrate_velocity_voxels(v, steps=steps)[0].movedim(0, -1).numpy()
    # exact for linear interpolation of a linear field: (I + A / 2^s)^(2^s) x - x, away from the border
    ss = np.linalg.matrix_power(np.eye(d) + a / 2**steps, 2**steps)
    r = 5
    inner = np.linalg.norm(x, axis=-1) < min(shape) / 2 - r
    np.testing.assert_allclose(u[inner], (x @ (ss - np.eye(d)).T)[inner], atol=1e-9)
    # and close to exp(A) x
    ref = x @ (scipy.linalg.expm(a) - np.eye(d)).T
    np.testing.assert_allclose(u[inner], ref[inner], atol=2e-3)


def test_scaling_and_squaring_equals_composing_two_half_velocity_flows():
    v = smooth_field((24, 26, 22), 3.0, seed=11, sigma=3.0)
    steps = 7
    half = integrate_velocity_voxels(v / 2, steps=steps - 1)
    full = integrate_velocity_voxels(v, steps=steps)
    # the last squaring of exp(v) is exactly compose(u, u) with u = exp(v / 2) after steps - 1 squarings,
    # wherever x + u(x) stays on the grid (beyond it, exp(v/2) was integrated on the extended velocity)
    torch.testing.assert_close(interior(full, 4), interior(compose_displacements(half, half), 4), rtol=0, atol=1e-10)
    # and near the border the two differ by interpolation only
    assert (full - compose_displacements(half, half)).abs().max() < 0.05
    # more squarings converge to the same flow
    assert (interior(integrate_velocity_voxels(v, steps=steps + 3), 4) - interior(full, 4)).abs().max() < 0.02


def test_a_velocity_pointing_out_of_the_grid_does_not_fold_at_the_border():
    # v_i = 3 + 0.2 i along i: the flow leaves the grid at the high end. Cut to zero half a voxel beyond
    # the grid (ITK's rule for dense fields), the border voxels stop while the ones behind catch up and the
    # map folds (det -0.48); extended by its border value, exp(v) has det > 1 everywhere.
    i = torch.arange(16, dtype=torch.float64)
    v = torch.zeros(1, 2, 16, 6, dtype=torch.float64)
    v[:, 0] = (3 + 0.2 * i).view(16, 1)
    u = integrate_velocity_voxels(v, steps=7)
    det = 1 + torch.gradient(u[0, 0], dim=0)[0]
    assert det.min() > 1.0
    # analytic flow of dx/dt = 3 + 0.2 x for the points that stay inside: x(1) = (x0 + 15) e^0.2 - 15
    expected = (i + 15) * np.exp(0.2) - 15 - i
    torch.testing.assert_close(u[0, 0, :9, 0], expected[:9], rtol=0, atol=1e-2)
    torch.testing.assert_close(u[0, 1], torch.zeros(16, 6, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(40, 36), (20, 22, 18)])
def test_inverse_from_negative_velocity_round_trips_within_a_tenth_of_a_voxel(shape):
    v = smooth_field(shape, 4.0, seed=13, sigma=4.0)
    fwd = integrate_velocity_voxels(v, steps=7)
    inv = integrate_velocity_voxels(-v, steps=7)
    assert fwd.abs().max() > 2.0
    for err in (compose_displacements(inv, fwd), compose_displacements(fwd, inv)):
        assert interior(err, 5).norm(dim=1).max() < 0.1


def test_integration_rejects_a_bad_number_of_steps():
    with pytest.raises(ValueError, match="steps"):
        integrate_velocity_voxels(torch.zeros(1, 2, 4, 4), steps=-1)


# ---------------------------------------------------------------------------- resize, padding
def test_upsampling_a_half_resolution_field_doubles_the_vectors_and_keeps_the_map():
    half = (10, 12, 9)
    rng = np.random.default_rng(17)
    b = rng.standard_normal((3, 3)) * 0.1
    t = rng.standard_normal(3)
    q = identity_voxel_points(half, dtype=torch.float64)[0].numpy()
    u_half = torch.from_numpy(np.moveaxis(q @ b.T + t, -1, 0))[None]
    full = tuple(2 * s for s in half)
    u_full = resize_displacement(u_half, full)[0].movedim(0, -1).numpy()
    p = identity_voxel_points(full, dtype=torch.float64)[0].numpy()
    # full voxel p is half voxel q = (p + 1/2) / 2 - 1/2; the map p -> p + u_full(p) must be
    # 2 (q + u_half(q)) + 1/2 in full voxels, i.e. u_full = 2 u_half(q)
    qp = (p + 0.5) / 2 - 0.5
    expected = 2 * (qp @ b.T + t)
    inner = (slice(1, -1),) * 3
    np.testing.assert_allclose(u_full[inner], expected[inner], atol=1e-12)
    const = torch.full((1, 2, 5, 7), 1.5, dtype=torch.float64)
    up = resize_displacement(const, (10, 21))
    torch.testing.assert_close(up[:, 0], torch.full((1, 10, 21), 3.0, dtype=torch.float64))
    torch.testing.assert_close(up[:, 1], torch.full((1, 10, 21), 4.5, dtype=torch.float64))


def test_downsampling_by_two_averages_pairs_and_halves_the_vectors():
    u = torch.randn(1, 2, 8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    down = resize_displacement(u, (4, 3))
    pooled = torch.nn.functional.avg_pool2d(u, 2)
    torch.testing.assert_close(down, pooled / 2, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(13, 9), (7, 16, 11)])
def test_padding_to_a_multiple_keeps_voxel_indices_and_crop_undoes_it(shape):
    x = torch.randn(2, 3, *shape)
    padded, original = pad_to_multiple(x, 8)
    assert original == shape and all(s % 8 == 0 and s - o < 8 for s, o in zip(padded.shape[2:], shape))
    assert torch.equal(crop_to_shape(padded, original), x)
    assert float(padded.abs().sum()) == pytest.approx(float(x.abs().sum()))
    same, _ = pad_to_multiple(padded, 8)
    assert same is padded


# ---------------------------------------------------------------------------- gradients
def test_gradcheck_of_warp_compose_and_integration_in_float64():
    g = torch.Generator().manual_seed(21)
    image = torch.randn(1, 2, 5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    u = (0.3 + 0.4 * torch.rand(1, 2, 5, 6, dtype=torch.float64, generator=g)).requires_grad_()
    assert torch.autograd.gradcheck(lambda i, d: warp_voxels(i, d), (image, u))
    b = (0.2 * torch.rand(1, 2, 5, 6, dtype=torch.float64, generator=g) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(compose_displacements, (u, b))
    v = (0.5 * torch.randn(1, 3, 4, 5, 3, dtype=torch.float64, generator=g)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: integrate_velocity_voxels(x, steps=3), (v,))
    assert torch.autograd.gradcheck(lambda x: resize_displacement(x, (8, 10, 6)), (v,))
