"""Target registration error (TRE) of paired landmarks, in world mm.

Convention (pull, as every omnireg transform): a transform ``T`` maps fixed-space world points to
moving-space world points, so a landmark ``p`` of the **fixed** image is carried to ``T(p)`` in the
moving image and compared with its partner ``q`` there::

    TRE_i = |T(p_i) - q_i|        (world RAS mm)

With no transform (``T`` = identity) this is the initial landmark distance. Landmarks of the moving
image would need ``T^-1``; see USERS.md item 5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.arrays import as_homogeneous_matrix, as_point_array
from ..transforms.base import Transform, check_single_transform

__all__ = ["TREResult", "map_points", "target_registration_error"]


def map_points(transform: Transform | np.ndarray | torch.Tensor | None, points: np.ndarray) -> np.ndarray:
    """``T(p)`` for world points ``(P, D)`` (float64), ``T`` a Transform, a matrix or None (identity).

    Args:
        transform: a :class:`~omnireg.transforms.Transform` of batch size 1, a homogeneous
            ``(D+1, D+1)`` world (RAS mm) matrix ``moving_from_fixed``, or None.
        points: ``(P, D)`` fixed-space world points in mm.

    Returns:
        ``(P, D)`` float64 moving-space world points in mm.

    Raises:
        TypeError, ValueError: on another transform type, a batch size above 1 or a dimension mismatch.
    """
    d = points.shape[1]
    if transform is None:
        return points.copy()
    if isinstance(transform, Transform):
        check_single_transform(transform, d, "transform")
        with torch.no_grad():
            x = torch.as_tensor(points, dtype=torch.float64, device=transform.device)[None]
            return transform(x)[0].detach().cpu().numpy().astype(np.float64)
    if isinstance(transform, (np.ndarray, torch.Tensor)):
        m = as_homogeneous_matrix(transform, "transform", ndim=d)
        return points @ m[:d, :d].T + m[:d, d]
    raise TypeError(f"transform: expected a Transform, a ({d + 1}, {d + 1}) matrix or None, got {type(transform).__name__}")


@dataclass(frozen=True)
class TREResult:
    """Per-landmark errors and their statistics (mm).

    Attributes:
        distances_mm: ``(P,)`` ``|T(p_i) - q_i|`` in mm.
        mean_mm, median_mm, max_mm: statistics of ``distances_mm``.
        std_mm: population standard deviation (``ddof=0``) of ``distances_mm``.
    """

    distances_mm: np.ndarray
    mean_mm: float
    median_mm: float
    max_mm: float
    std_mm: float

    @property
    def count(self) -> int:
        """Number of landmark pairs P."""
        return int(self.distances_mm.size)

    def to_dict(self, prefix: str = "tre_") -> dict:
        """``{prefix + "mean_mm": ..., "median_mm", "max_mm", "std_mm", "count"}`` (floats and an int)."""
        return {
            f"{prefix}mean_mm": self.mean_mm,
            f"{prefix}median_mm": self.median_mm,
            f"{prefix}max_mm": self.max_mm,
            f"{prefix}std_mm": self.std_mm,
            "count": self.count,
        }


def target_registration_error(
    fixed_points: object,
    moving_points: object,
    transform: Transform | np.ndarray | torch.Tensor | None = None,
) -> TREResult:
    """TRE of paired landmarks: ``|T(p_i) - q_i|`` in world mm (module docstring).

    Args:
        fixed_points: ``(P, D)`` landmarks ``p_i`` in the fixed image, world RAS mm.
        moving_points: ``(P, D)`` corresponding landmarks ``q_i`` in the moving image, world RAS mm.
        transform: the fixed -> moving transform (a Transform of batch size 1 or a ``(D+1, D+1)``
            world matrix); None for the identity (the distance before registration).

    Returns:
        A :class:`TREResult`.

    Raises:
        TypeError, ValueError: on malformed points, unequal counts, no points or a mismatching transform.

    Example:
        >>> p = np.zeros((2, 3)); q = p + [3.0, 4.0, 0.0]
        >>> target_registration_error(p, q).mean_mm
        5.0
    """
    p = as_point_array(fixed_points, "fixed_points")
    q = as_point_array(moving_points, "moving_points", ndim=p.shape[1])
    if p.shape[0] != q.shape[0]:
        raise ValueError(f"moving_points: expected {p.shape[0]} points (as many as fixed_points), got {q.shape[0]}")
    if p.shape[0] == 0:
        raise ValueError("fixed_points: expected at least one landmark pair, got none")
    dist = np.linalg.norm(map_points(transform, p) - q, axis=1)
    return TREResult(
        distances_mm=dist,
        mean_mm=float(dist.mean()),
        median_mm=float(np.median(dist)),
        max_mm=float(dist.max()),
        std_mm=float(dist.std()),
    )
