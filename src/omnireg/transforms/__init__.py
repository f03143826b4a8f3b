"""Transforms: fixed-space world points (RAS mm) -> moving-space world points, and pull warping.

Every transform is a batched ``torch.nn.Module``, 2D or 3D, differentiable in its parameters.
``warped(x) = moving(T(x))`` for the voxel centres ``x`` of the fixed grid; ``compose(a, b) = a ∘ b``.
"""

from . import linear
from .base import Transform
from .bspline import BSplineTransform, bspline_kernel, control_grid_for
from .compose import Composite, compose, invert
from .dense import DisplacementField
from .jacobian import jacobian_determinant, jacobian_matrix
from .linear import Affine, Identity, LinearTransform, Rigid, Similarity, Translation, rotation_matrix
from .svf import StationaryVelocityField, integrate_velocity
from .warp import moving_voxel_points, resample, transform_points, warp

__all__ = [
    "Transform",
    *linear.__all__,
    "DisplacementField",
    "StationaryVelocityField",
    "integrate_velocity",
    "BSplineTransform",
    "bspline_kernel",
    "control_grid_for",
    "jacobian_matrix",
    "jacobian_determinant",
    "Composite",
    "compose",
    "invert",
    "warp",
    "resample",
    "transform_points",
    "moving_voxel_points",
]
