"""Losses of registration networks, built from omnireg's similarity measures and regularizers.

A loss is written as a spec string of weighted terms, parsed once into typed :class:`LossTerm` lists:

- ``loss`` spec, e.g. ``"lncc"``, ``"mse:1,dice:0.5"``, ``"deepsim:2,ncc:1"``: every name registered with
  :func:`omnireg.similarity.get_similarity` (used as ``measure.loss(fixed, warped, spacing=...)``, one
  value per item) and ``dice`` (soft Dice on warped one-hot labels; needs labels in the batch);
- ``reg`` spec, e.g. ``"diffusion:1"``, ``"bending:0.5,folding:10"``: ``diffusion``, ``elastic``,
  ``bending``, ``folding`` (:mod:`omnireg.regularizers`, on the displacement in **mm**) and
  ``inverse-consistency`` (forward and inverse displacements; diffeomorphic models);
- a missing weight is 1; weights must be finite and >= 0.

:class:`RegistrationLoss` evaluates ``sum_k w_k term_k`` on a network output and a batch: the moving
image (and its one-hot labels) pulled through the predicted displacement, compared with the fixed one.
Options: deep supervision on the output's coarser ``scales`` (images and labels average-pooled to each
scale; ``(1 - a) L_full + a mean_k L_k``), the symmetric loss of diffeomorphic models (the fixed image
pulled through the inverse compared with the moving one, averaged with the forward loss), and the
regulariser on the velocity instead of the displacement. Every term is a mean over batch items of
per-item values, so data-parallel gradient averaging equals the gradient of the global batch.

Convention:
    Displacements are in voxels of their grid (:class:`omnireg.networks.registration.NetworkOutput`);
    the training grid is axis-aligned with ``spacing`` mm per tensor axis, so ``u_mm = u_vox * spacing``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import regularizers as R
from ..similarity import available_similarities, get_similarity
from ..networks.registration import warp_voxels

__all__ = ["LossTerm", "RegTarget", "RegistrationBatch", "RegistrationLoss", "format_spec", "parse_spec", "soft_dice_loss"]

DICE = "dice"
REGULARIZERS = ("diffusion", "elastic", "bending", "folding", "inverse-consistency")


class RegTarget(str, Enum):
    """Field the regulariser acts on: the ``displacement`` (mm) or the model's ``velocity`` (mm)."""

    DISPLACEMENT = "displacement"
    VELOCITY = "velocity"


@dataclass(frozen=True)
class LossTerm:
    """One weighted term of a loss spec: ``name`` (a similarity, ``dice`` or a regulariser) and ``weight``."""

    name: str
    weight: float = 1.0


def parse_spec(spec: str, *, what: str, allowed: Sequence[str] | None = None) -> list[LossTerm]:
    """Parse ``"name[:weight],name[:weight],..."`` into :class:`LossTerm` s (names lower-case).

    Args:
        spec: the spec string; ``""`` or ``"none"`` gives no terms.
        what: the argument's name for error messages (e.g. ``"loss"``).
        allowed: the valid names (default: anything).

    Raises:
        ValueError: a malformed entry, an unknown or repeated name, or a negative or non-finite weight.
    """
    if spec is None or str(spec).strip().lower() in ("", "none"):
        return []
    terms: list[LossTerm] = []
    for entry in str(spec).split(","):
        entry = entry.strip()
        name, _, weight = entry.partition(":")
        name = name.strip().lower()
        if not name:
            raise ValueError(f"{what}: empty term in {spec!r} (expected name[:weight],...)")
        try:
            w = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise ValueError(f"{what}: weight of {name!r} is not a number: {weight!r}") from None
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"{what}: weight of {name!r} must be finite and >= 0, got {w}")
        if allowed is not None and name not in allowed:
            raise ValueError(f"{what}: unknown term {name!r}; valid: {', '.join(sorted(allowed))}")
        if any(t.name == name for t in terms):
            raise ValueError(f"{what}: term {name!r} given twice in {spec!r}")
        terms.append(LossTerm(name, w))
    return terms


def format_spec(terms: Sequence[LossTerm]) -> str:
    """The canonical spec string of ``terms`` (inverse of :func:`parse_spec`)."""
    return ",".join(f"{t.name}:{t.weight:g}" for t in terms) or "none"


@dataclass
class RegistrationBatch:
    """A batch of registration pairs on one axis-aligned grid.

    Attributes:
        moving, fixed: ``(N, 1, *S)`` images.
        moving_labels, fixed_labels: ``(N, 1, *S)`` integer label maps (structure indices ``0 .. C-1``,
            0 = background), or ``None``.
        spacing: mm per tensor axis.
    """

    moving: torch.Tensor
    fixed: torch.Tensor
    moving_labels: torch.Tensor | None = None
    fixed_labels: torch.Tensor | None = None
    spacing: tuple[float, ...] = field(default=())


def one_hot(labels: torch.Tensor, classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(N, 1, *S)`` integer labels -> ``(N, classes, *S)`` one-hot of ``dtype``."""
    return F.one_hot(labels[:, 0].long(), classes).movedim(-1, 1).to(dtype)


def soft_dice_loss(warped: torch.Tensor, fixed: torch.Tensor, *, eps: float = 1e-5) -> torch.Tensor:
    """``1 - mean_c 2 |a_c b_c| / (|a_c| + |b_c|)`` per item over the foreground classes present.

    Args:
        warped, fixed: ``(N, C, *S)`` soft or one-hot class maps (channel 0 = background, ignored).
        eps: added to numerator and denominator.

    Returns:
        ``(N,)`` in ``[0, 1]``; 0 when the maps agree. Classes absent from both maps are left out.
    """
    a, b = warped[:, 1:].flatten(2), fixed[:, 1:].flatten(2)
    inter = (a * b).sum(-1)
    total = a.sum(-1) + b.sum(-1)
    dice = (2 * inter + eps) / (total + eps)
    present = (total > 0.5).to(dice.dtype)
    return 1 - (dice * present).sum(1) / present.sum(1).clamp_min(1)


def _pool(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Average ``x`` ``(N, C, *S)`` onto a coarser grid of ``shape`` (area interpolation)."""
    return x if tuple(x.shape[2:]) == tuple(shape) else F.interpolate(x, size=tuple(shape), mode="area")


class RegistrationLoss(nn.Module):
    """``sum_k w_k term_k`` on a registration network's output (module docstring).

    Args:
        loss: similarity and ``dice`` terms (a spec string or :class:`LossTerm` s).
        reg: regulariser terms (a spec string or :class:`LossTerm` s).
        classes: number of structure classes of the labels (for ``dice``; background included).
        deep_supervision: weight ``a`` in ``[0, 1)`` of the coarser scales.
        symmetric: also compare the fixed image pulled through the inverse with the moving one.
        reg_target: :class:`RegTarget`.
        similarity_options: keyword options per similarity name, e.g. ``{"lncc": {"window": 9}}``.

    Raises:
        ValueError: unknown names, ``dice`` without ``classes``, no term at all, bad options.
    """

    def __init__(self, loss: str | Sequence[LossTerm], reg: str | Sequence[LossTerm] = "", *, classes: int = 0,
                 deep_supervision: float = 0.0, symmetric: bool = False, reg_target: RegTarget | str = "displacement",
                 similarity_options: dict | None = None) -> None:
        super().__init__()
        sims = set(available_similarities()) | {DICE}
        self.terms = parse_spec(loss, what="loss", allowed=sorted(sims)) if isinstance(loss, str) else list(loss)
        self.reg_terms = parse_spec(reg, what="reg", allowed=REGULARIZERS) if isinstance(reg, str) else list(reg)
        if not self.terms:
            raise ValueError("loss: expected at least one similarity or dice term")
        if any(t.name == DICE for t in self.terms) and classes < 2:
            raise ValueError("loss: the dice term needs label maps (classes >= 2)")
        if not 0 <= float(deep_supervision) < 1:
            raise ValueError(f"deep_supervision: expected a weight in [0, 1), got {deep_supervision!r}")
        self.classes = int(classes)
        self.deep_supervision = float(deep_supervision)
        self.symmetric = bool(symmetric)
        self.reg_target = RegTarget(reg_target.value if isinstance(reg_target, RegTarget) else str(reg_target).lower())
        opts = similarity_options or {}
        self.measures = nn.ModuleDict({t.name: get_similarity(t.name, **opts.get(t.name, {}))
                                       for t in self.terms if t.name != DICE})

    @property
    def needs_labels(self) -> bool:
        return any(t.name == DICE for t in self.terms)

    def _matching(self, fixed: torch.Tensor, moving: torch.Tensor, disp: torch.Tensor, fixed_oh, moving_oh,
                  spacing: Sequence[float]) -> dict[str, torch.Tensor]:
        """Per-term mean values of ``fixed`` vs ``moving`` pulled through ``disp`` (all on one grid)."""
        warped = warp_voxels(moving, disp)
        out = {}
        for t in self.terms:
            if t.name == DICE:
                out[t.name] = soft_dice_loss(warp_voxels(moving_oh, disp), fixed_oh).mean()
            else:
                out[t.name] = self.measures[t.name].loss(fixed, warped, spacing=tuple(spacing)).mean()
        return out

    def _all_scales(self, fixed, moving, disp, scales, fixed_oh, moving_oh, spacing) -> dict[str, torch.Tensor]:
        values = self._matching(fixed, moving, disp, fixed_oh, moving_oh, spacing)
        if self.deep_supervision == 0 or not scales:
            return values
        size = fixed.shape[2:]
        coarse: dict[str, torch.Tensor] = {k: torch.zeros_like(v) for k, v in values.items()}
        for u in scales:
            shape = u.shape[2:]
            sp = [s * a / b for s, a, b in zip(spacing, size, shape)]
            foh = None if fixed_oh is None else _pool(fixed_oh, shape)
            moh = None if moving_oh is None else _pool(moving_oh, shape)
            for k, v in self._matching(_pool(fixed, shape), _pool(moving, shape), u, foh, moh, sp).items():
                coarse[k] = coarse[k] + v / len(scales)
        a = self.deep_supervision
        return {k: (1 - a) * values[k] + a * coarse[k] for k in values}

    def _regularisers(self, output, spacing: Sequence[float], size: Sequence[int]) -> dict[str, torch.Tensor]:
        out = {}
        if not self.reg_terms:
            return out
        field_vox, sp = output.displacement, list(spacing)
        if self.reg_target is RegTarget.VELOCITY:
            if output.velocity is None:
                raise ValueError("reg_target: 'velocity' needs a model that returns a velocity field")
            field_vox = output.velocity
            sp = [s * a / b for s, a, b in zip(spacing, size, field_vox.shape[2:])]
        scale = torch.tensor(sp, dtype=field_vox.dtype, device=field_vox.device).view(1, -1, *([1] * len(sp)))
        u_mm = field_vox * scale
        for t in self.reg_terms:
            if t.name == "diffusion":
                v = R.diffusion_penalty(u_mm, tuple(sp))
            elif t.name == "elastic":
                v = R.elastic_penalty(u_mm, tuple(sp))
            elif t.name == "bending":
                v = R.bending_energy(u_mm, tuple(sp))
            elif t.name == "folding":
                v = R.folding_penalty(u_mm, tuple(sp))
            else:
                if output.inverse is None:
                    raise ValueError("reg: 'inverse-consistency' needs a model that returns the inverse displacement")
                inv_mm = output.inverse * scale
                v = R.inverse_consistency_penalty(output.displacement * scale, inv_mm, tuple(sp))
            out[f"reg_{t.name}"] = v.mean()
        return out

    def forward(self, output, batch: RegistrationBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total loss and its unweighted terms (detached copies are the caller's business).

        Args:
            output: a :class:`~omnireg.networks.registration.NetworkOutput` (``displacement`` in voxels).
            batch: the :class:`RegistrationBatch` the output was predicted from.

        Returns:
            ``(loss, {name: value})``: the weighted sum (scalar) and each term's mean value.

        Raises:
            ValueError: ``dice`` without labels in the batch; a term that needs an inverse or velocity the
                model does not return; ``symmetric`` without an inverse.
        """
        spacing = batch.spacing or (1.0,) * (batch.fixed.ndim - 2)
        foh = moh = None
        if self.needs_labels:
            if batch.fixed_labels is None or batch.moving_labels is None:
                raise ValueError("loss: the dice term needs label maps in the batch")
            foh, moh = one_hot(batch.fixed_labels, self.classes), one_hot(batch.moving_labels, self.classes)
        values = self._all_scales(batch.fixed, batch.moving, output.displacement, output.scales, foh, moh, spacing)
        if self.symmetric:
            if output.inverse is None:
                raise ValueError("symmetric: the model returns no inverse displacement")
            back = self._matching(batch.moving, batch.fixed, output.inverse, moh, foh, spacing)
            values = {k: 0.5 * (values[k] + back[k]) for k in values}
        values.update(self._regularisers(output, spacing, batch.fixed.shape[2:]))
        weights = {t.name: t.weight for t in self.terms} | {f"reg_{t.name}": t.weight for t in self.reg_terms}
        total = sum(weights[k] * v for k, v in values.items())
        return total, values
