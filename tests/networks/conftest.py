"""Fixtures of the network tests."""

from __future__ import annotations

import numpy as np
import pytest

from omnireg.core import Grid, Image
from omnireg.data import sample_path
from omnireg.io import load_image


@pytest.fixture(scope="session")
def axial_slice():
    """The bundled T1 and its tissue classes at 2 mm RAS, the axial slice halfway up the labelled brain."""
    from omnireg.networks.registration import frame_grid
    from omnireg.transforms import resample

    t1, lab = load_image(sample_path("t1")), load_image(sample_path("labels"))
    ras = frame_grid(t1.grid, spacing_mm=2.0)
    v = resample(t1, None, onto=ras, interp="linear").data.reshape(ras.shape)
    s = resample(lab, None, onto=ras, interp="nearest").data.numpy().reshape(ras.shape).astype(np.int64)
    zs = np.nonzero((s > 0).any(axis=(0, 1)))[0]
    z = int(zs[0] + round(0.5 * (zs[-1] - zs[0])))
    return Image(v[:, :, z][None].float().contiguous(), Grid(ras.shape[:2], (2.0, 2.0))), s[:, :, z]
