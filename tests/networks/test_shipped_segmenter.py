"""The shipped 2D segmenter (``segmenter_2d``: DeepSim's and ``omnireg segment``'s default for 2D images): loads
offline from the package, small, trained only on the training subjects with its command recorded, and finds the
tissues of a real T1 it never saw (the bundled sample, cut axially) well enough for DeepSim to rank alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnireg.evaluation import dice_score
from omnireg.io import load_image, save_image
from omnireg.networks.store import load_model, packaged_weights

#: the segmenter's classes (FreeSurfer numbers) that make up the bundled sample's tissue classes
#: (omnireg/data/sample/ATTRIBUTION.md): cerebral white matter and cortex
WHITE_MATTER = (2, 41)
CORTEX = (3, 42)
SAMPLE_WM, SAMPLE_CORTEX = 3, 2


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py; axial_slice: tests/networks/conftest.py


def test_shipped_2d_segmenter_loads_offline_is_small_and_records_how_it_was_made():
    path = packaged_weights("segmenter_2d")
    assert path.stat().st_size < 10 * 2**20
    model, meta = load_model(path, kind="segmenter")
    assert model.config.ndim == 2 and model.config.labels[0] == 0 and len(model.config.labels) == 33
    assert meta["command"].startswith("omnireg train segmenter") and "--ndim 2" in meta["command"]
    assert meta["training"]["synthesis"]["mode"] == "random"
    assert not set(meta["data"]["train_subjects"]) & {"16", "17", "18", "19", "20"}
    assert meta["data"]["test_subjects_never_read"] == ["16", "17", "18", "19", "20"]
    assert meta["validation"]["dice"] > 0.6  # held-out subjects 13-15, random and T1-like contrasts
    assert path.with_suffix(".log.jsonl").is_file()


def test_shipped_2d_segmenter_finds_white_matter_and_cortex_of_the_bundled_real_t1(axial_slice):
    from omnireg.networks.segmenter import predict_labels
    from omnireg.similarity.deepsim import load_segmenter

    image, classes = axial_slice
    pred = predict_labels(load_segmenter(None, 2), image.batch(), image.grid)[0, 0].numpy().astype(np.int64)
    assert dice_score(pred > 0, classes > 0) > 0.75
    assert dice_score(np.isin(pred, WHITE_MATTER), classes == SAMPLE_WM) > 0.7
    assert dice_score(np.isin(pred, CORTEX), classes == SAMPLE_CORTEX) > 0.6


def test_default_deepsim_of_2d_images_ranks_the_aligned_slice_first(axial_slice):
    from omnireg.similarity import get_similarity

    image, _ = axial_slice
    x = image.batch()
    sim = get_similarity("deepsim")
    same = float(sim(x, x))
    shifted = [float(sim(x, torch.roll(x, shifts=s, dims=2))) for s in (1, 2, 4)]
    assert same == pytest.approx(1.0, abs=1e-5)
    assert same > shifted[0] > shifted[1] > shifted[2]


def test_omnireg_segment_uses_the_shipped_2d_segmenter_by_default(axial_slice, tmp_path):
    from omnireg.cli.main import main

    image, classes = axial_slice
    save_image(image, tmp_path / "slice.nii.gz")
    assert main(["segment", str(tmp_path / "slice.nii.gz"), "--out", str(tmp_path / "labels.nii.gz")]) == 0
    out = load_image(tmp_path / "labels.nii.gz")
    assert out.grid.same_as(image.grid)
    labels = out.data.numpy().reshape(image.grid.shape)
    assert np.issubdtype(labels.dtype, np.integer) and dice_score(labels > 0, classes > 0) > 0.75
