"""Similarity measures for registration and training, 2D and 3D, batched and differentiable.

Interface:
    Every measure is a plain function ``f(fixed, moving, *, mask=None, spacing=None, ...) -> (N,)``
    returning a **similarity** (higher is better; the formula is in its docstring), and a thin
    :class:`SimilarityMeasure` module holding the options, with
    ``forward(fixed, moving, mask=None, *, spacing=None) -> (N,)`` (the similarity) and
    ``loss(...) = -forward(...)`` (minimised at alignment). :func:`get_similarity` builds a module by
    name (:class:`Metric`); :func:`register_similarity` adds learned measures (``disa``, ``mad``,
    ``deepsim``) or new ones.

Convention:
    - ``fixed`` and ``moving`` are ``(N, C, *S)`` on the **same** grid: the fixed image's voxel grid,
      the moving image already warped onto it (pull). A batch of 1 is broadcast to the other's batch.
    - ``spacing`` is in mm per tensor axis (``None`` = 1 mm); it matters for gradients (NGF, LC2's
      ``|grad f|``) and for sizes given in mm (LNCC ``window_unit="mm"``, MIND ``unit="mm"``).
    - New tensors follow the inputs' dtype and device; every measure is differentiable in both images
      (MI/NMI in an image only with its ``bspline`` Parzen window) and passes float64 ``gradcheck``.

Mask semantics:
    ``mask`` holds non-negative **weights** ``w`` of shape ``(N, 1, *S)`` in fixed space. The
    registration engine passes ``fixed_mask * warped_moving_mask * in_bounds``, where ``in_bounds`` is the
    support of the warped moving image (for binary masks the product is the intersection). Every
    measure is a **weighted mean over the support**, ``sum(w * value) / sum(w)``, never a sum, so its
    scale does not depend on the overlap size. Masks weight the loss, never the images: for MSE,
    NCC, LNCC, MI/NMI and LC2, (finite) image values where ``w = 0`` are ignored exactly (local
    moments and histogram contributions are weighted by ``w`` too; LC2's ``|grad f|`` reads the fixed
    image's direct neighbours); NGF and MIND read the neighbours of a voxel with ``w > 0`` (NGF:
    1 voxel; MIND: ``dilation + radius`` voxels). An all-zero mask in any batch item raises
    ``ValueError("mask: empty support ...")``.

Measures: :func:`mse`, :func:`ncc`, :func:`lncc`, :func:`mi`, :func:`nmi`, :func:`ngf`, :func:`lc2`
(dense), :func:`lc2_patch` (patch pairs) and :func:`lc2_patch_map` (patch scores at every voxel), :func:`mind` (with :func:`mind_ssc_descriptor`); learned:
:class:`DISA` (feature dot product, :func:`feature_dot`), :class:`MAD` (learned patch distance) and
:class:`DeepSim` (cosine of frozen segmenter features).
"""

from .base import EngineTraits, SimilarityFactory, SimilarityMeasure, available_similarities, get_similarity, register_similarity
from .enums import EpsMode, Kernel, LengthUnit, Metric, ParzenWindow, Sampling
from .disa import DISA, feature_dot
from .deepsim import DeepSim
from .lc2 import LC2, lc2, lc2_patch, lc2_patch_map
from .lncc import LNCC, lncc
from .mad import MAD
from .mi import MI, NMI, joint_histogram, mi, nmi
from .mind import MIND, mind, mind_ssc_descriptor
from .mse_ncc import MSE, NCC, mse, ncc
from .ngf import NGF, ngf

__all__ = [
    "DISA",
    "EngineTraits",
    "Sampling",
    "DeepSim",
    "feature_dot",
    "EpsMode",
    "Kernel",
    "LC2",
    "LNCC",
    "MAD",
    "LengthUnit",
    "MI",
    "MIND",
    "MSE",
    "Metric",
    "NCC",
    "NGF",
    "NMI",
    "ParzenWindow",
    "SimilarityFactory",
    "SimilarityMeasure",
    "available_similarities",
    "get_similarity",
    "joint_histogram",
    "lc2",
    "lc2_patch",
    "lc2_patch_map",
    "lncc",
    "mi",
    "mind",
    "mind_ssc_descriptor",
    "mse",
    "ncc",
    "ngf",
    "nmi",
    "register_similarity",
]
