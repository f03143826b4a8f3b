"""MIND-SSC: NumPy/scipy reference, descriptor properties, intensity invariances, units."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage

from omnireg.similarity import mind, mind_ssc_descriptor


def _reference(img: np.ndarray, radius: int, dilation: int) -> np.ndarray:
    """Direct MIND-SSC: edge-padded neighbour shifts, box patch means with zeros outside, global clamp."""
    d = img.ndim
    padded = np.pad(img, dilation, mode="edge")

    def shifted(axis, sign):
        index = [slice(dilation, dilation + s) for s in img.shape]
        start = dilation + sign * dilation
        index[axis] = slice(start, start + img.shape[axis])
        return padded[tuple(index)]

    dist = []
    for a, b in itertools.combinations(range(d), 2):
        for sa, sb in itertools.product((-1, 1), repeat=2):
            sq = (shifted(a, sa) - shifted(b, sb)) ** 2
            dist.append(ndimage.uniform_filter(sq, size=2 * radius + 1, mode="constant", cval=0.0))
    dist = np.stack(dist)
    dist = dist - dist.min(0)
    var = dist.mean(0)
    mv = var.mean()
    var = np.clip(var, 1e-3 * mv, 1e3 * mv)
    return np.exp(-dist / var)


@pytest.mark.parametrize("shape", [(14, 15), (9, 10, 11)])
@pytest.mark.parametrize("radius, dilation", [(1, 2), (2, 1)])
def test_descriptor_equals_direct_numpy_computation(shape, radius, dilation, field):
    img = field(shape, seed=1) + 0.05 * torch.rand((1, 1, *shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = mind_ssc_descriptor(img, radius=radius, dilation=dilation)
    ref = _reference(img.numpy()[0, 0], radius, dilation)
    np.testing.assert_allclose(out.numpy()[0], ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("shape, channels", [((12, 13), 4), ((8, 9, 10), 12)])
def test_descriptor_shape_range_and_unit_maximum(shape, channels, field):
    img = torch.cat([field(shape, seed=1), field(shape, seed=2)], dim=1).expand(2, -1, *shape)
    desc = mind_ssc_descriptor(img)
    assert desc.shape == (2, 2 * channels, *shape)
    assert (desc > 0).all() and (desc <= 1).all()
    # D' = D - min_k D: the closest pair gives exp(0) = 1 at every voxel, per input channel
    per_channel = desc.reshape(2, 2, channels, *shape).amax(dim=2)
    torch.testing.assert_close(per_channel, torch.ones_like(per_channel))


@pytest.mark.parametrize("shape", [(16, 16), (10, 10, 10)])
@pytest.mark.parametrize("a, b", [(3.0, -2.0), (0.02, 50.0), (-1.0, 1.0)])
def test_descriptor_invariant_to_linear_intensity_change(shape, a, b, field):
    img = field(shape, seed=3)
    torch.testing.assert_close(mind_ssc_descriptor(a * img + b), mind_ssc_descriptor(img), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("shape", [(24, 24), (14, 14, 14)])
def test_nearly_invariant_to_a_monotone_non_linear_intensity_change(shape, crops, shifts):
    """Tolerance: for exp(1.5 I) on I in [0, 1] (slope ratio 4.5 across the range) the descriptors
    differ by less than 0.08 on average, and the MIND loss is under half the loss of a 1-voxel shift."""
    fixed, moved = crops(shape, shifts(len(shape), amounts=(1,)), seed=3)
    remapped = torch.exp(1.5 * fixed)
    diff = (mind_ssc_descriptor(remapped) - mind_ssc_descriptor(fixed)).abs().mean()
    assert float(diff) < 0.08
    loss_remapped = -float(mind(fixed, remapped))
    loss_shift = min(-float(mind(fixed, m)) for m in moved)
    assert loss_remapped < 0.5 * loss_shift


def test_radius_and_dilation_in_mm_equal_voxels_per_axis(field):
    img = field((12, 13, 14), seed=4)
    spacing = (2.0, 1.0, 0.5)
    in_mm = mind_ssc_descriptor(img, spacing=spacing, radius=2.0, dilation=2.0, unit="mm")
    in_vox = mind_ssc_descriptor(img, radius=(1, 2, 4), dilation=(1, 2, 4))
    torch.testing.assert_close(in_mm, in_vox)
    assert not torch.allclose(in_mm, mind_ssc_descriptor(img, radius=2, dilation=2))


def test_gaussian_patches_keep_the_invariances(field):
    img = field((12, 12, 12), seed=5)
    d1 = mind_ssc_descriptor(img, kernel="gaussian", radius=1)
    torch.testing.assert_close(mind_ssc_descriptor(5 * img - 1, kernel="gaussian", radius=1), d1)
    assert not torch.allclose(d1, mind_ssc_descriptor(img, kernel="box", radius=1))


def test_mind_similarity_is_minus_mean_squared_descriptor_difference(field):
    f = field((12, 12), seed=1)
    m = field((12, 12), seed=2)
    w = (field((12, 12), seed=3) > 0.4).double()
    df, dm = mind_ssc_descriptor(f, mask=w), mind_ssc_descriptor(m, mask=w)
    expected = -(((df - dm) ** 2).mean(1, keepdim=True) * w).sum() / w.sum()
    torch.testing.assert_close(mind(f, m, mask=w)[0], expected)
    assert float(mind(f, f)) == 0.0
