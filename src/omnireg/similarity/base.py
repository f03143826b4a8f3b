"""The common interface of similarity measures and the registry that builds them by name.

Every measure is a plain function ``f(fixed, moving, *, mask=None, spacing=None, ...) -> (N,)`` and a
thin :class:`SimilarityMeasure` module holding its options. ``forward`` returns the **similarity**
(higher is better) and :meth:`SimilarityMeasure.loss` the value minimised at alignment, always
``loss = -similarity``.

Example:
    >>> import torch
    >>> from omnireg.similarity import get_similarity
    >>> measure = get_similarity("ncc")
    >>> x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> torch.allclose(measure(x, 2 * x + 1), torch.ones(2))
    True
    >>> torch.allclose(measure.loss(x, x), -torch.ones(2))
    True
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .enums import Metric, Sampling

__all__ = [
    "EngineTraits",
    "SimilarityFactory",
    "SimilarityMeasure",
    "available_similarities",
    "get_similarity",
    "register_similarity",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineTraits:
    """What a similarity measure declares to the registration engine (:mod:`omnireg.optim`), which knows no
    measure by name.

    Attributes:
        sampling: how the engine evaluates it (:class:`Sampling`): on a seeded subset of the fixed voxels
            (``points``), on the whole level grid (``dense``), on feature maps computed once per level and
            compared by :meth:`SimilarityMeasure.feature_similarity` (``features``), or on its own fixed-space
            sample locations (``patches``: :meth:`SimilarityMeasure.sample_locations`).
        linear_only: usable in rigid/affine stages only (patch measures).
        mean_over_fixed: the engine averages over the whole fixed domain, not only over the overlap (a
            measure that is 0 where the moving image has no data: no reward for shrinking the overlap).
        reorient: learned features recomputed in the fixed frame through the current estimate every
            ``reorient`` iterations of a linear stage (0: never; :mod:`omnireg.optim.reorient`).
        deformable_sampling: how deformable stages evaluate it (``None``: as ``sampling``); ``dense`` for
            features that a deformation does not carry along (a network's features of a warped image are not
            its warped features: the engine recomputes them from the warped image at every iteration).
    """

    sampling: Sampling = Sampling.DENSE
    linear_only: bool = False
    mean_over_fixed: bool = False
    reorient: int = 0
    deformable_sampling: Sampling | None = None

    def sampling_for(self, linear: bool) -> Sampling:
        """The sampling of a linear (True) or deformable (False) stage."""
        return self.sampling if linear or self.deformable_sampling is None else self.deformable_sampling


class SimilarityMeasure(nn.Module):
    """Base class of the similarity modules.

    Subclasses hold hyperparameters (set in ``__init__``, keyword-only) and implement
    :meth:`forward` by calling their functional form; ``forward`` has no hidden state.

    Convention:
        ``forward(fixed, moving, mask)`` is the similarity, higher is better.
        ``loss(fixed, moving, mask) = -forward(fixed, moving, mask)``, minimised at alignment.
        Both return one value per batch item, shape ``(N,)``; reduce (e.g. ``.mean()``) yourself.

    Shape:
        - fixed, moving: ``(N, C, *S)``, ``S`` 2D or 3D, in the fixed image's voxel grid (the moving
          image already warped onto it); a batch of 1 is broadcast.
        - mask: ``(N, 1, *S)`` non-negative weights on the same grid, or ``None``.
        - output: ``(N,)``.
    """

    metric: str = ""
    #: how the registration engine uses the measure (:class:`EngineTraits`); measures whose traits depend on
    #: their options override :attr:`traits` with a property
    traits: EngineTraits = EngineTraits()

    def forward(  # noqa: D102 - documented in subclasses
        self,
        fixed: torch.Tensor,
        moving: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        spacing: object = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def loss(
        self,
        fixed: torch.Tensor,
        moving: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        spacing: object = None,
    ) -> torch.Tensor:
        """The value minimised at alignment: ``-forward(fixed, moving, mask, spacing=spacing)``.

        Returns:
            ``(N,)``.
        """
        return -self.forward(fixed, moving, mask, spacing=spacing)

    def for_unit_range(self) -> "SimilarityMeasure":
        """The measure for images whose intensities are known to lie in [0, 1] (the engine's normalised
        images); histogram measures fix their ranges so that no quantile is computed per evaluation."""
        return self

    # ------------------------------------------------------------ the engine's protocol (see EngineTraits)
    def features(self, data: torch.Tensor, grid, *, moving: bool) -> tuple[torch.Tensor, object]:
        """``sampling == features``: feature maps of a pyramid level ``(1, C, *S)`` on ``grid``, and the grid
        they live on (computed once per level; the moving features are warped, not recomputed)."""
        raise NotImplementedError(f"{type(self).__name__} computes no feature maps (traits.sampling is not 'features')")

    def feature_similarity(self) -> "SimilarityMeasure":
        """``sampling == features``: the measure that compares two feature maps point-wise."""
        raise NotImplementedError(f"{type(self).__name__} computes no feature maps (traits.sampling is not 'features')")

    def sample_locations(self, fixed: torch.Tensor, grid, mask, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``sampling == patches``: fixed-space world points ``(1, *L, D)`` and fixed values ``(1, C, *L)``."""
        raise NotImplementedError(f"{type(self).__name__} has no sample locations (traits.sampling is not 'patches')")

    @torch.no_grad()
    def evaluate(self, fixed: torch.Tensor, movings: list, masks: list, *, grid, fixed_mask=None) -> list[float]:
        """The similarity of ``fixed`` ``(1, C, *S)`` with each moving image resampled onto its grid, without
        gradients: the engine's values before and after registration. ``masks`` (``(1, 1, *S)`` or None per
        moving image) hold the support times the fixed mask; ``grid`` is the fixed grid (spacing, orientation);
        ``fixed_mask`` the fixed mask alone (or None). Measures that can share work between the moving images
        (fixed features computed once) override it."""
        return [float(self(fixed, m, mask=w, spacing=grid.spacing)[0]) for m, w in zip(movings, masks)]

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options().items())

    def options(self) -> dict:
        """The hyperparameters as keyword arguments of the constructor (and of the function)."""
        return {}


SimilarityFactory = Callable[..., SimilarityMeasure]
_REGISTRY: dict[str, SimilarityFactory] = {}


def _key(name: object, argname: str = "name") -> str:
    if isinstance(name, Metric):
        return name.value
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"{argname}: expected a Metric or a non-empty string, got {name!r}")
    return name.strip().lower()


def register_similarity(name: Metric | str, factory: SimilarityFactory, *, overwrite: bool = False) -> None:
    """Register ``factory(**options) -> SimilarityMeasure`` under ``name``.

    The built-in measures register themselves on import of :mod:`omnireg.similarity`. Learned measures
    (``Metric.DISA``, ``Metric.MAD``, ``Metric.DEEPSIM``) are registered by the modules implementing
    them; a new name outside :class:`Metric` is accepted for extensions.

    Args:
        name: a :class:`Metric` or a string (stored lower-case).
        factory: a callable taking keyword options and returning a :class:`SimilarityMeasure`
            (typically the class itself).
        overwrite: replace an existing registration instead of raising.

    Raises:
        TypeError: ``factory`` is not callable.
        ValueError: ``name`` is already registered and ``overwrite`` is false.
    """
    key = _key(name)
    if not callable(factory):
        raise TypeError(f"factory: expected a callable returning a SimilarityMeasure, got {factory!r}")
    if key in _REGISTRY and not overwrite and _REGISTRY[key] is not factory:
        raise ValueError(f"name: similarity {key!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[key] = factory
    logger.debug("registered similarity %r -> %r", key, factory)


def available_similarities() -> list[str]:
    """Names that :func:`get_similarity` can build now, sorted."""
    return sorted(_REGISTRY)


def get_similarity(name: Metric | str, **options: object) -> SimilarityMeasure:
    """Build the similarity module registered under ``name`` with keyword ``options``.

    Args:
        name: a :class:`Metric` or its string value, e.g. ``"lncc"``.
        **options: keyword options of that measure, e.g. ``window=5`` for ``"lncc"``.

    Returns:
        A :class:`SimilarityMeasure`; ``module(fixed, moving, mask)`` is the similarity ``(N,)``.

    Raises:
        ValueError: unknown or not yet registered name (the message lists the registered ones);
            invalid options are reported by the measure itself.
    """
    key = _key(name)
    if key not in _REGISTRY:
        known = ", ".join(repr(k) for k in available_similarities())
        if key in {m.value for m in Metric}:
            raise ValueError(
                f"name: similarity {key!r} is not registered yet (import the module implementing it first); "
                f"registered: {known}"
            )
        raise ValueError(f"name: expected one of {known}, got {name!r}")
    return _REGISTRY[key](**options)
