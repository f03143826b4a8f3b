"""Landmarks: files (CSV, Slicer ``.fcsv``/``.mrk.json``, elastix points) and fits from paired points.

All points are world RAS mm ``(P, D)`` float64 in memory (LPS only inside the file readers and
writers). Fits follow the pull convention of omnireg's transforms: from fixed-image landmarks ``p_i``
and moving-image landmarks ``q_i`` they return ``T`` with ``T(p_i) ≈ q_i`` (fixed -> moving), the
transform that warps the moving image onto the fixed grid.
"""

from .files import CoordinateSystem, Landmarks, pair_landmarks, read_landmarks, write_landmarks
from .fit import LinearModel, fit_affine, fit_linear, fit_rigid, fit_similarity
from .tps import ThinPlateSpline, tps_kernel

__all__ = [
    "CoordinateSystem",
    "Landmarks",
    "read_landmarks",
    "write_landmarks",
    "pair_landmarks",
    "LinearModel",
    "fit_rigid",
    "fit_similarity",
    "fit_affine",
    "fit_linear",
    "ThinPlateSpline",
    "tps_kernel",
]
