"""Training utilities: synthetic deformations and contrasts (known-truth cases), augmentation."""

from .randconv import RandConvConfig, RandConvNonlinearity, RandomConvolution, random_convolution
from .synthetic import KnownCase, affine_matrix, bias_field, make_known_case, smooth_displacement, t2_like_remap

__all__ = [
    "RandConvConfig",
    "RandConvNonlinearity",
    "RandomConvolution",
    "random_convolution",
    "KnownCase",
    "affine_matrix",
    "bias_field",
    "make_known_case",
    "smooth_displacement",
    "t2_like_remap",
]
