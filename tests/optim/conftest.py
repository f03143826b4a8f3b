"""Known-truth cases built from the bundled sample (downsampled for speed)."""

import pytest
import torch

from omnireg.core import Image
from omnireg.data import sample_path
from omnireg.io import load_image
from omnireg.optim.pyramid import pyramid_level


def _coarse(img: Image, shrink: float) -> Image:
    lev = pyramid_level(img.batch().float(), img.grid, shrink=shrink)
    return Image(lev.data[0], lev.grid)


@pytest.fixture(scope="session")
def brain3mm():
    """T1, synthetic T2w and a brain mask of the bundled sample at about 3 mm (53 x 57 x 67)."""
    t1 = load_image(sample_path("t1"))
    t2 = load_image(sample_path("t2w"))
    labels = load_image(sample_path("labels"))
    t1c, t2c = _coarse(t1, 1.5), _coarse(t2, 1.5)
    mask = _coarse(Image((labels.data > 0).float(), labels.grid), 1.5)
    return t1c, t2c, (mask.data[0] > 0.5)


@pytest.fixture(scope="session")
def brain4mm():
    t1 = load_image(sample_path("t1"))
    t2 = load_image(sample_path("t2w"))
    labels = load_image(sample_path("labels"))
    mask = _coarse(Image((labels.data > 0).float(), labels.grid), 2)
    return _coarse(t1, 2), _coarse(t2, 2), (mask.data[0] > 0.5)
