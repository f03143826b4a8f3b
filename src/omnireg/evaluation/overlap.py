"""Per-label overlap and surface metrics of two label maps on the same grid.

For a label ``l`` with voxel sets ``F = {fixed == l}`` and ``W = {warped == l}``:

* Dice ``= 2 |F ∩ W| / (|F| + |W|)`` and IoU (Jaccard) ``= |F ∩ W| / |F ∪ W|``, as SimpleITK's
  ``LabelOverlapMeasuresImageFilter``; a label absent from one map scores 0;
* ``hd95_mm`` and ``hd_mm``: :func:`~omnireg.evaluation.surface.hd95` (95th percentile of the union of
  the directed surface distances) and :func:`~omnireg.evaluation.surface.hausdorff_distance`
  (SimpleITK's Hausdorff distance), in world mm; NaN when the label is absent from either map;
* volumes in mm^3 (voxel count times the voxel volume).

Label 0 is background and is not evaluated unless listed in ``labels``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

import numpy as np

from ..core.image import Image
from .surface import hausdorff_distance, hd95, mask_arrays

__all__ = ["LabelMetrics", "dice_score", "iou_score", "label_metrics", "summarize_labels"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelMetrics:
    """Metrics of one label (see the module docstring); distances in mm, volumes in mm^3."""

    label: int
    name: str
    dice: float
    iou: float
    hd95_mm: float
    hd_mm: float
    fixed_volume_mm3: float
    warped_volume_mm3: float

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN kept as float NaN; :func:`~omnireg.evaluation.report.write_results` writes null)."""
        return asdict(self)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def dice_score(a: object, b: object) -> float:
    """Dice ``2 |A ∩ B| / (|A| + |B|)`` of two masks (non-zero = inside); NaN if both are empty.

    Example:
        >>> dice_score(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))
        0.5
    """
    ma, mb = mask_arrays(a, b)
    inter = np.count_nonzero(ma & mb)
    return _ratio(2.0 * inter, np.count_nonzero(ma) + np.count_nonzero(mb))


def iou_score(a: object, b: object) -> float:
    """Intersection over union (Jaccard) ``|A ∩ B| / |A ∪ B|``; NaN if both masks are empty.

    Example:
        >>> iou_score(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))
        0.3333333333333333
    """
    ma, mb = mask_arrays(a, b)
    return _ratio(np.count_nonzero(ma & mb), np.count_nonzero(ma | mb))


def _label_array(image: object, name: str) -> np.ndarray:
    if not isinstance(image, Image):
        raise TypeError(f"{name}: expected an omnireg Image (a label map with its grid), got {type(image).__name__}")
    if image.channels != 1:
        raise ValueError(f"{name}: expected a single-channel label map, got {image.channels} channels")
    arr = image.numpy()[0]
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name}: expected integer label values, got non-integer floating point values")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{name}: expected an integer label map, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def label_metrics(
    fixed: Image,
    warped: Image,
    *,
    labels: Iterable[int] | None = None,
    names: Mapping[int, str] | None = None,
    distances: bool = True,
) -> list[LabelMetrics]:
    """Dice, IoU, HD95, Hausdorff distance and volumes per label of two label maps on one grid.

    Args:
        fixed: the fixed image's label map ``(1, *S)`` (integer values; integral floats accepted).
        warped: the moving label map warped onto the fixed grid (same grid).
        labels: the labels to evaluate (default: every non-zero value present in either map).
        names: label names (e.g. from :func:`~omnireg.evaluation.labels.read_label_table`); missing
            names become ``"label <id>"``.
        distances: compute ``hd95_mm`` and ``hd_mm`` (NaN when False; the overlap is much faster).

    Returns:
        One :class:`LabelMetrics` per label, sorted by label id.

    Raises:
        TypeError: if ``fixed`` or ``warped`` is not an Image.
        ValueError: if they are on different grids or hold non-integer values.
    """
    a, b = _label_array(fixed, "fixed"), _label_array(warped, "warped")
    if not fixed.grid.same_as(warped.grid, atol=1e-4):
        raise ValueError(f"warped: expected a label map on the fixed grid {fixed.grid!r}, got {warped.grid!r}")
    if labels is None:
        found = np.union1d(np.unique(a), np.unique(b))
        wanted = [int(v) for v in found if v != 0]
    else:
        wanted = sorted({int(v) for v in labels})
    names = dict(names or {})
    voxel_mm3 = float(np.prod(fixed.grid.spacing))
    out = []
    for lab in wanted:
        fa, wb = a == lab, b == lab
        nf, nw = int(np.count_nonzero(fa)), int(np.count_nonzero(wb))
        inter = int(np.count_nonzero(fa & wb))
        if nf == 0 and nw == 0:
            logger.warning("label %d is absent from both label maps; its metrics are NaN", lab)
        hd95_mm = hd_mm = float("nan")
        if distances and nf and nw:
            hd95_mm = hd95(fa, wb, fixed.grid)
            hd_mm = hausdorff_distance(fa, wb, fixed.grid)
        out.append(
            LabelMetrics(
                label=lab,
                name=str(names.get(lab, f"label {lab}")),
                dice=_ratio(2.0 * inter, nf + nw),
                iou=_ratio(inter, nf + nw - inter),
                hd95_mm=hd95_mm,
                hd_mm=hd_mm,
                fixed_volume_mm3=nf * voxel_mm3,
                warped_volume_mm3=nw * voxel_mm3,
            )
        )
    return out


def summarize_labels(metrics: Iterable[LabelMetrics]) -> dict[str, float]:
    """Unweighted means over labels of ``dice``, ``iou``, ``hd95_mm`` and ``hd_mm`` (NaNs skipped).

    Returns:
        ``{"dice": ..., "iou": ..., "hd95_mm": ..., "hd_mm": ..., "labels": count}``; a mean over no
        finite value is NaN.
    """
    items = list(metrics)
    out: dict[str, float] = {}
    for key in ("dice", "iou", "hd95_mm", "hd_mm"):
        vals = [getattr(m, key) for m in items if not math.isnan(getattr(m, key))]
        out[key] = float(np.mean(vals)) if vals else float("nan")
    out["labels"] = len(items)
    return out
