"""Image and transform files: the only place of omnireg that knows nibabel, SimpleITK and RAS vs LPS.

Everything returned here is in omnireg's conventions (world RAS mm, tensors ``(C, *S)`` in
tensor-axis order, transforms mapping fixed to moving world points); everything written speaks ITK
(LPS transform files and displacement fields that SimpleITK, ANTs and 3D Slicer apply unchanged).
Writers are atomic and refuse to overwrite an existing file unless ``force=True``.
"""

from ..core.files import atomic_output, json_ready, staged_outputs, write_bytes_atomic, write_json_atomic, write_text_atomic
from . import itk_transforms
from .images import image_info, load_image, save_image
from .itk_transforms import *  # noqa: F401,F403  (its __all__)

__all__ = [
    "load_image",
    "save_image",
    "image_info",
    *itk_transforms.__all__,
    "atomic_output",
    "staged_outputs",
    "write_bytes_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "json_ready",
]
