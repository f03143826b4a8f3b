"""Evaluation of registrations: overlap, surface distances, landmark errors, Jacobians, reports.

Everything is measured in world millimetres on the grids of the images involved:

* :func:`label_metrics`: Dice, IoU, HD95 and Hausdorff distance per label (names from
  :func:`read_label_table`); surface definitions in :mod:`omnireg.evaluation.surface`;
* :func:`target_registration_error`: ``|T(p) - q|`` for fixed landmarks ``p`` and moving landmarks ``q``
  (pull convention: the transform maps fixed points to moving points);
* :func:`jacobian_statistics`: folding (``det <= 0``) and log-Jacobian spread with the finite-difference
  scheme of ITK's ``DisplacementFieldJacobianDeterminantFilter`` (:mod:`omnireg.evaluation.jacobian`);
* :func:`inverse_consistency_error`: ``|B(A(x)) - x|``;
* :func:`build_report`, :func:`format_report`, :func:`write_report`: tables, JSON and CSV.
"""

from . import jacobian
from .jacobian import (
    InverseConsistency,
    JacobianStats,
    displacement_on_grid,
    inverse_consistency_error,
    jacobian_determinant,
    jacobian_statistics,
)
from .labels import read_label_table
from .overlap import LabelMetrics, dice_score, iou_score, label_metrics, summarize_labels
from .report import build_report, format_report, write_report
from .surface import boundary, hausdorff_distance, hd95, surface_distances
from .tre import TREResult, map_points, target_registration_error

__all__ = [
    "LabelMetrics",
    "dice_score",
    "iou_score",
    "label_metrics",
    "summarize_labels",
    "read_label_table",
    "boundary",
    "surface_distances",
    "hd95",
    "hausdorff_distance",
    "TREResult",
    "map_points",
    "target_registration_error",
    *jacobian.__all__,
    "build_report",
    "format_report",
    "write_report",
]
