"""A 2D/3D segmentation U-Net: the anatomy segmenter whose encoder features drive DeepSim.

Architecture: the :class:`~omnireg.networks.unet.UNet` (one 3x3(x3) convolution, batch normalisation and
LeakyReLU 0.2 per level) followed by a 1x1(x1) convolution to one logit per class. Defaults: encoder 32, 64, 128 at
resolutions 1, 1/2, 1/4 (three levels separated by stride-2 max pooling, as DeepSim's reference
segmenter, whose feature levels have 32 / 64 / 128 channels), bottleneck at 1/8; decoder 128, 64, 32
(one per level, each followed by upsampling and a skip), then 16 at full resolution. About 1.3 M
parameters in 3D (5 MB as float32), 0.45 M in 2D.

Classes: ``config.labels[k]`` is the FreeSurfer number of class ``k`` (class 0 = background); the default
is background and the 32 named structures of the SynthSeg table
(:data:`omnireg.training.labelmaps.NAMED_STRUCTURES`), 33 classes.

Geometry: the network was trained on images with ``config.spacing_mm`` isotropic voxels whose tensor axes
point along ``config.direction`` (the columns are world RAS directions; RAS for the shipped models). An
image is brought into that frame by :func:`model_grid` and :func:`resample_to_grid` before the network
sees it, and intensities are scaled to ``[0, 1]`` (:func:`normalize_intensities`), as the synthesised
training images are. Encoder level ``l`` (feature voxel ``k`` pools input voxels ``2**l k .. 2**l (k + 1) - 1``)
lives on :func:`feature_grid` ``(grid, l)``.

Any input shape works: inputs are zero-padded at their high end to a multiple of the U-Net's stride
(``2**levels``) and outputs cropped back (features to ``ceil(S / 2**l)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..core import Grid, sample
from ..core.filters import gaussian_blur
from ..core.intensity import robust_normalize
from .blocks import conv_class
from .registration import crop_to_shape, frame_grid, pad_to_multiple
from .store import register_architecture
from .unet import UNet

__all__ = [
    "DECODER",
    "DEFAULT_LABELS",
    "Segmenter",
    "SegmenterConfig",
    "feature_grid",
    "model_grid",
    "normalize_intensities",
    "parse_levels",
    "predict_labels",
    "resample_to_grid",
]

DECODER = "decoder"
"""The name of the last decoder layer among the feature levels (full resolution, the head's input)."""

DEFAULT_LABELS: tuple[int, ...] = (
    0, 2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 26, 28,
    41, 42, 43, 44, 46, 47, 49, 50, 51, 52, 53, 54, 58, 60,
)
"""Background and the 32 named structures of the SynthSeg label table (FreeSurfer numbers)."""


def _ints(values: object, name: str, *, minimum: int) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a sequence of ints, got {values!r}") from None
    if not out or min(out) < minimum:
        raise ValueError(f"{name}: expected values >= {minimum}, got {values!r}")
    return out


@dataclass
class SegmenterConfig:
    """Architecture and frame of a segmenter (saved beside its weights).

    Attributes:
        ndim: 2 or 3.
        labels: FreeSurfer number of every class, background (0) first; one logit per entry.
        enc_channels: U-Net encoder widths, one level each (the DeepSim feature levels).
        dec_channels: U-Net decoder widths (one per level, then the full-resolution ones).
        spacing_mm: isotropic voxel size of the training images.
        direction: ``(D, D)`` world directions (columns, RAS) of the training images' tensor axes, or
            ``None`` for the identity (RAS).
        negative_slope: LeakyReLU slope.
        norm: normalisation after every convolution (``batch``, ``instance`` or ``none``). Batch
            normalisation (default): without it, training from scratch on random contrasts collapsed to
            all-background at a learning rate of 3e-3 in 3D (measured on the GPU); in eval mode it is a fixed
            per-channel affine map, so DeepSim's features do not depend on the image's field of view.
    """

    ndim: int = 3
    labels: tuple[int, ...] = DEFAULT_LABELS
    enc_channels: tuple[int, ...] = (32, 64, 128)
    dec_channels: tuple[int, ...] = (128, 64, 32, 16)
    spacing_mm: float = 2.0
    direction: tuple[tuple[float, ...], ...] | None = None
    negative_slope: float = 0.2
    norm: str = "batch"

    def __post_init__(self) -> None:
        if self.ndim not in (2, 3):
            raise ValueError(f"ndim: expected 2 or 3, got {self.ndim!r}")
        self.labels = _ints(self.labels, "labels", minimum=0)
        if self.labels[0] != 0 or len(set(self.labels)) != len(self.labels) or len(self.labels) < 2:
            raise ValueError(f"labels: expected distinct FreeSurfer numbers starting with background 0, got {self.labels!r}")
        self.enc_channels = _ints(self.enc_channels, "enc_channels", minimum=1)
        self.dec_channels = _ints(self.dec_channels, "dec_channels", minimum=1)
        if len(self.dec_channels) < len(self.enc_channels):
            raise ValueError(f"dec_channels: expected at least {len(self.enc_channels)} entries, got {len(self.dec_channels)}")
        if not float(self.spacing_mm) > 0:
            raise ValueError(f"spacing_mm: expected a positive voxel size, got {self.spacing_mm!r}")
        self.spacing_mm = float(self.spacing_mm)
        if self.norm not in ("batch", "instance", "none"):
            raise ValueError(f"norm: expected 'batch', 'instance' or 'none', got {self.norm!r}")
        if self.direction is not None:
            m = np.asarray(self.direction, dtype=np.float64)
            if m.shape != (self.ndim, self.ndim) or not np.allclose(m.T @ m, np.eye(self.ndim), atol=1e-4):
                raise ValueError(f"direction: expected an orthonormal ({self.ndim}, {self.ndim}) matrix, got {self.direction!r}")
            self.direction = tuple(tuple(float(v) for v in row) for row in m)

    @property
    def direction_matrix(self) -> np.ndarray:
        """``(D, D)`` float64 direction of the training frame (identity when ``direction`` is None)."""
        return np.eye(self.ndim) if self.direction is None else np.asarray(self.direction, dtype=np.float64)


class Segmenter(nn.Module):
    """Segmentation U-Net with a per-level feature interface (module docstring).

    Shape:
        ``forward``: ``(N, 1, *S)`` -> logits ``(N, K, *S)``, ``K = len(config.labels)``, any ``S``.
        ``features``: ``(N, 1, *S)`` -> ``[(N, enc_channels[l], *ceil(S / 2**l)) for l in levels]`` (and the
        decoder's ``(N, dec_channels[-1], *S)`` for ``"decoder"``).
    """

    kind = "segmenter"

    def __init__(self, config: SegmenterConfig | None = None) -> None:
        super().__init__()
        self.config = config or SegmenterConfig()
        c = self.config
        self.unet = UNet(c.ndim, 1, c.enc_channels, c.dec_channels, negative_slope=c.negative_slope, norm=c.norm)
        self.head = conv_class(c.ndim)(self.unet.out_channels, len(c.labels), 1)

    @property
    def levels(self) -> int:
        """Number of encoder levels (feature levels ``0 .. levels - 1``)."""
        return self.unet.levels

    @property
    def num_classes(self) -> int:
        return len(self.config.labels)

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor (N, 1, *S), got {type(x).__name__}")
        if x.ndim != self.config.ndim + 2 or x.shape[1] != 1:
            raise ValueError(f"x: expected (N, 1, *S) with {self.config.ndim} spatial axes, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, K, *S)`` of images ``(N, 1, *S)`` (intensities in ``[0, 1]``)."""
        self._check(x)
        padded, shape = pad_to_multiple(x, self.unet.stride)
        return crop_to_shape(self.head(self.unet(padded)), shape)

    def features(self, x: torch.Tensor, levels: Sequence[int | str] | None = None) -> list[torch.Tensor]:
        """Feature maps of the chosen ``levels`` (default: every encoder level), in :meth:`check_levels` order.

        Encoder level ``l`` is the output of encoder level ``l`` before pooling, ``(N, enc_channels[l],
        *ceil(S / 2**l))`` on :func:`feature_grid` ``(grid, l)`` of the input's grid; ``"decoder"`` is the last
        decoder layer (the head's input), ``(N, dec_channels[-1], *S)`` at full resolution. The zero padding
        to the U-Net's stride is cropped away (features near the high border have seen it).
        """
        self._check(x)
        chosen = self.check_levels(levels)
        padded, shape = pad_to_multiple(x, self.unet.stride)
        feats = self.unet.encode(padded)
        out = []
        for level in chosen:
            if level == DECODER:
                out.append(crop_to_shape(self.unet.decode(feats), shape))
            else:
                out.append(crop_to_shape(feats[level], tuple(math.ceil(s / 2**level) for s in shape)))
        return out

    def check_levels(self, levels: Sequence[int | str] | None) -> tuple[int | str, ...]:
        """``levels`` validated: encoder levels ``0 .. levels - 1`` (sorted, distinct), then ``"decoder"`` if
        given; ``None`` means every encoder level (DeepSim's reference choice)."""
        if levels is None:
            return tuple(range(self.levels))
        out = parse_levels(levels)
        if any(isinstance(v, int) and v >= self.levels for v in out):
            raise ValueError(f"levels: expected encoder levels in 0 .. {self.levels - 1} or 'decoder', got {levels!r}")
        return out

    def level_channels(self, levels: Sequence[int | str] | None) -> tuple[int, ...]:
        """Channels of each of :meth:`check_levels` ``(levels)``."""
        return tuple(self.unet.out_channels if v == DECODER else self.config.enc_channels[v] for v in self.check_levels(levels))


def parse_levels(levels: Sequence[int | str]) -> tuple[int | str, ...]:
    """Feature levels from ints, digit strings and ``"decoder"``: sorted encoder levels, then ``"decoder"``.

    Raises:
        TypeError, ValueError: not a sequence, an unknown name, a negative level, or nothing chosen.
    """
    if isinstance(levels, (str, int)):
        levels = [levels]
    try:
        items = list(levels)
    except TypeError:
        raise TypeError(f"levels: expected a sequence of encoder levels and/or 'decoder', got {levels!r}") from None
    ints, decoder = set(), False
    for v in items:
        if isinstance(v, str) and v.strip().lower() == DECODER:
            decoder = True
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool) or (isinstance(v, str) and v.strip().isdigit()):
            if int(v) < 0:
                raise ValueError(f"levels: expected encoder levels >= 0, got {levels!r}")
            ints.add(int(v))
        else:
            raise ValueError(f"levels: expected encoder levels (ints) and/or 'decoder', got {v!r}")
    if not ints and not decoder:
        raise ValueError(f"levels: expected at least one level, got {levels!r}")
    return tuple(sorted(ints)) + ((DECODER,) if decoder else ())


register_architecture("segmenter", Segmenter, SegmenterConfig)


# ------------------------------------------------------------------------------------------ geometry
def feature_grid(grid: Grid, level: int) -> Grid:
    """The grid of encoder level ``level`` for an image on ``grid``.

    Feature voxel ``k`` pools the input voxels ``2**l k .. 2**l (k + 1) - 1`` per axis, so its centre is
    input voxel ``2**l k + (2**l - 1) / 2``: spacing ``2**l`` times, shape ``ceil(S / 2**l)``, same direction.
    """
    f = 2**int(level)
    shift = np.full(grid.ndim, (f - 1) / 2.0)
    origin = grid.transform_points(shift, "voxel", "world")
    shape = tuple(math.ceil(s / f) for s in grid.shape)
    return Grid(shape, tuple(s * f for s in grid.spacing), tuple(origin.tolist()), grid.direction)


def model_grid(grid: Grid, config: SegmenterConfig, *, tolerance: float = 0.1) -> Grid:
    """A grid in the segmenter's frame (``config.direction``, ``config.spacing_mm``) covering ``grid``'s field of view.

    Returns ``grid`` itself when its direction already matches and every spacing is within ``tolerance``
    (relative) of the model's; otherwise the smallest grid of the model's frame containing every voxel edge
    of ``grid``, centred on it.

    Raises:
        ValueError: ``grid`` and ``config`` differ in dimension.
    """
    if grid.ndim != config.ndim:
        raise ValueError(f"grid: the segmenter is {config.ndim}D, the image is {grid.ndim}D")
    rot = config.direction_matrix
    sp = config.spacing_mm
    if np.allclose(grid.direction, rot, atol=1e-3) and all(abs(s / sp - 1) <= tolerance for s in grid.spacing):
        return grid
    return frame_grid(grid, spacing_mm=sp, direction=rot)


def normalize_intensities(data: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Each item of ``data`` ``(N, 1, *S)`` scaled by its robust [0.5, 99.5] % range to ``[0, 1]`` and clipped.

    ``mask`` ``(N, 1, *S)`` (weights > 0 used) restricts the quantiles; differentiable almost everywhere.
    """
    out = []
    for i in range(data.shape[0]):
        m = None if mask is None else mask[i : i + 1]
        out.append(robust_normalize(data[i : i + 1], m).to(data.dtype).clamp(0, 1))
    return torch.cat(out)


def resample_to_grid(data: torch.Tensor, grid: Grid, target: Grid) -> torch.Tensor:
    """``data`` ``(N, C, *S)`` on ``grid`` pulled onto ``target`` (linear; zeros outside ``grid``).

    Axes of ``grid`` finer than ``target``'s spacing are smoothed first with a Gaussian of
    ``sigma = 0.5 sqrt(t^2 - s^2)`` mm (anti-aliasing). ``data`` itself is returned when the grids are equal.
    """
    if grid.same_as(target):
        return data
    t = float(min(target.spacing))
    sigma = [0.5 * math.sqrt(max(t * t - s * s, 0.0)) / s for s in grid.spacing]
    src = gaussian_blur(data, sigma) if any(v > 0.1 for v in sigma) else data
    pts = grid.transform_points(target.points("world", dtype=torch.float64, device=data.device), "world", "voxel")
    pts = pts.to(src.dtype).unsqueeze(0).expand(src.shape[0], *pts.shape)
    return sample(src, pts, interp="linear", padding="zeros")


@torch.no_grad()
def predict_labels(model: Segmenter, data: torch.Tensor, grid: Grid, *, max_points: int = 1_000_000) -> torch.Tensor:
    """Segment one image on its own grid: FreeSurfer numbers ``(1, 1, *S)`` (int16) on ``grid``.

    The image ``(1, 1, *S)`` is scaled to ``[0, 1]`` (:func:`normalize_intensities`), resampled onto
    :func:`model_grid` (the model's frame and spacing, covering the image's field of view), segmented there,
    and the class probabilities are interpolated linearly at ``grid``'s voxel centres (in slabs of about
    ``max_points`` voxels) before the arg-max: labels follow the image's own grid, oblique or anisotropic.

    Raises:
        ValueError: a batch or channel count other than one, or a dimension the model does not have.
    """
    if data.ndim != grid.ndim + 2 or data.shape[:2] != (1, 1) or tuple(data.shape[2:]) != grid.shape:
        raise ValueError(f"data: expected (1, 1, *{grid.shape}), got {tuple(data.shape)}")
    param = next(model.parameters())
    x = normalize_intensities(data.to(device=param.device, dtype=param.dtype))
    target = model_grid(grid, model.config)
    logits = model(resample_to_grid(x, grid, target))
    table = torch.tensor(model.config.labels, dtype=torch.int16, device=param.device)
    if target is grid:
        return table[logits.argmax(1, keepdim=True)].cpu()
    probs = torch.softmax(logits, dim=1)
    d = grid.ndim
    m = torch.as_tensor(target.voxel_from_world() @ grid.world_from_voxel(), dtype=torch.float64, device=param.device)
    rest = grid.shape[1:]
    per_slab = max(1, max_points // max(1, int(np.prod(rest))))
    out = torch.empty((1, 1, *grid.shape), dtype=torch.int16)
    for i0 in range(0, grid.shape[0], per_slab):
        i1 = min(grid.shape[0], i0 + per_slab)
        axes = [torch.arange(i0, i1, dtype=torch.float64, device=param.device)]
        axes += [torch.arange(s, dtype=torch.float64, device=param.device) for s in rest]
        vox = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
        pts = (vox @ m[:d, :d].T + m[:d, d]).to(probs.dtype).unsqueeze(0)
        p = sample(probs, pts, interp="linear", padding="border")
        out[0, 0, i0:i1] = table[p.argmax(1)[0]].cpu()
    return out
