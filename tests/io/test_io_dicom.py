"""DICOM series folders: an oblique series written slice by slice with SimpleITK reads back in RAS."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from omnireg.io import load_image


def _write_series(volume: sitk.Image, folder, uid_suffix: str, prefix: str) -> None:
    """Write a 3D int16 volume as one DICOM file per slice (the SimpleITK 'DicomSeriesFromArray' recipe)."""
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = volume.GetDirection()
    tags = [
        ("0008|0008", "DERIVED\\SECONDARY"),
        ("0008|0060", "MR"),
        ("0020|000d", "1.2.826.0.1.3680043.2.1125.1.1"),
        ("0020|000e", "1.2.826.0.1.3680043.2.1125.1.2." + uid_suffix),
        ("0020|0037", "\\".join(f"{v:.10g}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))),
        ("0008|103e", "omnireg test " + uid_suffix),
    ]
    for k in range(volume.GetDepth()):
        s = volume[:, :, k]
        for tag, value in tags:
            s.SetMetaData(tag, value)
        s.SetMetaData("0020|0032", "\\".join(f"{v:.10g}" for v in volume.TransformIndexToPhysicalPoint((0, 0, k))))
        s.SetMetaData("0020|0013", str(k + 1))
        s.SetMetaData("0008|0018", f"1.2.826.0.1.3680043.2.1125.1.3.{uid_suffix}.{k + 1}")
        writer.SetFileName(str(folder / f"{prefix}{k:03d}.dcm"))
        writer.Execute(s)


def test_oblique_dicom_series_reads_back_with_ras_geometry(tmp_path, make_grid, caplog):
    # DICOM slices are ordered along row x column, so the frame must be right-handed (even seed)
    grid = make_grid(12, 3, shape=(6, 5, 4))
    assert np.linalg.det(grid.direction) > 0
    flip = np.array([-1.0, -1.0, 1.0])
    data = (np.arange(grid.numel).reshape(grid.shape) * 3 - 20).astype(np.int16)
    vol = sitk.GetImageFromArray(data.transpose(2, 1, 0).copy())
    vol.SetSpacing(grid.spacing)
    vol.SetOrigin(tuple(flip * grid.origin))
    vol.SetDirection(tuple((flip[:, None] * grid.direction).reshape(-1)))
    _write_series(vol, tmp_path, "1", "a")
    # a second, smaller series in the same folder: the larger one must be chosen (and logged)
    _write_series(vol[:, :, :2], tmp_path, "2", "b")
    with caplog.at_level(logging.INFO, logger="omnireg.io.images"):
        img = load_image(tmp_path)
    assert "2 DICOM series" in caplog.text
    assert img.grid.shape == grid.shape
    assert img.grid.same_as(grid, atol=1e-5), (img.grid, grid)
    assert not img.data.dtype.is_floating_point
    torch.testing.assert_close(img.data[0].to(torch.int64), torch.from_numpy(data.astype(np.int64)), rtol=0, atol=0)


def test_folder_without_dicom_series_raises(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no DICOM series"):
        load_image(tmp_path)
