"""Image and transform files: the only place of omnireg that knows nibabel, SimpleITK and RAS vs LPS.

Everything returned here is in omnireg's conventions (world RAS mm, tensors ``(C, *S)`` in
tensor-axis order, transforms mapping fixed to moving world points); everything written speaks ITK
(LPS transform files and displacement fields that SimpleITK, ANTs and 3D Slicer apply unchanged).
Writers are atomic and refuse to overwrite an existing file unless ``force=True``.
"""

from . import itk_transforms
from ._files import atomic_output, json_ready, staged_outputs, write_bytes_atomic, write_json_atomic, write_text_atomic

#: names loaded on first use, with the module that holds them: the readers and writers need nibabel and
#: SimpleITK, which the atomic writers (used by the model store, on machines without those libraries) do not
_LAZY = {
    **{name: ".images" for name in ("image_info", "load_image", "save_image")},
    **{name: ".itk_transforms" for name in (
        "DisplacementItem", "FieldPrecision", "LinearItem", "TransformKind", "read_composite_h5",
        "read_displacement_field", "read_linear_transform", "read_transform_file", "write_composite_h5",
        "write_displacement_field", "write_linear_transform")},
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
