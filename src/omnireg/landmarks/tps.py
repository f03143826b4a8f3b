"""Thin-plate spline transform fitted to paired landmarks.

Convention (pull): landmarks ``p_i`` of the **fixed** image and ``q_i`` of the **moving** image (world
RAS mm); the spline maps fixed to moving world points, ``T(p_i) = q_i`` (exactly for
``regularization=0``), so it warps the moving image onto the fixed grid and carries fixed landmarks
to the moving image, like every omnireg :class:`~omnireg.transforms.Transform`::

    T(x) = A x + b + sum_i w_i U(|x - p_i|)
    U(r) = r              (3D)
    U(r) = r^2 log r      (2D; U(0) = 0)

with ``(D,)`` weights ``w_i`` and the affine part ``A x + b``. With the kernel matrix
``K_ij = U(|p_i - p_j|)`` and ``P`` the ``(n, D+1)`` rows ``[p_i, 1]``, the coefficients solve::

    [ K + σ λ I   P ] [ W ]   [ Q ]
    [ P^T         0 ] [ c ] = [ 0 ]          (c: rows A^T, then b)

where ``σ = +1`` in 2D and ``σ = -1`` in 3D (``σ U`` is the conditionally positive definite form of
the kernel, so every ``λ >= 0`` is a smoothing spline: it minimises
``sum_i |T(p_i) - q_i|^2 + λ E(T)`` for the bending energy ``E`` up to a constant factor).
``λ = 0`` interpolates; ``λ -> ∞`` tends to the least-squares affine fit. For affinely related
landmarks ``W = 0`` and ``T`` is that affine map for every ``λ``. ``λ`` has the units of ``U``
(mm in 3D, mm^2 in 2D).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..core.arrays import as_point_array
from ..transforms.base import Transform

__all__ = ["ThinPlateSpline", "tps_kernel"]

logger = logging.getLogger(__name__)

_CHUNK_ENTRIES = 1 << 21  # query points x control points evaluated per chunk (bounds the memory)


def tps_kernel(r2: torch.Tensor | np.ndarray, ndim: int) -> torch.Tensor | np.ndarray:
    """The radial kernel ``U`` evaluated from **squared** distances ``r2`` (module docstring).

    ``U = sqrt(r2)`` in 3D and ``U = r2 log(r2) / 2 = r^2 log r`` in 2D, with ``U(0) = 0``; finite
    gradients everywhere except the 3D kernel's at ``r = 0`` (set to 0 there).
    """
    if ndim not in (2, 3):
        raise ValueError(f"ndim: expected 2 or 3, got {ndim!r}")
    if isinstance(r2, np.ndarray):
        safe = np.where(r2 > 0, r2, 1.0)
        val = np.sqrt(safe) if ndim == 3 else 0.5 * safe * np.log(safe)
        return np.where(r2 > 0, val, 0.0)
    pos = r2 > 0
    safe = torch.where(pos, r2, torch.ones_like(r2))
    val = torch.sqrt(safe) if ndim == 3 else 0.5 * safe * torch.log(safe)
    return torch.where(pos, val, torch.zeros_like(val))


class ThinPlateSpline(Transform):
    """Thin-plate spline ``T`` with ``T(p_i) ≈ q_i`` (fixed -> moving world RAS mm; module docstring).

    Args:
        fixed_points: ``(P, D)`` landmarks ``p_i`` in the fixed image, world RAS mm (D = 2 or 3).
        moving_points: ``(P, D)`` corresponding landmarks ``q_i`` in the moving image.
        regularization: ``λ >= 0``; 0 interpolates the landmarks exactly.
        dtype: dtype of the stored coefficients (default float64; they are solved in float64).
        device: device of the stored coefficients.

    Raises:
        ValueError: on malformed or unpaired points, a negative ``regularization``, fewer than
            ``D + 1`` affinely independent landmarks, or a singular system (e.g. repeated landmarks
            with ``regularization=0``).

    Shape:
        ``forward``: ``(N, *P, D) -> (N, *P, D)``; batch size 1. :meth:`displacement` (from
        :class:`~omnireg.transforms.Transform`) gives the dense ``(1, D, *S)`` world-mm field on a grid.

    Example:
        >>> p = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
        >>> q = p + [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]
        >>> tps = ThinPlateSpline(p, q)
        >>> torch.allclose(tps(torch.as_tensor(p)[None])[0], torch.as_tensor(q))
        True
    """

    def __init__(
        self,
        fixed_points: object,
        moving_points: object,
        *,
        regularization: float = 0.0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        p = as_point_array(fixed_points, "fixed_points")
        q = as_point_array(moving_points, "moving_points")
        if q.shape != p.shape:
            raise ValueError(f"moving_points: expected shape {p.shape} (that of fixed_points, paired points), got {q.shape}")
        if isinstance(regularization, bool) or not isinstance(regularization, (int, float)) or not regularization >= 0:
            raise ValueError(f"regularization: expected a finite number >= 0, got {regularization!r}")
        if not np.isfinite(regularization):
            raise ValueError(f"regularization: expected a finite number >= 0, got {regularization!r}")
        n, d = p.shape
        super().__init__(d, 1)
        centred = p - p.mean(0)
        sv = np.linalg.svd(centred, compute_uv=False)
        if n < d + 1 or sv[-1] <= 1e-9 * max(sv[0], 1e-300):
            raise ValueError(
                f"fixed_points: a thin-plate spline needs at least {d + 1} affinely independent landmarks, "
                f"got {n} points"
            )
        self.regularization = float(regularization)
        coeffs = self._solve(p, q, self.regularization)
        self.register_buffer("control_points", torch.as_tensor(p, dtype=dtype, device=device))
        self.register_buffer("weights", torch.as_tensor(coeffs[:n], dtype=dtype, device=device))
        self.register_buffer("affine_coefficients", torch.as_tensor(coeffs[n:], dtype=dtype, device=device))

    @staticmethod
    def _solve(p: np.ndarray, q: np.ndarray, lam: float) -> np.ndarray:
        n, d = p.shape
        sigma = 1.0 if d == 2 else -1.0
        r2 = ((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)
        system = np.zeros((n + d + 1, n + d + 1))
        system[:n, :n] = tps_kernel(r2, d) + sigma * lam * np.eye(n)
        system[:n, n : n + d] = p
        system[:n, n + d] = 1.0
        system[n:, :n] = system[:n, n:].T
        rhs = np.zeros((n + d + 1, d))
        rhs[:n] = q
        if lam == 0:
            dup = np.argwhere(np.triu(r2 == 0, k=1))
            if dup.size:
                i, j = (int(v) for v in dup[0])
                raise ValueError(
                    f"fixed_points: landmarks {i} and {j} coincide; an interpolating thin-plate spline needs distinct "
                    "landmarks (use regularization > 0)"
                )
        try:
            return np.linalg.solve(system, rhs)
        except np.linalg.LinAlgError:
            raise ValueError("fixed_points: the thin-plate spline system is singular for these landmarks") from None

    # ------------------------------------------------------------------ parts
    def affine_matrix(self) -> np.ndarray:
        """The affine part ``[[A, b], [0, 1]]`` as a float64 ``(D+1, D+1)`` world RAS matrix."""
        c = self.affine_coefficients.detach().cpu().numpy().astype(np.float64)
        d = self.ndim
        m = np.eye(d + 1)
        m[:d, :d] = c[:d].T
        m[:d, d] = c[d]
        return m

    # ------------------------------------------------------------------ mapping
    def _transform(self, points: torch.Tensor) -> torch.Tensor:
        d = self.ndim
        ctrl = self.control_points.to(device=points.device, dtype=points.dtype)
        w = self.weights.to(device=points.device, dtype=points.dtype)
        c = self.affine_coefficients.to(device=points.device, dtype=points.dtype)
        flat = points.reshape(-1, d)
        step = max(1, _CHUNK_ENTRIES // ctrl.shape[0])
        out = []
        for chunk in flat.split(step):
            r2 = ((chunk[:, None, :] - ctrl[None, :, :]) ** 2).sum(-1)
            out.append(chunk @ c[:d] + c[d] + tps_kernel(r2, d) @ w)
        return torch.cat(out).reshape(points.shape)

    def extra_repr(self) -> str:
        return f"ndim={self.ndim}, landmarks={self.control_points.shape[0]}, regularization={self.regularization:g}"
