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

import copy
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
        return self.blur(x, stride=2, dilation=1)

    def blur(self, x: torch.Tensor, *, stride: int, dilation: int) -> torch.Tensor:
        """The blur with taps ``dilation`` voxels apart (zero padding ``2 dilation``), subsampled by ``stride``."""
        c = x.shape[1]
        taps = self.taps.to(x.dtype)
        op = F.conv3d if self.ndim == 3 else F.conv2d
        for axis in range(self.ndim):
            shape = [1] * self.ndim
            shape[axis] = 5
            weight = taps.reshape(1, 1, *shape).expand(c, 1, *shape)
            pad, step, dil = [0] * self.ndim, [1] * self.ndim, [1] * self.ndim
            pad[axis], step[axis], dil[axis] = 2 * dilation, stride, dilation
            x = op(x, weight, padding=tuple(pad), stride=tuple(step), dilation=tuple(dil), groups=c)
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

    def dense_forward(self, x: torch.Tensor, stride: int) -> torch.Tensor:
        """Raw features on a stride-``stride`` grid (4, 2 or 1): ``(N, C_out, *ceil(S / stride))``.

        Output ``j`` is the network's output for the patch centred at input voxel ``stride j``, computed in
        one pass "a trous": the last ``log2(4 / stride)`` BlurPools keep every position and the layers after
        them use taps that many voxels apart (dilation), which is the same computation as evaluating the
        stride-4 network on the image shifted by every multiple of ``stride`` (away from the low borders,
        where a shifted image sees zeros sooner) at about 1.5x (stride 2) or 8x (stride 1) the cost of one
        stride-4 pass instead of 8x or 64x. ``stride=4`` is :meth:`forward`.
        """
        if stride not in (1, 2, 4):
            raise ValueError(f"stride: expected 1, 2 or 4, got {stride!r}")
        if stride == 4:
            return self(x)
        if x.ndim != self.config.ndim + 2 or x.shape[1] != 1:
            raise ValueError(f"x: expected (N, 1, *S) with {self.config.ndim} spatial axes, got shape {tuple(x.shape)}")
        s = self.config.negative_slope
        op = F.conv3d if self.config.ndim == 3 else F.conv2d

        def conv(layer: nn.Module, y: torch.Tensor, dil: int) -> torch.Tensor:
            k = layer.kernel_size[0]
            return op(y, layer.weight, layer.bias, padding=dil * (k // 2), dilation=dil)

        def res(block: ResidualBlock, y: torch.Tensor, dil: int) -> torch.Tensor:
            z = F.leaky_relu(conv(block.conv1, y, dil), block.slope)
            return F.leaky_relu(y + conv(block.conv2, z, dil), block.slope)

        real = 1 if stride == 2 else 0  # BlurPools that subsample; the others dilate what follows
        x = res(self.res1, F.leaky_relu(conv(self.conv1, x, 1), s), 1)
        x = F.leaky_relu(conv(self.conv2, x, 1), s)
        x = self.pool1(x) if real >= 1 else self.pool1.blur(x, stride=1, dilation=1)
        dil = 1 if real >= 1 else 2
        x = F.leaky_relu(conv(self.conv3, res(self.res2, x, dil), dil), s)
        x = self.pool2.blur(x, stride=1, dilation=dil)
        dil *= 2
        return conv(self.head, res(self.res3, x, dil), dil)

    def centre_features(self, patches: torch.Tensor) -> torch.Tensor:
        """Norm-clipped feature vector at the centre voxel of each patch (size ``8 m + 1``): ``(N, C_out)``.

        The centre voxel ``4 m`` is feature node ``m``. (Sizes ``4 m + 1`` with ``m`` odd, such as 21, put the
        centre between nodes; the node used then sat 2 voxels off-centre per axis.)
        """
        sizes = patches.shape[2:]
        if any(s % 8 != 1 for s in sizes):
            raise ValueError(f"patches: expected sizes 8 m + 1 per axis (centre voxel on the stride-4 grid), got {tuple(sizes)}")
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


def channels_last_copy(model: DISANet) -> DISANet:
    """A copy of a 3D model with channels-last weights: oneDNN's 3D convolutions then run channels-last,
    1.6-1.9x faster on CPU for these 8-32 channel layers (measured, 2 threads, 96 x 112 x 96 and
    140 x 150 x 130 voxels; the same features to float rounding). A copy, so shared cached models and
    models in training are left as they are (about 100k parameters: copying costs a millisecond)."""
    twin = copy.deepcopy(model)
    return twin.to(memory_format=torch.channels_last_3d)


@torch.no_grad()
def extract_features(model: DISANet, image: torch.Tensor, *, max_voxels: int = 4_000_000, stride: int = 4) -> torch.Tensor:
    """Norm-clipped DISA features of ``image`` ``(N, 1, *S)`` -> ``(N, C_out, *ceil(S / stride))``, in slabs.

    The image is cut along its first spatial axis into slabs of at most about ``max_voxels`` voxels
    (a multiple of 4 thick) with a halo of 28 voxels each side (more than the receptive-field radius,
    24), so the result equals the whole-image computation while peak memory stays bounded (about
    ``max_voxels * 100`` bytes in float32 at stride 4: a 1 mm brain fits in well under 1 GB; denser
    strides keep more positions in the last stages, and their slabs are thinner by that factor).

    ``stride`` 2 or 1 (the network's own is 4) gives a denser feature map (feature ``j`` at voxel
    ``stride j``; :meth:`DISANet.dense_forward`).
    """
    if stride not in (1, 2, 4):
        raise ValueError(f"stride: expected 1, 2 or 4, got {stride!r}")
    if image.ndim == 5 and image.device.type == "cpu":
        model = channels_last_copy(model)
    n, _, *spatial = image.shape
    halo = 28
    budget = max_voxels if stride == 4 else max(1000, max_voxels // (2 if stride == 2 else 8))
    plane = int(np.prod(spatial[1:]))
    thick = max(4, (budget // max(plane, 1)) // 4 * 4)
    length = spatial[0]
    if thick >= length:
        return clip_norm(model.dense_forward(image, stride), dim=1)
    outs = []
    for start in range(0, length, thick):
        stop = min(start + thick, length)
        lo, hi = max(0, start - halo), min(length, stop + halo)
        out = model.dense_forward(image[:, :, lo:hi], stride)  # lo is a multiple of 4: output k <-> input lo + stride k
        k0 = (start - lo) // stride
        k1 = k0 + int(math.ceil((stop - start) / stride))
        outs.append(out[:, :, k0:k1])
    return clip_norm(torch.cat(outs, dim=2), dim=1)


register_architecture("disa", DISANet, DISAConfig)
