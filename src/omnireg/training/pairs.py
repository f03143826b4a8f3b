"""Training and validation pairs for registration networks, from label maps (synthesised) or real images.

Every pair is drawn from the generator of its *global* batch item
(:func:`omnireg.training.loop.item_generator`), so a step's global batch is the same for any number of
processes, and a resumed run sees the batches an uninterrupted run would have seen.

- :class:`LabelMapPairs`: two different subjects (``inter``) or one subject twice (``intra``) of a
  :class:`~omnireg.training.labelmaps.LabelMapSet`, synthesised on the set's device
  (:func:`~omnireg.training.synthesis.synthesize_pair`). In 2D a slice index along ``axis`` is drawn
  among the slices that contain brain in the middle ``1 - 2 * slice_margin`` of that range, and both
  subjects are cut at the same index (the maps share one aligned grid).
- :class:`ImagePairs`: two different real images (all on one grid, intensities scaled to ``[0, 1]``),
  each pulled through its own random deformation; no labels.
- :class:`LabelMapImages`: single synthesised images with their structure labels (segmentation training,
  e.g. DeepSim's segmenter), drawn the same way.
- :func:`validation_pairs`: the ordered pairs of held-out subjects, synthesised once without deformation
  (their own anatomy), with their structure labels, for Dice.

Labels in the batches are *structure indices* (``0`` = background or an unnamed label, ``1 .. C-1`` the
structures of :data:`~omnireg.training.labelmaps.NAMED_STRUCTURES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..core.enums import as_enum
from .distributed import DistContext
from .labelmaps import LabelMapSet, structure_lookup
from .loop import item_generator
from .losses import RegistrationBatch
from ..networks.registration import warp_voxels
from .synthesis import PairMode, SynthesisConfig, random_displacement, synthesize, synthesize_pair

__all__ = ["ImagePairs", "LabelMapImages", "LabelMapPairs", "brain_slice_range", "validation_pairs"]


def brain_slice_range(labels: torch.Tensor, axis: int, margin: float) -> tuple[int, int]:
    """Slice indices ``[lo, hi)`` along spatial ``axis`` that hold labels, trimmed by ``margin`` at each end.

    Args:
        labels: ``(M, 1, *S)`` class indices of several subjects (3D).
        axis: spatial axis (0, 1 or 2).
        margin: fraction in ``[0, 0.5)`` of the labelled range removed at each end.
    """
    if not 0 <= margin < 0.5:
        raise ValueError(f"slice_margin: expected a fraction in [0, 0.5), got {margin!r}")
    dims = [d for d in range(2, 5) if d != axis + 2]
    present = (labels > 0).any(dim=0)[0].any(dim=tuple(d - 2 for d in dims))
    idx = torch.nonzero(present).flatten()
    if idx.numel() == 0:
        raise ValueError("label_maps: the maps are empty (all background)")
    first, last = int(idx[0]), int(idx[-1]) + 1
    cut = int(round((last - first) * margin))
    return first + cut, max(first + cut + 1, last - cut)


def _cut(volume: torch.Tensor, axis: int, index: int) -> torch.Tensor:
    """Slice ``(M, C, *S3)`` at ``index`` along spatial ``axis`` -> ``(M, C, *S2)``."""
    return volume.select(axis + 2, index)


@dataclass
class LabelMapPairs:
    """Batches of synthesised pairs from a label-map set (module docstring).

    Args:
        maps: the training subjects (3D maps on one grid; on the training device).
        synthesis: synthesiser settings (contrast mode, deformation, degradation).
        pairs: :class:`PairMode` (``inter`` needs at least two subjects).
        ndim: 3, or 2 for slices along ``axis``.
        axis: slicing axis in 2D (2 = the third tensor axis; axial for an RAS grid).
        slice_margin: fraction of the labelled slice range left out at each end in 2D.
    """

    maps: LabelMapSet
    synthesis: SynthesisConfig
    pairs: str = "inter"
    ndim: int = 3
    axis: int = 2
    slice_margin: float = 0.2

    def __post_init__(self) -> None:
        self.pairs = as_enum(self.pairs, PairMode, "pairs").value
        if self.maps.ndim != 3:
            raise ValueError(f"maps: expected 3D label maps, got {self.maps.ndim}D")
        if self.ndim not in (2, 3):
            raise ValueError(f"ndim: expected 2 or 3, got {self.ndim!r}")
        if self.pairs == PairMode.INTER.value and len(self.maps.names) < 2:
            raise ValueError("pairs: inter-subject pairs need at least two training subjects")
        self.lut = structure_lookup(self.maps.values)
        self.slices = brain_slice_range(self.maps.labels, self.axis, self.slice_margin) if self.ndim == 2 else None
        spacing = list(self.maps.grid.spacing)
        self.spacing = tuple(spacing[:self.axis] + spacing[self.axis + 1:]) if self.ndim == 2 else tuple(spacing)

    @property
    def classes(self) -> int:
        """Number of structure classes in the labels (background included)."""
        return int(self.lut.max()) + 1 if self.lut.numel() else 1

    def _draw(self, g: torch.Generator) -> tuple[int, int, int | None]:
        m = len(self.maps.names)
        a = int(torch.randint(m, (), generator=g))
        if self.pairs == PairMode.INTER.value:
            b = int(torch.randint(m - 1, (), generator=g))
            b = b + 1 if b >= a else b
        else:
            b = a
        z = int(torch.randint(self.slices[0], self.slices[1], (), generator=g)) if self.slices else None
        return a, b, z

    def batch(self, seed: int, step: int, global_batch: int, dist: DistContext | None = None) -> RegistrationBatch:
        """This rank's share of the global batch of ``step`` (moving, fixed, structure labels)."""
        dist = dist or DistContext()
        items = []
        for i in dist.shard(global_batch):
            g = item_generator(seed, step, i)
            a, b, z = self._draw(g)
            src_m, src_f = self.maps.labels[a : a + 1], self.maps.labels[b : b + 1]
            if z is not None:
                src_m, src_f = _cut(src_m, self.axis, z), _cut(src_f, self.axis, z)
            items.append(synthesize_pair(src_m, src_f, self.maps.values, self.synthesis, [g]))
        cat = lambda name: torch.cat([getattr(p, name) for p in items])  # noqa: E731
        return RegistrationBatch(cat("moving"), cat("fixed"), self.lut[cat("moving_labels").long()],
                                 self.lut[cat("fixed_labels").long()], self.spacing)


@dataclass
class LabelMapImages:
    """Batches of single synthesised images and their structure labels (for training segmenters).

    Args: as :class:`LabelMapPairs` (without ``pairs``).
    """

    maps: LabelMapSet
    synthesis: SynthesisConfig
    ndim: int = 3
    axis: int = 2
    slice_margin: float = 0.2

    def __post_init__(self) -> None:
        self._pairs = LabelMapPairs(self.maps, self.synthesis, "intra", self.ndim, self.axis, self.slice_margin)

    @property
    def classes(self) -> int:
        return self._pairs.classes

    @property
    def spacing(self) -> tuple[float, ...]:
        return self._pairs.spacing

    def batch(self, seed: int, step: int, global_batch: int, dist: DistContext | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of the global batch of ``step``: images ``(n, 1, *S)`` and structure labels ``(n, 1, *S)``."""
        dist = dist or DistContext()
        images, labels = [], []
        for i in dist.shard(global_batch):
            g = item_generator(seed, step, i)
            a, _, z = self._pairs._draw(g)
            src = self.maps.labels[a : a + 1]
            if z is not None:
                src = _cut(src, self.axis, z)
            out = synthesize(src, self.maps.values, self.synthesis, [g])
            images.append(out.image)
            labels.append(self._pairs.lut[out.labels.long()])
        return torch.cat(images), torch.cat(labels)


@dataclass
class ImagePairs:
    """Batches of pairs of real images, each deformed by its own random field (no labels).

    Args:
        images: ``(M, 1, *S)`` images on one grid, scaled to ``[0, 1]``, on the training device (M >= 2).
        spacing: mm per tensor axis.
        synthesis: only its deformation settings are used.
    """

    images: torch.Tensor
    spacing: tuple[float, ...]
    synthesis: SynthesisConfig

    def __post_init__(self) -> None:
        if self.images.ndim not in (4, 5) or self.images.shape[0] < 2 or self.images.shape[1] != 1:
            raise ValueError(f"images: expected (M >= 2, 1, *S) images, got {tuple(self.images.shape)}")

    def batch(self, seed: int, step: int, global_batch: int, dist: DistContext | None = None) -> RegistrationBatch:
        dist = dist or DistContext()
        shape = self.images.shape[2:]
        moving, fixed = [], []
        for i in dist.shard(global_batch):
            g = item_generator(seed, step, i)
            m = self.images.shape[0]
            a = int(torch.randint(m, (), generator=g))
            b = int(torch.randint(m - 1, (), generator=g))
            b = b + 1 if b >= a else b
            for idx, out in ((a, moving), (b, fixed)):
                u = random_displacement(shape, self.synthesis, g, device=self.images.device)
                out.append(warp_voxels(self.images[idx : idx + 1], u))
        return RegistrationBatch(torch.cat(moving), torch.cat(fixed), None, None, self.spacing)


def validation_pairs(maps: LabelMapSet, synthesis: SynthesisConfig, *, seed: int, ndim: int = 3, axis: int = 2,
                     slice_fractions: Sequence[float] = (0.4, 0.5, 0.6), slice_margin: float = 0.2) -> list[RegistrationBatch]:
    """The ordered pairs of ``maps``' subjects as batches of one, with structure labels (module docstring).

    Images are synthesised from the undeformed maps with the ``synthesis`` contrast settings and generators
    seeded from ``seed`` (the same pairs at every validation). In 2D each pair is cut at
    ``slice_fractions`` of the trimmed labelled slice range (:func:`brain_slice_range`).
    """
    if len(maps.names) < 2:
        raise ValueError("validation: expected at least two held-out subjects")
    lut = structure_lookup(maps.values)
    spacing = tuple(maps.grid.spacing)
    slices: list[int | None] = [None]
    if ndim == 2:
        lo, hi = brain_slice_range(maps.labels, axis, slice_margin)
        slices = [min(hi - 1, lo + int(round(f * (hi - lo)))) for f in slice_fractions]
        spacing = spacing[:axis] + spacing[axis + 1:]
    out = []
    n = 0
    for a in range(len(maps.names)):
        for b in range(len(maps.names)):
            if a == b:
                continue
            for z in slices:
                src_m, src_f = maps.labels[a : a + 1], maps.labels[b : b + 1]
                if z is not None:
                    src_m, src_f = _cut(src_m, axis, z), _cut(src_f, axis, z)
                g = item_generator(seed, -1, n)
                n += 1
                m = synthesize(src_m, maps.values, synthesis, [g], deform=False)
                f = synthesize(src_f, maps.values, synthesis, [g], deform=False)
                out.append(RegistrationBatch(m.image, f.image, lut[m.labels.long()], lut[f.labels.long()], spacing))
    return out
