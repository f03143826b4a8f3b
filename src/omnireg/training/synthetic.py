"""Known-truth registration cases: a known transform applied to an image, optional contrast change.

The ground truth ``T_true`` maps fixed-space world points to moving-space world points (the pull
mapping omnireg estimates), so the moving image is built as ``moving(y) = source(T_true^-1(y))`` on its own
grid, and the target registration error of an estimate ``T`` at fixed points ``x`` is ``|T(x) - T_true(x)|``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..core import Grid, Image
from ..core.filters import gaussian_blur

__all__ = ["KnownCase", "affine_matrix", "smooth_displacement", "t2_like_remap", "bias_field", "make_known_case"]


def _rotation(angles_rad: Sequence[float]) -> np.ndarray:
    """Rotation from angles about world x, y, z (3D: R = Rz Ry Rx) or one angle (2D)."""
    if len(angles_rad) == 1:
        a = angles_rad[0]
        return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    ax, ay, az = angles_rad
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def affine_matrix(
    *,
    ndim: int,
    rotation_deg: Sequence[float] | float = 0.0,
    translation_mm: Sequence[float] | float = 0.0,
    scale: Sequence[float] | float = 1.0,
    shear: float = 0.0,
    center: Sequence[float] | None = None,
) -> np.ndarray:
    """A ``(D+1, D+1)`` world matrix ``x -> R S H (x - c) + c + t`` (rotation about world axes in degrees)."""
    nrot = 1 if ndim == 2 else 3
    rot = np.broadcast_to(np.asarray(rotation_deg, dtype=np.float64), (nrot,))
    r = _rotation([math.radians(a) for a in rot])
    s = np.diag(np.broadcast_to(np.asarray(scale, dtype=np.float64), (ndim,)))
    h = np.eye(ndim)
    h[0, 1] = shear
    a = r @ s @ h
    c = np.zeros(ndim) if center is None else np.asarray(center, dtype=np.float64)
    t = np.broadcast_to(np.asarray(translation_mm, dtype=np.float64), (ndim,))
    m = np.eye(ndim + 1)
    m[:ndim, :ndim] = a
    m[:ndim, ndim] = c + t - a @ c
    return m


def smooth_displacement(
    grid: Grid, *, max_mm: float, smoothness_mm: float = 20.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A random smooth world-mm displacement ``(1, D, *S)`` on ``grid`` whose largest vector norm is ``max_mm``.

    Independent normal values on a coarse control grid of spacing ``smoothness_mm`` (same field of view and
    direction as ``grid``) are interpolated with cubic B-splines onto ``grid`` and rescaled, so the field is
    equally smooth everywhere (no border artefacts). Keep ``max_mm`` well below ``smoothness_mm`` for a
    diffeomorphic (non-folding) field.
    """
    from ..core import sample

    g = generator or torch.Generator().manual_seed(0)
    coarse = grid.with_spacing([max(float(smoothness_mm), s) for s in grid.spacing])
    noise = torch.randn(1, grid.ndim, *coarse.shape, generator=g, dtype=torch.float64)
    pts = coarse.transform_points(grid.points("world", dtype=torch.float64), "world", "voxel").unsqueeze(0)
    u = sample(noise, pts, interp="cubic", padding="border")
    norm = u.norm(dim=1).max()
    return (u * (max_mm / norm)).float()


def t2_like_remap(x: torch.Tensor) -> torch.Tensor:
    """A non-monotone intensity remap of data scaled to [0, 1] (T1 -> T2-like: dark background, CSF bright,
    grey matter brighter than white matter): ``y = 0.9 * exp(-((x - 0.18)/0.12)^2) + 0.5 * exp(-((x - 0.55)/0.2)^2)``,
    zero background kept.
    """
    y = 0.9 * torch.exp(-(((x - 0.18) / 0.12) ** 2)) + 0.5 * torch.exp(-(((x - 0.55) / 0.2) ** 2))
    return torch.where(x > 0.02, y, torch.zeros_like(y))


def bias_field(grid: Grid, *, strength: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    """A smooth multiplicative bias ``(1, 1, *S)`` in ``[1 - strength, 1 + strength]`` (low-order random field)."""
    g = generator or torch.Generator().manual_seed(1)
    noise = torch.randn(1, 1, *grid.shape, generator=g, dtype=torch.float64)
    b = gaussian_blur(noise, [max(grid.extent_mm()) / 4 / s for s in grid.spacing], truncate=2.0)
    b = (b - b.mean()) / (b.abs().max() + 1e-12)
    return (1 + strength * b).float()


@dataclass
class KnownCase:
    """A registration case with known truth: ``moving(T_true(x)) ≈ fixed(x)``."""

    fixed: Image
    moving: Image
    true_matrix: np.ndarray
    true_displacement: torch.Tensor | None  # (1, D, *S) world mm on fixed.grid, applied before true_matrix
    moving_labels: Image | None = None

    def true_points(self, points: torch.Tensor) -> torch.Tensor:
        """``T_true`` of world points ``(1, *P, D)`` (float64)."""
        from ..transforms import Affine, DisplacementField, compose

        lin = Affine.from_matrix(torch.as_tensor(self.true_matrix), dtype=torch.float64, learnable=False)
        if self.true_displacement is None:
            return lin(points.double())
        t = compose(lin, DisplacementField(self.true_displacement.double(), self.fixed.grid, learnable=False))
        return t(points.double())

    def target_error(self, transform, *, mask: torch.Tensor | None = None) -> torch.Tensor:
        """|T(x) - T_true(x)| in mm at the fixed voxel centres ``(*S)`` (masked to ``mask > 0`` if given, flattened)."""
        x = self.fixed.grid.points("world", dtype=torch.float64).unsqueeze(0)
        est = transform(x.float()).double()
        err = (est - self.true_points(x)).norm(dim=-1)[0]
        return err[mask > 0] if mask is not None else err.reshape(-1)


def make_known_case(
    source: Image,
    *,
    matrix: np.ndarray,
    displacement: torch.Tensor | None = None,
    moving_source: Image | None = None,
    moving_grid: Grid | None = None,
    labels: Image | None = None,
    remap: bool = False,
    bias: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
) -> KnownCase:
    """Build a case: ``fixed = source``; ``moving = moving_source ∘ T_true^-1`` on ``moving_grid``.

    Args:
        source: the fixed image.
        matrix: the true linear part (fixed world -> moving world).
        displacement: optional true deformation ``(1, D, *S)`` on ``source.grid`` (applied to fixed points first).
        moving_source: the image (co-registered with ``source``) resampled into the moving space: e.g. another
            contrast of the same anatomy (default: ``source``).
        moving_grid: grid of the moving image (default: the fixed grid).
        labels: optional label map on ``source.grid`` carried into the moving space (nearest neighbour).
        remap: apply :func:`t2_like_remap` to the moving intensities (after scaling them to [0, 1]).
        bias: strength of a multiplicative bias field on the moving image.
        noise: standard deviation of Gaussian noise (relative to the [0, 1] range).
        seed: seed of the bias and noise.
    """

    with torch.no_grad():
        return _make_known_case(source, matrix, displacement, moving_source, moving_grid, labels, remap, bias, noise, seed)


def _make_known_case(source, matrix, displacement, moving_source, moving_grid, labels, remap, bias, noise, seed) -> KnownCase:
    from ..transforms import Affine, DisplacementField, compose, resample

    g = torch.Generator().manual_seed(seed)
    grid = moving_grid or source.grid
    lin = Affine.from_matrix(torch.as_tensor(matrix), dtype=torch.float64, learnable=False)
    true = lin if displacement is None else compose(lin, DisplacementField(displacement.double(), source.grid, learnable=False))
    inv = true.inverse() if displacement is None else _dense_inverse(true, source.grid, grid)
    src = moving_source or source
    moving = resample(src.to(torch.float32), inv, onto=grid, interp="cubic")
    data = moving.data.clamp(min=0)
    hi = float(torch.quantile(data.reshape(-1)[:: max(1, data.numel() // 500000)], 0.995))
    data = data / max(hi, 1e-6)
    if remap:
        data = t2_like_remap(data)
    if bias:
        data = data * bias_field(grid, strength=bias, generator=g)[0]
    if noise:
        data = data + noise * torch.randn(data.shape, generator=g)
    moving = moving.with_data(data.float())
    mlabels = None if labels is None else resample(labels, inv, onto=grid, interp="nearest")
    return KnownCase(source, moving, np.asarray(matrix, dtype=np.float64), displacement, mlabels)


def _dense_inverse(true, fixed_grid: Grid, moving_grid: Grid):
    """Inverse of ``A ∘ (x + u)`` as a transform on the moving grid: ``(x + u)^-1 ∘ A^-1``."""
    from ..transforms import compose

    lin, field = true.transforms if hasattr(true, "transforms") else (None, None)
    return compose(field.inverse(), lin.inverse())
