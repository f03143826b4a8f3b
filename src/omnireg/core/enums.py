"""String options of omnireg, each listed once as an enum.

Every public function that takes one of these options accepts either the enum member or its
string value; :func:`as_enum` converts and raises a ``ValueError`` that names the argument and
lists the valid values.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

__all__ = ["Interp", "Padding", "Space", "as_enum"]


class Interp(str, Enum):
    """Interpolation used when an image is sampled at continuous points."""

    NEAREST = "nearest"
    LINEAR = "linear"
    CUBIC = "cubic"  # cubic B-spline (image prefiltered so the spline interpolates the samples)


class Padding(str, Enum):
    """Value returned for points outside the image.

    ``ZEROS``: zero outside; ``BORDER``: the value of the nearest border voxel.
    """

    ZEROS = "zeros"
    BORDER = "border"


class Space(str, Enum):
    """The three coordinate spaces of a grid (see :mod:`omnireg.core.grid`)."""

    VOXEL = "voxel"
    NORMALIZED = "normalized"
    WORLD = "world"


E = TypeVar("E", bound=Enum)


def as_enum(value: object, enum: type[E], name: str) -> E:
    """Return ``value`` as a member of ``enum``.

    Args:
        value: an enum member or its string value (case-insensitive).
        enum: the enum class.
        name: the argument's name, used in the error message.

    Raises:
        ValueError: if ``value`` is not one of the enum's values.
    """
    if isinstance(value, enum):
        return value
    if isinstance(value, str):
        try:
            return enum(value.lower())
        except ValueError:
            pass
    valid = ", ".join(repr(m.value) for m in enum)
    raise ValueError(f"{name}: expected one of {valid}, got {value!r}")
