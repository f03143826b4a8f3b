"""Core: grids, the three coordinate spaces, images, sampling and string options."""

from .enums import Interp, Padding, Space, as_enum
from .grid import Grid
from .image import Image
from .sampling import bspline_prefilter, sample, sample_world

__all__ = ["Grid", "Image", "Interp", "Padding", "Space", "as_enum", "bspline_prefilter", "sample", "sample_world"]
