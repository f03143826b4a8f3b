"""Prepared label-map sets: the tensor file gives the same maps as the NIfTI files and is checked by its hash."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from omnireg.training.labelmaps import LabelMapSet, read_prepared_index, write_label_tensors, write_prepared_index


def _add_tensors(folder, names):
    index = read_prepared_index(folder)
    nifti = LabelMapSet.load(folder, names)
    arrays = [nifti.values[nifti.labels[i, 0].long()].numpy() for i in range(len(names))]
    index["tensor_file"], index["tensor_sha256"] = write_label_tensors(folder, names, arrays)
    index.pop("format"), index.pop("version")
    write_prepared_index(folder, index)
    return nifti


def test_tensor_file_equals_the_nifti_maps(tiny_label_maps):
    names = ["s0", "s1", "s3"]
    nifti = _add_tensors(tiny_label_maps, names)
    for f in ("s0.nii.gz", "s1.nii.gz", "s3.nii.gz"):
        (tiny_label_maps / f).unlink()  # the tensor file alone must suffice
    fast = LabelMapSet.load(tiny_label_maps, names)
    assert torch.equal(fast.labels, nifti.labels) and torch.equal(fast.values, nifti.values)
    assert fast.grid.same_as(nifti.grid)
    np.testing.assert_array_equal(fast.values.numpy(), [0, 2, 3, 4, 24, 507])


def test_tampered_tensor_file_is_rejected(tiny_label_maps):
    _add_tensors(tiny_label_maps, ["s0"])
    index = json.loads((tiny_label_maps / "prepared.json").read_text())
    index["tensor_sha256"] = "0" * 64
    (tiny_label_maps / "prepared.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="SHA-256"):
        LabelMapSet.load(tiny_label_maps, ["s0"])


def test_unknown_subject_and_missing_index(tiny_label_maps, tmp_path):
    with pytest.raises(ValueError, match="'zz' is not in"):
        LabelMapSet.load(tiny_label_maps, ["zz"])
    with pytest.raises(FileNotFoundError, match="prepare_synthseg"):
        LabelMapSet.load(tmp_path, ["s0"])
