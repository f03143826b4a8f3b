"""The DISA feature network: a small CNN whose feature dot product approximates a patch similarity.

DISA (Ronchetti et al., arXiv 2307.09931) trains ``f`` so that ``<f(P1), f(P2)>`` approximates an
expensive patch similarity ``s(P1, P2)`` (LC2 by default). The architecture follows the method's
description: conv 1->8; residual block (8); conv 8->16; BlurPool; residual block (16); conv 16->32;
BlurPool; residual block (32); 1x1 conv 32->16 without bias. All other convolutions are 3x3(x3) with
LeakyReLU; BlurPool is the fixed binomial filter ``[1, 4, 6, 4, 1] / 16`` applied per channel with
stride 2. Ten convolution layers, total stride 4, 16 output channels, receptive field 49 voxels.

Geometry: feature voxel ``k`` (per axis) sits at input voxel ``4 k`` (zero-padded "same" convolutions
and a centred blur), so the feature map of an image on grid ``G`` lives on
:func:`feature_grid` ``(G)``: same origin and direction, spacing ``4x``, shape ``ceil(S / 4)``.
Feature vectors are scaled to norm at most 1 (:func:`clip_norm`), as in training.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..core import Grid
from .blocks import ResidualBlock, conv_class
from .store import register_architecture

__all__ = ["DISAConfig", "DISANet", "clip_norm", "extract_features", "feature_grid"]


@dataclass
class DISAConfig:
    """Architecture of a DISA feature network.

    Attributes:
        ndim: 2 or 3 (spatial dimensions).
        channels: widths of the three stages.
        out_channels: length of the feature vector.
        negative_slope: LeakyReLU slope.
        teacher: the patch similarity the dot product approximates (``lc2``, ``mi``, ``nmi``, ``mind``).
        patch_spacing_mm: voxel size of the training patches (features are most faithful near it).
    """

    ndim: int = 3
    channels: tuple[int, int, int] = (8, 16, 32)
    out_channels: int = 16
    negative_slope: float = 0.01
    teacher: str = "lc2"
    patch_spacing_mm: float = 2.0

    def __post_init__(self) -> None:
        if self.ndim not in (2, 3):
            raise ValueError(f"ndim: expected 2 or 3, got {self.ndim!r}")
        self.channels = tuple(int(c) for c in self.channels)
        if len(self.channels) != 3 or min(self.channels) < 1:
            raise ValueError(f"channels: expected three positive widths, got {self.channels!r}")


class BlurPool(nn.Module):
    """Per-channel binomial ``[1, 4, 6, 4, 1] / 16`` blur (separable, zero padding 2) with stride 2."""

    def __init__(self, ndim: int) -> None:
        super().__init__()
        self.ndim = ndim
        self.register_buffer("taps", torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        taps = self.taps.to(x.dtype)
        for axis in range(self.ndim):
            shape = [1] * self.ndim
            shape[axis] = 5
            weight = taps.reshape(1, 1, *shape).expand(c, 1, *shape)
            pad = [0] * self.ndim
            pad[axis] = 2
            stride = [1] * self.ndim
            stride[axis] = 2
            op = F.conv3d if self.ndim == 3 else F.conv2d
            x = op(x, weight, padding=tuple(pad), stride=tuple(stride), groups=c)
        return x


class DISANet(nn.Module):
    """The DISA feature CNN (module docstring). ``forward(x)`` ``(N, 1, *S)`` -> ``(N, C_out, *ceil(S / 4))``.

    ``forward`` returns raw features; :func:`clip_norm` gives the vectors compared by the dot product.
    """

    stride = 4
    receptive_field = 49

    def __init__(self, config: DISAConfig | None = None) -> None:
        super().__init__()
        self.config = config or DISAConfig()
        d, (c1, c2, c3), s = self.config.ndim, self.config.channels, self.config.negative_slope
        conv = conv_class(d)
        self.conv1 = conv(1, c1, 3, padding=1)
        self.res1 = ResidualBlock(d, c1, s)
        self.conv2 = conv(c1, c2, 3, padding=1)
        self.pool1 = BlurPool(d)
        self.res2 = ResidualBlock(d, c2, s)
        self.conv3 = conv(c2, c3, 3, padding=1)
        self.pool2 = BlurPool(d)
        self.res3 = ResidualBlock(d, c3, s)
        self.head = conv(c3, self.config.out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.config.ndim + 2 or x.shape[1] != 1:
            raise ValueError(
                f"x: expected (N, 1, *S) with {self.config.ndim} spatial axes, got shape {tuple(x.shape)}"
            )
        s = self.config.negative_slope
        x = self.res1(F.leaky_relu(self.conv1(x), s))
        x = self.res2(self.pool1(F.leaky_relu(self.conv2(x), s)))
        x = self.res3(self.pool2(F.leaky_relu(self.conv3(x), s)))
        return self.head(x)

    def centre_features(self, patches: torch.Tensor) -> torch.Tensor:
        """Norm-clipped feature vector at the centre voxel of each patch (odd size ``4 m + 1``): ``(N, C_out)``."""
        sizes = patches.shape[2:]
        if any(s % 4 != 1 for s in sizes):
            raise ValueError(f"patches: expected sizes 4 m + 1 per axis (centre on the stride-4 grid), got {tuple(sizes)}")
        out = self(patches)
        idx = (slice(None), slice(None)) + tuple(s // 8 for s in sizes)
        return clip_norm(out[idx], dim=1)


def clip_norm(features: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Scale feature vectors along ``dim`` to Euclidean norm at most 1 (``f / max(1, |f|)``)."""
    norm = torch.linalg.vector_norm(features, dim=dim, keepdim=True)
    return features / norm.clamp_min(1.0)


def feature_grid(grid: Grid, stride: int = 4) -> Grid:
    """The grid of a stride-``stride`` feature map of an image on ``grid`` (feature ``k`` at voxel ``stride k``)."""
    shape = tuple(int(math.ceil(s / stride)) for s in grid.shape)
    wv = grid.world_from_voxel() @ np.diag([float(stride)] * grid.ndim + [1.0])
    return Grid.from_affine(shape, wv)


@torch.no_grad()
def extract_features(model: DISANet, image: torch.Tensor, *, max_voxels: int = 4_000_000, stride: int = 4) -> torch.Tensor:
    """Norm-clipped DISA features of ``image`` ``(N, 1, *S)`` -> ``(N, C_out, *ceil(S / stride))``, in slabs.

    The image is cut along its first spatial axis into slabs of at most about ``max_voxels`` voxels
    (a multiple of 4 thick) with a halo of 28 voxels each side (more than the receptive-field radius,
    24), so the result equals the whole-image computation while peak memory stays bounded (about
    ``max_voxels * 100`` bytes in float32: a 1 mm brain fits in well under 1 GB).

    ``stride`` 2 or 1 (the network's own is 4) gives a denser feature map (feature ``j`` at voxel
    ``stride j``) by evaluating the network on the image shifted by every multiple of ``stride`` below 4
    along each axis (polyphase: ``(4 / stride)^D`` evaluations; near the far borders the shifted inputs
    see the image edge a few voxels earlier).
    """
    if stride not in (1, 2, 4):
        raise ValueError(f"stride: expected 1, 2 or 4, got {stride!r}")
    if stride == 4:
        return _extract_stride4(model, image, max_voxels)
    n, _, *spatial = image.shape
    d, step = len(spatial), 4 // stride
    out = None
    for shift in itertools.product(range(0, 4, stride), repeat=d):
        sub = image[(slice(None), slice(None)) + tuple(slice(s, None) for s in shift)]
        if min(sub.shape[2:]) < 1:
            continue
        f = _extract_stride4(model, sub, max_voxels)
        if out is None:
            out = f.new_zeros(n, f.shape[1], *(int(math.ceil(s / stride)) for s in spatial))
        dst = (slice(None), slice(None)) + tuple(slice(s // stride, None, step) for s in shift)
        view = out[dst]
        out[dst] = f[(slice(None), slice(None)) + tuple(slice(0, k) for k in view.shape[2:])]
    return out


def _extract_stride4(model: DISANet, image: torch.Tensor, max_voxels: int) -> torch.Tensor:
    n, _, *spatial = image.shape
    stride, halo = 4, 28
    plane = int(np.prod(spatial[1:]))
    thick = max(stride, (max_voxels // max(plane, 1)) // stride * stride)
    length = spatial[0]
    if thick >= length:
        return clip_norm(model(image), dim=1)
    outs = []
    for start in range(0, length, thick):
        stop = min(start + thick, length)
        lo, hi = max(0, start - halo), min(length, stop + halo)
        out = model(image[:, :, lo:hi])  # lo is a multiple of 4: output k <-> input lo + 4 k
        k0 = (start - lo) // stride
        k1 = k0 + int(math.ceil((stop - start) / stride))
        outs.append(out[:, :, k0:k1])
    return clip_norm(torch.cat(outs, dim=2), dim=1)


register_architecture("disa", DISANet, DISAConfig)
