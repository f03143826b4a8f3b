"""Smoothness penalties of a displacement field in world mm: diffusion, linear elasticity, bending energy.

Convention:
    ``u`` has shape ``(N, D, *S)``: displacement in **world mm**, component ``i`` along world axis ``i``,
    on the voxel centres of ``grid`` (a :class:`~omnireg.core.grid.Grid` of any orientation, or a
    spacing tuple in mm for an axis-aligned grid); ``T(x) = x + u(x)``. Derivatives are taken in world
    mm with the finite-difference scheme of :mod:`omnireg.regularizers.finite_differences` (central
    differences inside, one-sided at the borders). Every penalty is the **mean over voxels**, returns
    ``(N,)`` (one value per batch item), is ``>= 0`` and is minimised (0) by a constant field
    (a translation); the bending energy is also 0 for every affine field.

    The values are physical: the same field in world mm gives the same value on a rotated grid, and
    for the same voxel array doubling the spacing divides diffusion and elastic energy by 4 and the
    bending energy by 16.
"""

from __future__ import annotations

import torch
from torch import nn

from .finite_differences import GridLike, displacement_hessian, displacement_jacobian

__all__ = [
    "diffusion_penalty",
    "elastic_penalty",
    "bending_energy",
    "DiffusionPenalty",
    "ElasticPenalty",
    "BendingEnergy",
]


def _mean_over_voxels(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(dim=1)


def diffusion_penalty(u: torch.Tensor, grid: GridLike) -> torch.Tensor:
    """Diffusion (membrane) energy: ``mean_x sum_ij (du_i / dx_j)^2`` (dimensionless: (mm / mm)^2).

    Args:
        u: displacement ``(N, D, *S)`` in world mm (components along world axes) on ``grid``.
        grid: the field's :class:`Grid`, or ``D`` spacings in mm for an axis-aligned grid.

    Returns:
        ``(N,)`` in the dtype and device of ``u``; 0 for a constant field, ``||A||_F^2`` for
        ``u(x) = A x + b``.

    Raises:
        TypeError: if ``u`` is not a floating tensor or ``grid`` has the wrong type.
        ValueError: on a wrong shape of ``u`` or a grid that does not match it.

    Shape:
        ``u``: ``(N, D, *S)`` -> ``(N,)``.

    Example:
        >>> u = torch.zeros(1, 2, 4, 4)
        >>> u[:, 1] = torch.arange(4.0)[:, None]  # u_1 = v_0 = x_0 / 2 with spacing 2 mm
        >>> diffusion_penalty(u, (2.0, 2.0))
        tensor([0.2500])
    """
    j = displacement_jacobian(u, grid)
    return _mean_over_voxels(j.square().sum(dim=(1, 2)))


def elastic_penalty(u: torch.Tensor, grid: GridLike, *, mu: float = 1.0, lam: float = 0.0) -> torch.Tensor:
    """Linear-elastic energy: ``mean_x [ mu * sum_ij eps_ij^2 + lam / 2 * (tr eps)^2 ]``.

    ``eps = (J_u + J_u^T) / 2`` is the infinitesimal strain of the world Jacobian ``J_u = du/dx``.
    With ``mu = 1, lam = 0`` this is the mean squared norm of the symmetric gradient.

    Args:
        u: displacement ``(N, D, *S)`` in world mm (components along world axes) on ``grid``.
        grid: the field's :class:`Grid`, or ``D`` spacings in mm for an axis-aligned grid.
        mu: first Lamé parameter (shear modulus), ``>= 0``.
        lam: second Lamé parameter lambda (``>= 0``; penalises volume change ``tr eps``).

    Returns:
        ``(N,)`` in the dtype and device of ``u``; 0 for a constant field.

    Raises:
        TypeError, ValueError: as :func:`diffusion_penalty`; ValueError for negative ``mu`` or ``lam``.

    Shape:
        ``u``: ``(N, D, *S)`` -> ``(N,)``.
    """
    _check_nonnegative(mu, "mu")
    _check_nonnegative(lam, "lam")
    j = displacement_jacobian(u, grid)
    eps = 0.5 * (j + j.transpose(1, 2))
    trace = torch.diagonal(eps, dim1=1, dim2=2).sum(dim=-1)
    energy = mu * eps.square().sum(dim=(1, 2)) + 0.5 * lam * trace.square()
    return _mean_over_voxels(energy)


def bending_energy(u: torch.Tensor, grid: GridLike) -> torch.Tensor:
    """Bending energy (thin-plate): ``mean_x sum_ijk (d2 u_i / dx_j dx_k)^2`` (1 / mm^2).

    The sum runs over all ordered pairs ``(j, k)``, so each mixed derivative is counted twice
    (in 2D: ``u_xx^2 + 2 u_xy^2 + u_yy^2`` per component).

    Args:
        u: displacement ``(N, D, *S)`` in world mm (components along world axes) on ``grid``.
        grid: the field's :class:`Grid`, or ``D`` spacings in mm for an axis-aligned grid.

    Returns:
        ``(N,)`` in the dtype and device of ``u``; 0 for every affine field ``u(x) = A x + b``.

    Raises:
        TypeError, ValueError: as :func:`diffusion_penalty`.

    Shape:
        ``u``: ``(N, D, *S)`` -> ``(N,)``.
    """
    h = displacement_hessian(u, grid)
    return _mean_over_voxels(h.square().sum(dim=(1, 2, 3)))


def _check_nonnegative(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    if not value >= 0:
        raise ValueError(f"{name}: expected a value >= 0, got {value!r}")
    return float(value)


class DiffusionPenalty(nn.Module):
    """Module form of :func:`diffusion_penalty`; ``forward(u, grid) -> (N,)``."""

    def forward(self, u: torch.Tensor, grid: GridLike) -> torch.Tensor:
        """Args: ``u`` ``(N, D, *S)`` displacement in world mm; ``grid`` its Grid or spacings (mm)."""
        return diffusion_penalty(u, grid)


class ElasticPenalty(nn.Module):
    """Module form of :func:`elastic_penalty` holding the Lamé parameters.

    Args:
        mu: shear modulus (``>= 0``).
        lam: second Lamé parameter (``>= 0``).
    """

    def __init__(self, *, mu: float = 1.0, lam: float = 0.0) -> None:
        super().__init__()
        self.mu = _check_nonnegative(mu, "mu")
        self.lam = _check_nonnegative(lam, "lam")

    def forward(self, u: torch.Tensor, grid: GridLike) -> torch.Tensor:
        """Args: ``u`` ``(N, D, *S)`` displacement in world mm; ``grid`` its Grid or spacings (mm)."""
        return elastic_penalty(u, grid, mu=self.mu, lam=self.lam)

    def extra_repr(self) -> str:
        return f"mu={self.mu:g}, lam={self.lam:g}"


class BendingEnergy(nn.Module):
    """Module form of :func:`bending_energy`; ``forward(u, grid) -> (N,)``."""

    def forward(self, u: torch.Tensor, grid: GridLike) -> torch.Tensor:
        """Args: ``u`` ``(N, D, *S)`` displacement in world mm; ``grid`` its Grid or spacings (mm)."""
        return bending_energy(u, grid)
