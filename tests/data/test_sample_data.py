"""The bundled sample (omnireg.data): files present, loadable, small, consistent, and truly multimodal."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from omnireg.data import sample_label_names, sample_path

NAMES = ("t1", "labels", "t2w", "labels_tsv", "t1_2d", "pd_2d")
IMAGE_NAMES = ("t1", "labels", "t2w", "t1_2d", "pd_2d")


@pytest.fixture(scope="module")
def brain():
    t1 = nib.load(sample_path("t1"))
    t2 = nib.load(sample_path("t2w"))
    labels = nib.load(sample_path("labels"))
    return t1, t2, labels


@pytest.mark.parametrize("name", NAMES)
def test_sample_path_returns_existing_file(name):
    path = sample_path(name)
    assert isinstance(path, Path)
    assert path.is_file()


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_sample_images_load_with_nibabel(name):
    img = nib.load(sample_path(name))
    data = np.asarray(img.dataobj)
    assert data.ndim == (2 if name.endswith("_2d") else 3)
    assert np.all(np.isfinite(data))
    assert data.max() > 0


def test_unknown_name_raises_value_error_listing_valid_names():
    with pytest.raises(ValueError) as err:
        sample_path("t3")
    for name in NAMES:
        assert repr(name) in str(err.value)
    assert "'t3'" in str(err.value)


def test_non_string_name_raises_type_error():
    with pytest.raises(TypeError, match="name"):
        sample_path(1)  # type: ignore[arg-type]


def test_total_size_is_small():
    folder = sample_path("t1").parent
    total = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert total < 1.5e6
    assert (folder / "ATTRIBUTION.md").is_file()


def test_3d_images_are_2mm_float32_and_uint8_labels(brain):
    t1, t2, labels = brain
    assert t1.get_data_dtype() == np.float32
    assert t2.get_data_dtype() == np.float32
    assert labels.get_data_dtype() == np.uint8
    np.testing.assert_allclose(t1.header.get_zooms(), (2.0, 2.0, 2.0))


def test_t1_t2w_and_labels_share_the_grid(brain):
    t1, t2, labels = brain
    assert t1.shape == t2.shape == labels.shape
    np.testing.assert_array_equal(t1.affine, t2.affine)
    np.testing.assert_array_equal(t1.affine, labels.affine)


def test_world_origin_is_near_the_brain_centre(brain):
    _, _, labels = brain
    vox = np.argwhere(np.asarray(labels.dataobj) > 0).mean(0)
    centre = labels.affine[:3, :3] @ vox + labels.affine[:3, 3]
    assert np.linalg.norm(centre) < 2.0  # mm


def test_label_names_match_label_ids(brain):
    _, _, labels = brain
    names = sample_label_names()
    assert set(names) == set(range(1, 8))
    assert names[1] == "CSF/ventricles"
    assert names[3] == "cerebral white matter"
    data = np.asarray(labels.dataobj)
    present = set(np.unique(data).tolist())
    assert present == {0} | set(names)
    assert np.issubdtype(data.dtype, np.integer)


def test_2d_pair_shares_the_grid():
    t1 = nib.load(sample_path("t1_2d"))
    pd = nib.load(sample_path("pd_2d"))
    assert t1.shape == pd.shape == (181, 217)
    np.testing.assert_array_equal(t1.affine, pd.affine)


def test_t2w_contrast_is_not_a_monotone_function_of_t1(brain):
    t1, t2, labels = brain
    a, b, lab = t1.get_fdata(), t2.get_fdata(), np.asarray(labels.dataobj)
    csf, wm, cortex = lab == 1, lab == 3, lab == 2
    # T1: CSF < cortex < WM; T2w: CSF > cortex > WM (contrast reversed)
    assert a[csf].mean() < a[cortex].mean() < a[wm].mean()
    assert b[csf].mean() > b[cortex].mean() > b[wm].mean()
    # the reversal is large compared with the noise
    assert b[csf].mean() - b[wm].mean() > 0.3
    assert a[wm].mean() - a[csf].mean() > 0.1
