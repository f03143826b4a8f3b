"""Segmenter training: outputs and provenance, validation Dice per structure, exact resume, the test split never read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from omnireg.networks.store import load_model, read_model_file
from omnireg.training.labelmaps import LabelMapSet, read_prepared_index, structure_lookup, write_prepared_index
from omnireg.training.pairs import brain_slice_range
from omnireg.training.loop import FitConfig
from omnireg.training.segmenter import LABELS, SegmenterTrainConfig, segmenter_synthesis, train_segmenter, validation_images

TINY = {"enc_channels": [4, 8, 8], "dec_channels": [8, 8, 4, 4]}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _config(steps: int = 3, **kw) -> SegmenterTrainConfig:
    fit = FitConfig(steps=steps, lr=3e-3, warmup=1, seed=kw.pop("seed", 1), checkpoint_every=2, weight_decay=0.0)
    return SegmenterTrainConfig(model_options=TINY, synthesis=segmenter_synthesis("random", deform_spacing_vox=4.0),
                                val_every=2, fit=fit, **kw)


def test_training_writes_a_model_with_its_frame_provenance_and_dice_per_structure(tiny_label_maps, tmp_path):
    out = tmp_path / "seg.pt"
    meta = train_segmenter(_config(batch_size=2), out, label_maps=tiny_label_maps, meta={"command": "test"})
    model, saved = load_model(out, kind="segmenter")
    assert model.config.labels == LABELS and model.config.spacing_mm == 2.0 and model.config.ndim == 3
    assert np.allclose(model.config.direction_matrix, np.eye(3)) and list(model.config.enc_channels) == [4, 8, 8]
    assert saved["command"] == "test" and saved["steps_done"] == 3 and meta["steps_done"] == 3
    assert saved["data"]["train_subjects"] == ["s0", "s1", "s2"] and saved["data"]["validation_subjects"] == ["s3", "s4"]
    assert saved["data"]["test_subjects_never_read"] == ["t0"]
    v = saved["validation"]
    # the phantoms hold cortex (3), white matter (2), ventricle (4) and CSF (24) among the named structures
    assert set(v["per_structure"]) == {"Left-Cerebral-Cortex", "Left-Cerebral-White-Matter", "Left-Lateral-Ventricle", "CSF"}
    assert 0 <= v["dice_worst_structure"] <= v["dice"] <= 1 and v["images"] == 2 * 2  # 2 subjects, 2 contrast modes
    assert {"dice_random", "dice_t1"} <= set(v)
    assert [r["step"] for r in saved["validation_history"]] == [2, 3]
    lines = [json.loads(x) for x in (tmp_path / "seg.log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3]
    # the default loss: soft Dice (in [0, 1]) + 1 x cross-entropy
    steps = [r for r in lines if "loss" in r]
    assert all(0 <= r["terms"]["dice_loss"] <= 1 and r["terms"]["cross_entropy"] > 0 for r in steps)
    assert all(r["loss"] == pytest.approx(r["terms"]["dice_loss"] + r["terms"]["cross_entropy"], rel=1e-5) for r in steps)


def test_resume_after_a_time_budget_stop_is_exact(tiny_label_maps, tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    cfg = dict(steps=4, ndim=2, batch_size=2)
    train_segmenter(_config(**cfg), a, label_maps=tiny_label_maps)
    first = train_segmenter(_config(**cfg), b, label_maps=tiny_label_maps, max_minutes=0.0)
    assert first["stopped_early"] and first["steps_done"] == 1
    assert read_model_file(b)["meta"]["steps_done"] == 1  # a usable model file is left behind
    train_segmenter(_config(**cfg), b, label_maps=tiny_label_maps, resume=True)
    sa, sb = read_model_file(a)["state_dict"], read_model_file(b)["state_dict"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)
    steps = [json.loads(x)["step"] for x in (tmp_path / "b.log.jsonl").read_text().splitlines() if "loss" in x]
    assert steps == [1, 2, 3, 4]
    finished = b.read_bytes()  # resuming the finished run leaves the model file (and its provenance) as it is
    train_segmenter(_config(**cfg), b, label_maps=tiny_label_maps, resume=True)
    assert b.read_bytes() == finished
    with pytest.raises(ValueError, match="different"):
        train_segmenter(_config(steps=4, ndim=2, batch_size=1), b, label_maps=tiny_label_maps, resume=True)


def test_a_split_that_puts_a_test_subject_into_training_is_refused(tiny_label_maps, tmp_path):
    index = read_prepared_index(tiny_label_maps)
    index["split"]["train"] = index["split"]["train"] + ["t0"]
    write_prepared_index(tiny_label_maps, {k: v for k, v in index.items() if k not in ("format", "version")})
    with pytest.raises(ValueError, match="test subject"):
        train_segmenter(_config(), tmp_path / "x.pt", label_maps=tiny_label_maps)


def test_validation_images_are_the_undeformed_maps_in_every_mode_and_slice(tiny_label_maps):
    index = read_prepared_index(tiny_label_maps)
    maps = LabelMapSet.load(tiny_label_maps, index["split"]["validation"])
    lut = structure_lookup(maps.values)
    images = validation_images(maps, segmenter_synthesis(), modes=("random", "t1"), seed=3, ndim=2, axis=2,
                               slice_fractions=(0.25, 0.75))
    assert [m for m, _, _ in images] == ["random"] * 4 + ["t1"] * 4
    again = validation_images(maps, segmenter_synthesis(), modes=("random", "t1"), seed=3, ndim=2, axis=2,
                              slice_fractions=(0.25, 0.75))
    for (_, img, lab), (_, img2, _) in zip(images, again):
        assert img.shape == (1, 1, 16, 20) and 0 <= float(img.min()) and float(img.max()) <= 1
        torch.testing.assert_close(img, img2, rtol=0, atol=0)  # the same images at every validation
    # no deformation and no skull stripping: the labels are the maps' own slices
    lo, hi = brain_slice_range(maps.labels, 2, 0.2)
    slices = [lo + round(f * (hi - lo)) for f in (0.25, 0.75)]
    sources = [lut[maps.labels[a : a + 1].select(4, z).long()] for a in range(2) for z in slices]
    for (_, _, lab), src in zip(images[:4], sources):
        assert torch.equal(lab, src)
