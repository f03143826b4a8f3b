"""Regularizers of displacement fields in world mm: diffusion, elastic, bending, folding, inverse consistency.

Every penalty takes a displacement ``u`` of shape ``(N, D, *S)`` in **world mm** (component ``i`` along
world axis ``i``, ``T(x) = x + u(x)``) on a grid (a :class:`~omnireg.core.grid.Grid`, any orientation, or
a spacing tuple in mm for an axis-aligned grid), returns ``(N,)`` and is minimised at the ideal field.
Each comes as a plain function and a thin :class:`torch.nn.Module` whose ``forward(u, grid)`` calls it.
Derivatives: finite differences in world mm, central inside and one-sided at the borders (see
:mod:`omnireg.regularizers.finite_differences`).
"""

from .finite_differences import (
    GridLike,
    displacement_hessian,
    displacement_jacobian,
    jacobian_determinant_from_displacement,
)
from .folding import FoldingPenalty, folding_penalty
from .inverse_consistency import InverseConsistencyPenalty, inverse_consistency_penalty
from .smoothness import (
    BendingEnergy,
    DiffusionPenalty,
    ElasticPenalty,
    bending_energy,
    diffusion_penalty,
    elastic_penalty,
)

__all__ = [
    "GridLike",
    "displacement_jacobian",
    "displacement_hessian",
    "jacobian_determinant_from_displacement",
    "diffusion_penalty",
    "elastic_penalty",
    "bending_energy",
    "folding_penalty",
    "inverse_consistency_penalty",
    "DiffusionPenalty",
    "ElasticPenalty",
    "BendingEnergy",
    "FoldingPenalty",
    "InverseConsistencyPenalty",
]
