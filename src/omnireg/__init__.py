"""omnireg: medical image registration with learnable similarity measures, in world coordinates.

``omnireg.register(fixed, moving, ...)`` registers two images (or files) as ``omnireg register`` does and
returns a result whose ``save(out_dir)`` writes the same outputs (:func:`omnireg.pipeline.register`).

The names below are loaded on first use (``from omnireg import Grid`` works as usual), so that
``import omnireg`` and the ``omnireg --help``/``--version`` commands do not import PyTorch.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version as _version
from typing import Any

try:
    __version__ = _version("omnireg")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

#: exported name -> the subpackage that defines it
_LAZY = {
    **dict.fromkeys(("Grid", "Image", "Interp", "Padding", "Space", "sample", "sample_world"), ".core"),
    **dict.fromkeys(
        ("Transform", "Identity", "Translation", "Rigid", "Similarity", "Affine", "DisplacementField",
         "StationaryVelocityField", "BSplineTransform", "Composite", "compose", "invert", "resample",
         "transform_points", "warp"),
        ".transforms",
    ),
    "register": ".pipeline",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'omnireg' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
