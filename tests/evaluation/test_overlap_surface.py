"""Dice/IoU against SimpleITK, Hausdorff against SimpleITK, HD95 against a brute-force computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist

from omnireg.core import Grid, Image
from omnireg.evaluation import (
    boundary,
    dice_score,
    hausdorff_distance,
    hd95,
    iou_score,
    label_metrics,
    summarize_labels,
    surface_distances,
)


def _random_labels(shape, seed, n_labels=4):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), 1.2)
    edges = np.quantile(field, np.linspace(0, 1, n_labels + 1)[1:-1])
    return np.digitize(field, edges).astype(np.int16)  # 0 .. n_labels - 1


def _random_mask(shape, seed, level=0.05):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.normal(size=shape), 1.5) > level


def _sitk(arr: np.ndarray, spacing) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(*reversed(range(arr.ndim)))))
    img.SetSpacing(tuple(float(s) for s in spacing))
    return img


def _oblique_grid(shape, spacing):
    c, s = np.cos(0.4), np.sin(0.4)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])[: len(shape), : len(shape)]
    return Grid(shape, spacing, origin=(5.0, -3.0, 2.0)[: len(shape)], direction=rot)


def _brute_boundary(mask: np.ndarray) -> np.ndarray:
    """Voxels of the mask with a face neighbour outside it (outside the image counts as outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    out = np.zeros_like(mask)
    for a in range(mask.ndim):
        for shift in (-1, 1):
            out |= ~np.roll(padded, shift, axis=a)[inner]
    return mask & out


# ------------------------------------------------------------------------------------------ Dice / IoU
@pytest.mark.parametrize("seed", [0, 1])
def test_dice_and_iou_agree_with_sitk_label_overlap(seed):
    shape, spacing = (14, 12, 10), (0.8, 1.1, 2.5)
    fixed = _random_labels(shape, seed)
    warped = _random_labels(shape, seed + 10)
    warped[warped == 3] = 0  # label 3 absent from the warped map: Dice 0
    grid = Grid(shape, spacing)
    metrics = label_metrics(Image(torch.from_numpy(fixed)[None], grid), Image(torch.from_numpy(warped)[None], grid),
                            distances=False)
    filt = sitk.LabelOverlapMeasuresImageFilter()
    filt.Execute(_sitk(fixed, spacing), _sitk(warped, spacing))
    assert [m.label for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert m.dice == pytest.approx(filt.GetDiceCoefficient(m.label), abs=1e-12)
        assert m.iou == pytest.approx(filt.GetJaccardCoefficient(m.label), abs=1e-12)
        assert m.fixed_volume_mm3 == pytest.approx(np.count_nonzero(fixed == m.label) * np.prod(spacing))
        assert math.isnan(m.hd95_mm) and math.isnan(m.hd_mm)
    assert metrics[2].dice == 0.0


def test_dice_and_iou_of_simple_masks_are_exact():
    a = np.array([1, 1, 1, 0, 0])
    b = np.array([0, 1, 1, 1, 0])
    assert dice_score(a, b) == pytest.approx(2 * 2 / 6)
    assert iou_score(a, b) == pytest.approx(2 / 4)
    assert dice_score(a, a) == 1.0
    assert math.isnan(dice_score(np.zeros(3), np.zeros(3)))


def test_label_metrics_identical_maps_are_perfect_and_use_names():
    lab = _random_labels((8, 9, 7), 3)
    img = Image(torch.from_numpy(lab)[None], Grid(lab.shape, (1.0, 2.0, 0.5)))
    metrics = label_metrics(img, img, names={1: "one"})
    assert all(m.dice == 1.0 and m.iou == 1.0 and m.hd95_mm == 0.0 and m.hd_mm == 0.0 for m in metrics)
    assert metrics[0].name == "one" and metrics[1].name == "label 2"
    summary = summarize_labels(metrics)
    assert summary["dice"] == 1.0 and summary["labels"] == 3


def test_label_metrics_refuses_other_grids_and_float_labels():
    lab = torch.from_numpy(_random_labels((6, 6, 6), 0))[None]
    a = Image(lab, Grid((6, 6, 6)))
    with pytest.raises(ValueError, match="warped: expected a label map on the fixed grid"):
        label_metrics(a, Image(lab, Grid((6, 6, 6), spacing=(2.0, 1.0, 1.0))))
    with pytest.raises(ValueError, match="warped: expected integer label values"):
        label_metrics(a, Image(lab.double() + 0.5, Grid((6, 6, 6))))
    with pytest.raises(TypeError, match="fixed: expected an omnireg Image"):
        label_metrics(lab.numpy(), a)


# ------------------------------------------------------------------------------------------ distances
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hausdorff_agrees_with_sitk_on_anisotropic_spacing(seed):
    shape, spacing = (11, 12, 9), (0.7, 1.3, 2.1)
    a, b = _random_mask(shape, seed), _random_mask(shape, seed + 100)
    filt = sitk.HausdorffDistanceImageFilter()
    filt.Execute(_sitk(a.astype(np.uint8), spacing), _sitk(b.astype(np.uint8), spacing))
    assert hausdorff_distance(a, b, spacing) == pytest.approx(filt.GetHausdorffDistance(), abs=1e-9)


def test_hausdorff_of_images_uses_their_grid_and_matches_sitk():
    shape, spacing = (10, 9, 8), (1.5, 0.5, 3.0)
    a, b = _random_mask(shape, 5), _random_mask(shape, 6)
    grid = _oblique_grid(shape, spacing)  # distances do not depend on the (orthonormal) direction
    ia, ib = Image(torch.from_numpy(a)[None], grid), Image(torch.from_numpy(b)[None], grid)
    filt = sitk.HausdorffDistanceImageFilter()
    filt.Execute(_sitk(a.astype(np.uint8), spacing), _sitk(b.astype(np.uint8), spacing))
    assert hausdorff_distance(ia, ib) == pytest.approx(filt.GetHausdorffDistance(), abs=1e-9)


@pytest.mark.parametrize("shape", [(7, 8, 6), (12, 10)])
def test_hd95_agrees_with_brute_force_world_distances(shape):
    spacing = (0.9, 1.7, 1.2)[: len(shape)]
    grid = _oblique_grid(shape, spacing)
    a, b = _random_mask(shape, 11, 0.0), _random_mask(shape, 12, 0.0)
    sa, sb = _brute_boundary(a), _brute_boundary(b)
    np.testing.assert_array_equal(boundary(a), sa)
    pa = grid.transform_points(np.argwhere(sa).astype(float), "voxel", "world")
    pb = grid.transform_points(np.argwhere(sb).astype(float), "voxel", "world")
    dist = cdist(pa, pb)
    union = np.concatenate([dist.min(axis=1), dist.min(axis=0)])
    d_ab, d_ba = surface_distances(a, b, grid)
    np.testing.assert_allclose(d_ab, dist.min(axis=1), atol=1e-9)
    np.testing.assert_allclose(d_ba, dist.min(axis=0), atol=1e-9)
    for pct in (95.0, 50.0, 100.0):
        assert hd95(a, b, grid, percentile=pct) == pytest.approx(np.percentile(union, pct), abs=1e-9)


def test_hd95_and_hausdorff_of_shifted_box_are_the_shift():
    a = np.zeros((20, 6, 6), bool)
    a[4:10, 1:5, 1:5] = True
    b = np.roll(a, 3, axis=0)
    assert hausdorff_distance(a, b, (2.0, 1.0, 1.0)) == pytest.approx(6.0)
    assert hd95(a, b, (2.0, 1.0, 1.0), percentile=100.0) == pytest.approx(6.0)


def test_hausdorff_is_smaller_than_max_surface_distance_when_a_hole_is_filled():
    yy, xx = np.mgrid[-12:13, -12:13]
    r = np.hypot(yy, xx)
    disk = r <= 8
    annulus = disk & (r > 2)
    hd = hausdorff_distance(annulus, disk, (1.0, 1.0))
    assert hd < 3.0  # the hole is filled by the disk: every disk voxel is near the annulus
    assert hd95(annulus, disk, (1.0, 1.0), percentile=100.0) >= 5.0  # the hole's surface is far from the disk's


def test_distances_of_an_empty_mask_are_nan_and_errors_name_the_argument():
    a = np.zeros((5, 5), bool)
    b = a.copy()
    b[2, 2] = True
    assert math.isnan(hd95(a, b, (1.0, 1.0)))
    assert math.isnan(hausdorff_distance(a, b, (1.0, 1.0)))
    with pytest.raises(ValueError, match="spacing: required"):
        hd95(b, b)
    with pytest.raises(ValueError, match="spacing: expected 2 positive"):
        hd95(b, b, (1.0, -1.0))
    with pytest.raises(ValueError, match="b: expected a mask of shape"):
        hd95(b, b[:4], (1.0, 1.0))
    with pytest.raises(ValueError, match="percentile"):
        hd95(b, b, (1.0, 1.0), percentile=101)
