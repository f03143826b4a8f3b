"""String options of :mod:`omnireg.similarity`, each listed once as an enum.

Every function and module of the package accepts either the enum member or its string value
(case-insensitive); :func:`omnireg.core.enums.as_enum` converts and names the argument on error.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["EpsMode", "Kernel", "LengthUnit", "Metric", "ParzenWindow", "Sampling"]


class Metric(str, Enum):
    """Names of the similarity measures known to :func:`omnireg.similarity.get_similarity`.

    The learned measures (``disa``, ``mad``, ``deepsim``) are listed here so that their names are
    fixed in one place; their factories are registered by the modules that implement them
    (:func:`omnireg.similarity.register_similarity`).
    """

    MSE = "mse"
    NCC = "ncc"
    LNCC = "lncc"
    MI = "mi"
    NMI = "nmi"
    NGF = "ngf"
    LC2 = "lc2"
    MIND = "mind"
    DISA = "disa"
    MAD = "mad"
    DEEPSIM = "deepsim"


class Kernel(str, Enum):
    """Window of local statistics: ``box`` (uniform) or ``gaussian``.

    A window of width ``w`` voxels is a box of ``w`` voxels (rounded to the nearest odd integer, at
    least 1) or a Gaussian whose full width at half maximum is ``w`` voxels
    (``sigma = w / (2 sqrt(2 ln 2))``, truncated at 3 sigma).
    """

    BOX = "box"
    GAUSSIAN = "gaussian"


class LengthUnit(str, Enum):
    """Unit of a window size, radius or dilation: millimetres (needs ``spacing``) or voxels."""

    MM = "mm"
    VOXEL = "voxel"


class EpsMode(str, Enum):
    """How the NGF edge parameter is read: ``absolute`` (intensity per mm) or ``relative``.

    ``relative``: ``eps`` is multiplied by the weighted mean gradient norm of each image.
    """

    ABSOLUTE = "absolute"
    RELATIVE = "relative"


class ParzenWindow(str, Enum):
    """Parzen window of a joint histogram: ``box`` (zero-order B-spline) or ``bspline`` (cubic).

    ``box`` puts each sample in one bin and is not differentiable in the intensity;
    ``bspline`` spreads it over 4 bins and is twice continuously differentiable.
    """

    BOX = "box"
    BSPLINE = "bspline"


class Sampling(str, Enum):
    """How the registration engine evaluates a measure (:class:`omnireg.similarity.EngineTraits`).

    ``points``: point-wise (MSE, NCC, MI, NMI): a seeded subset of the fixed voxels may stand for all of them in
    linear stages. ``dense``: a neighbourhood measure (LNCC, NGF, LC2) evaluated on the whole level grid.
    ``features``: feature maps computed once per level (MIND descriptors, learned features) and compared
    point-wise. ``patches``: the measure's own fixed-space sample locations (MAD), linear stages only.
    """

    POINTS = "points"
    DENSE = "dense"
    FEATURES = "features"
    PATCHES = "patches"
