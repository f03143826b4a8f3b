"""omnireg: medical image registration with learnable similarity measures, in world coordinates."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("omnireg")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from .core import Grid, Image, Interp, Padding, Space, sample, sample_world

__all__ = ["Grid", "Image", "Interp", "Padding", "Space", "sample", "sample_world", "__version__"]

from .transforms import (  # noqa: E402
    Affine,
    BSplineTransform,
    Composite,
    DisplacementField,
    Identity,
    Rigid,
    Similarity,
    StationaryVelocityField,
    Transform,
    Translation,
    compose,
    invert,
    resample,
    transform_points,
    warp,
)

__all__ += [
    "Transform",
    "Identity",
    "Translation",
    "Rigid",
    "Similarity",
    "Affine",
    "DisplacementField",
    "StationaryVelocityField",
    "BSplineTransform",
    "Composite",
    "compose",
    "invert",
    "resample",
    "transform_points",
    "warp",
]
