"""Known-truth cases on the bundled 2 mm brain sample, shared by ``capture.py`` and ``peers.py``.

The fixed image is the bundled T1 (80 x 85 x 100, 2 mm). The moving image is built by
:func:`omnireg.training.synthetic.make_known_case` from the T1 (``mono``) or from the synthetic T2w with a
multiplicative bias field and Gaussian noise (``multi``), on a **moving grid whose field of view is the
fixed one padded by** ``PAD_MM`` **on every side** (same spacing and centre), so that large rotations and
translations do not push the brain out of the moving image: the benchmark measures the registration,
not the cropping. Errors are measured over the brain: the voxels with ``labels > 0``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

PAD_MM = 50.0
MODALITIES = ("mono", "multi")
SUCCESS_MM = 2.0


@lru_cache(maxsize=1)
def sample_images():
    """``(t1, t2w, labels)`` Images of the bundled sample."""
    from omnireg.data import sample_path
    from omnireg.io import load_image

    return load_image(sample_path("t1")), load_image(sample_path("t2w")), load_image(sample_path("labels"))


@lru_cache(maxsize=1)
def brain_centre() -> tuple[float, ...]:
    """World (RAS mm) centre of the brain (mean position of the ``labels > 0`` voxels)."""
    _, _, labels = sample_images()
    idx = np.argwhere(labels.numpy()[0] > 0).astype(np.float64)
    return tuple(labels.grid.transform_points(idx.mean(0), "voxel", "world").tolist())


def padded_grid(grid, pad_mm: float = PAD_MM):
    """The grid with ``pad_mm`` added on every side (:meth:`omnireg.core.Grid.padded`)."""
    return grid.padded(pad_mm)


def brain_mask():
    """``(*S)`` bool tensor of the fixed brain voxels (``labels > 0``)."""
    _, _, labels = sample_images()
    return labels.data[0] > 0


def build_case(modality: str, matrix: np.ndarray, *, displacement=None, seed: int = 0):
    """A :class:`~omnireg.training.synthetic.KnownCase` (fixed T1, moving on the padded grid, moving labels)."""
    from omnireg.training.synthetic import make_known_case

    if modality not in MODALITIES:
        raise ValueError(f"modality: expected one of {MODALITIES}, got {modality!r}")
    t1, t2w, labels = sample_images()
    kw = dict(moving_source=t2w, bias=0.2, noise=0.02) if modality == "multi" else {}
    return make_known_case(
        t1, matrix=matrix, displacement=displacement, moving_grid=padded_grid(t1.grid), labels=labels, seed=seed, **kw
    )


def error_stats(case, transform) -> dict:
    """Mean, median, 95th percentile and max target error (mm) of ``transform`` over the brain voxels."""
    import torch

    with torch.no_grad():
        err = case.target_error(transform, mask=brain_mask()).numpy()
    return {
        "mean_mm": float(err.mean()),
        "median_mm": float(np.median(err)),
        "p95_mm": float(np.percentile(err, 95)),
        "max_mm": float(err.max()),
    }
