"""Transforms: fixed-space world points (RAS mm) -> moving-space world points, and pull warping.

Every transform is a batched ``torch.nn.Module``, 2D or 3D, differentiable in its parameters.
``warped(x) = moving(T(x))`` for the voxel centres ``x`` of the fixed grid; ``compose(a, b) = a ∘ b``.
"""

from .base import Transform
from .compose import Composite, compose, invert
from .dense import DisplacementField
from .linear import Affine, Identity, LinearTransform, Rigid, Similarity, Translation, rotation_matrix
from .warp import moving_voxel_points, resample, transform_points, warp

__all__ = [
    "Transform",
    "LinearTransform",
    "Identity",
    "Translation",
    "Rigid",
    "Similarity",
    "Affine",
    "rotation_matrix",
    "DisplacementField",
    "Composite",
    "compose",
    "invert",
    "warp",
    "resample",
    "transform_points",
    "moving_voxel_points",
]
