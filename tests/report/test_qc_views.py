"""Display planes: world-consistent orientation (convention pins), exact sampling, region of interest."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from omnireg.core import Grid, Image
from omnireg.report import DisplayConvention, display_planes, region_of_interest_centre, views
from omnireg.report.views import intensity_window, otsu_threshold, sample_plane

# markers of a physical scene (world RAS mm): anterior (+A), the patient's right (+R), superior (+S)
ANTERIOR, RIGHT, SUPERIOR = (0.0, 12.0, 0.0), (12.0, 0.0, 0.0), (0.0, 0.0, 12.0)


def marker(grid: Grid, centre=(0.0, 0.0, 0.0), radius: float = 2.5) -> Image:
    """A Gaussian blob at a world position."""
    x = grid.points("world", dtype=torch.float64)
    c = torch.tensor(centre[: grid.ndim], dtype=torch.float64)
    return Image(torch.exp(-((x - c) ** 2).sum(-1) / (2 * radius**2)).float()[None], grid)


def scene(grid: Grid) -> Image:
    """An asymmetric scene: blobs of different weights at the centre and at the three markers."""
    data = sum(w * marker(grid, c).data for w, c in zip((0.3, 1.0, 2.0, 3.0), ((0, 0, 0), ANTERIOR, RIGHT, SUPERIOR)))
    return Image(data, grid)


def peak(image: Image, plane) -> tuple[int, int]:
    picture = sample_plane(image, plane)
    r, c = np.unravel_index(np.argmax(picture), picture.shape)
    return int(r), int(c)


def storage_grids() -> dict[str, Grid]:
    """The same field of view stored in RAS, LPS and a permuted, oblique-free PIR order."""
    ras = Grid((21, 21, 21), spacing=(1.5, 1.5, 1.5), origin=(-15.0, -15.0, -15.0))
    lps = Grid((21, 21, 21), spacing=(1.5, 1.5, 1.5), origin=(15.0, 15.0, -15.0), direction=np.diag([-1.0, -1.0, 1.0]))
    pir_dir = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # axes towards P, I, R
    pir = Grid((21, 21, 21), spacing=(1.5, 1.5, 1.5), origin=(-15.0, 15.0, 15.0), direction=pir_dir)
    return {"RAS": ras, "LPS": lps, "PIR": pir}


def _peak(picture: np.ndarray, near: float) -> tuple[int, int]:
    """Row and column of the pixel closest in value to ``near``'s marker (largest value in its band)."""
    r, c = np.unravel_index(np.argmax(np.where(np.abs(picture - near) < 0.5, picture, -np.inf)), picture.shape)
    return int(r), int(c)


def test_storage_order_does_not_change_the_pictures():
    pictures = {}
    for name, grid in storage_grids().items():
        assert grid.orientation_code() == name
        img = scene(grid)
        pictures[name] = [sample_plane(img, p) for p in display_planes(grid, centre=np.zeros(3))]
    for name in ("LPS", "PIR"):
        for a, b in zip(pictures["RAS"], pictures[name]):
            np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("convention", ["radiological", "neurological"])
def test_up_is_anterior_or_superior_and_right_follows_the_convention(convention):
    grid = storage_grids()["PIR"]
    axial, coronal, sagittal = display_planes(grid, centre=np.zeros(3), convention=convention)
    mid = axial.shape[0] // 2  # every plane is 21 x 21 pixels here
    right_on_left = convention == "radiological"
    r, c = peak(marker(grid, ANTERIOR), axial)
    assert r < mid - 3 and c == mid  # anterior is up
    r, c = peak(marker(grid, RIGHT), axial)
    assert r == mid and ((c < mid - 3) if right_on_left else (c > mid + 3))
    assert axial.letters == (("R", "L", "A", "P") if right_on_left else ("L", "R", "A", "P"))
    r, c = peak(marker(grid, SUPERIOR), coronal)
    assert r < mid - 3 and c == mid  # superior is up
    r, c = peak(marker(grid, RIGHT), coronal)
    assert (c < mid - 3) if right_on_left else (c > mid + 3)
    assert coronal.letters[2:] == ("S", "I")
    r, c = peak(marker(grid, ANTERIOR), sagittal)
    assert c < mid - 3 and r == mid  # anterior on the left in both conventions
    r, c = peak(marker(grid, SUPERIOR), sagittal)
    assert r < mid - 3
    assert sagittal.letters == ("A", "P", "S", "I")


def test_axial_picture_is_the_array_slice_flipped_for_an_ras_grid():
    """Plane pixels coincide with voxel centres: the picture is exact (radiological: R and A descend)."""
    grid = Grid((5, 6, 7), spacing=(1.0, 1.0, 1.0), origin=(-2.0, -3.0, 4.0))
    data = torch.arange(5 * 6 * 7, dtype=torch.float32).reshape(1, 5, 6, 7)
    k = 3
    centre = grid.transform_points([2.0, 2.5, float(k)], "voxel", "world")
    axial = display_planes(grid, centre=centre, planes=("axial",))[0]
    assert axial.shape == (6, 5) and axial.position == "S = 7.0 mm"
    np.testing.assert_allclose(sample_plane(Image(data, grid), axial), data[0].flip(0, 1)[..., k].numpy().T, atol=1e-3)
    neuro = display_planes(grid, centre=centre, planes=("axial",), convention=DisplayConvention.NEUROLOGICAL)[0]
    np.testing.assert_allclose(sample_plane(Image(data, grid), neuro), data[0].flip(1)[..., k].numpy().T, atol=1e-3)


def test_2d_raster_file_appears_as_in_a_picture_viewer(tmp_path):
    from PIL import Image as PILImage

    from omnireg.io import load_image

    pixels = np.zeros((12, 16), dtype=np.uint8)  # rows x columns as a viewer shows them
    pixels[1, 2] = 255  # near the top-left corner
    PILImage.fromarray(pixels).save(tmp_path / "marker.png")
    img = load_image(tmp_path / "marker.png")
    plane = display_planes(img.grid)[0]  # radiological default
    picture = sample_plane(img.to(torch.float32), plane)
    assert picture.shape == (12, 16)
    assert np.unravel_index(np.argmax(picture), picture.shape) == (1, 2)


def test_picture_size_is_capped_with_square_pixels():
    grid = Grid((400, 100, 50), spacing=(0.5, 1.0, 3.0))
    planes = display_planes(grid, max_pixels=64)
    for p in planes:
        assert max(p.shape) <= 64
        assert p.grid.spacing[0] == p.grid.spacing[1] == p.pixel_mm
    assert planes[0].pixel_mm == pytest.approx(200.0 / 64)


def test_region_of_interest_prefers_labels_then_foreground():
    grid = Grid((20, 20, 20), spacing=(2.0, 2.0, 2.0), origin=(-19.0, -19.0, -19.0))
    img = Image(torch.zeros(1, 20, 20, 20), grid)
    img.data[0, 2:6, 2:6, 2:6] = 1.0  # foreground near the low corner
    fg = region_of_interest_centre(img)
    np.testing.assert_allclose(fg, grid.transform_points([3.5, 3.5, 3.5], "voxel", "world"))
    labels = Image(torch.zeros(1, 20, 20, 20, dtype=torch.int32), grid)
    labels.data[0, 14:16, 10:12, 4:6] = 3
    np.testing.assert_allclose(region_of_interest_centre(img, labels=labels),
                               grid.transform_points([14.5, 10.5, 4.5], "voxel", "world"))
    empty = Image(torch.zeros(1, 20, 20, 20), grid)
    np.testing.assert_allclose(region_of_interest_centre(empty), [0.0, 0.0, 0.0], atol=1e-12)


def test_window_and_threshold():
    grid = Grid((100,) * 2)
    vals = torch.linspace(0.0, 99.0, 100 * 100).reshape(1, 100, 100)
    lo, hi = intensity_window(Image(vals, grid))
    assert lo == pytest.approx(0.99, abs=1e-3) and hi == pytest.approx(98.01, abs=1e-3)
    assert intensity_window(Image(torch.ones(1, 100, 100), grid)) == (1.0, 2.0)
    two = np.r_[np.zeros(500), np.ones(300) * 10.0]
    assert 0.0 < otsu_threshold(two) < 10.0
    assert np.isnan(otsu_threshold(np.ones(5)))


def test_bad_arguments_are_named():
    grid = Grid((4, 4, 4))
    with pytest.raises(TypeError, match="grid: expected a Grid"):
        display_planes(np.eye(4))
    with pytest.raises(ValueError, match="centre: expected 3 finite world coordinates"):
        display_planes(grid, centre=[0.0, 1.0])
    with pytest.raises(ValueError, match="max_pixels: expected an int >= 8"):
        display_planes(grid, max_pixels=4)
    with pytest.raises(ValueError, match="planes: expected names among"):
        display_planes(grid, planes=("oblique",))
    with pytest.raises(ValueError, match="convention: expected one of"):
        display_planes(grid, convention="mirror")


def test_docstring_examples_run():
    assert doctest.testmod(views, optionflags=doctest.ELLIPSIS).failed == 0
