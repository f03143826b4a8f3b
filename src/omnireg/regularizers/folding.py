"""Folding penalty: penalises non-positive Jacobian determinants of ``T(x) = x + u(x)``.

Convention:
    ``u`` ``(N, D, *S)`` is a displacement in **world mm** (components along world axes) on the voxel
    centres of ``grid`` (a :class:`~omnireg.core.grid.Grid` or a spacing tuple in mm for an axis-aligned
    grid). ``det(I + J_u)`` is computed by
    :func:`~omnireg.regularizers.finite_differences.jacobian_determinant_from_displacement`
    (central differences inside, one-sided at the borders; world mm, so independent of the grid's
    orientation). For counting folded voxels (e.g. Learn2Reg's NDV) use the determinant directly; this
    module gives a differentiable penalty.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .finite_differences import GridLike, jacobian_determinant_from_displacement

__all__ = ["folding_penalty", "FoldingPenalty"]


def _check_eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps: expected a real number, got {type(eps).__name__}")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps: expected a finite value >= 0, got {eps!r}")
    return float(eps)


def folding_penalty(u: torch.Tensor, grid: GridLike, *, eps: float = 0.01) -> torch.Tensor:
    """Mean squared hinge on the Jacobian determinant: ``mean_x relu(eps - det(I + J_u(x)))^2``.

    Zero wherever ``det(I + J_u) >= eps`` (in particular for any smooth small field, whose determinant
    is close to 1), and growing quadratically as the determinant falls below ``eps``; ``eps > 0`` keeps a
    margin so that nearly singular voxels are pushed back before they fold. The penalty is continuous
    with a continuous gradient.

    Args:
        u: displacement ``(N, D, *S)`` in world mm (components along world axes) on ``grid``.
        grid: the field's :class:`Grid`, or ``D`` spacings in mm for an axis-aligned grid.
        eps: threshold on the determinant (``>= 0``); 0 penalises only ``det < 0``.

    Returns:
        ``(N,)`` in the dtype and device of ``u``, ``>= 0``.

    Raises:
        TypeError: if ``u`` is not a floating tensor, ``grid`` or ``eps`` has the wrong type.
        ValueError: on a wrong shape of ``u``, a grid that does not match it, or a negative ``eps``.

    Shape:
        ``u``: ``(N, D, *S)`` -> ``(N,)``.

    Example:
        >>> u = torch.zeros(1, 2, 3, 3)
        >>> u[:, 0] = -2.0 * torch.arange(3.0)[:, None]  # T mirrors axis 0: det = -1 everywhere
        >>> folding_penalty(u, (1.0, 1.0), eps=0.0)
        tensor([1.])
    """
    eps = _check_eps(eps)
    det = jacobian_determinant_from_displacement(u, grid)
    return F.relu(eps - det).square().flatten(1).mean(dim=1)


class FoldingPenalty(nn.Module):
    """Module form of :func:`folding_penalty`.

    Args:
        eps: threshold on the Jacobian determinant (``>= 0``).
    """

    def __init__(self, *, eps: float = 0.01) -> None:
        super().__init__()
        self.eps = _check_eps(eps)

    def forward(self, u: torch.Tensor, grid: GridLike) -> torch.Tensor:
        """Args: ``u`` ``(N, D, *S)`` displacement in world mm; ``grid`` its Grid or spacings (mm)."""
        return folding_penalty(u, grid, eps=self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps:g}"
