"""Feature fusion for the pyramid registration network: the multi-scale feature fusion block (MSFB).

At every scale of :class:`~omnireg.networks.pyramid.PyramidNet` the decoder has several *groups* of
candidate features, e.g. the encoder features of the fixed and of the (warped) moving image, the
auxiliary decoder's features of both, and the decoder's own state with the current displacement. A
fusion block turns them into one feature map of ``channels`` channels:

1. **Projection**: each group (its tensors concatenated along channels) goes through one convolution
   (1x1(x1) with ``pointwise``, else 3x3(x3) as the reference code), LeakyReLU and instance
   normalisation to ``channels`` channels.
2. **Global branch** (:class:`GroupWeights`; ``msfb`` fusion with ``global`` or ``both`` branches):
   global average and global max pooling of every projected group, concatenated, go through a small
   MLP (``2 G C -> C -> G``, ReLU) and a softmax over the ``G`` groups; each group is multiplied by its
   weight (one weight per sample and group, the weights of a sample sum to one).
3. **Mixing**: the (weighted) groups, concatenated, go through a 3x3(x3) convolution block to
   ``channels`` channels.
4. **Local branch** (``local`` or ``both``): the mixed map ``x`` is split into a low-frequency part
   ``L = G_sigma * x`` (Gaussian, ``lowpass_sigma`` voxels, radius ``ceil(sigma)``: 3 taps at the default sigma 1,
   replicated borders) and a high-frequency part ``H = x - L``. Each part is reweighted by its own
   :class:`SpatialAttention` (channel mean and max, convolutions with several kernel sizes, a 1x1
   convolution, sigmoid) and the two are concatenated and mixed by a last convolution (1x1(x1) with
   ``pointwise``, else 3x3(x3)), LeakyReLU and instance normalisation.

``concat`` fusion (the ablation "without MSFB") keeps steps 1 and 3 only: same projections, same
mixing convolution, no global weights, no local branch; so ``msfb`` minus ``concat`` parameters are
exactly those of the global MLP and of the local branch.

Written for omnireg after the description of arXiv 2408.05717 and the design of its published
reference code (DAFF-Net, ``learn2reg``); differences are listed in
:mod:`omnireg.networks.pyramid`.
"""

from __future__ import annotations

from enum import Enum
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..core.filters import gaussian_kernel1d
from .blocks import conv_class

__all__ = [
    "ConvBlock",
    "FeatureFusion",
    "Fusion",
    "GroupWeights",
    "MSFBBranches",
    "SpatialAttention",
    "conv_norm_act",
    "lowpass",
]


class Fusion(str, Enum):
    """How the pyramid decoder fuses its candidate feature groups at each scale."""

    CONCAT = "concat"  # projections concatenated and mixed by a convolution
    MSFB = "msfb"  # the multi-scale feature fusion block (global and/or local attention)


class MSFBBranches(str, Enum):
    """Which attention branches an MSFB has."""

    GLOBAL = "global"  # softmax weights over the groups from global pooling
    LOCAL = "local"  # low/high-frequency split with spatial attention
    BOTH = "both"


def conv_norm_act(ndim: int, cin: int, cout: int, *, kernel_size: int = 3, slope: float = 0.2, norm: bool = True) -> nn.Sequential:
    """``conv -> LeakyReLU -> InstanceNorm`` (no affine parameters), "same" padding, stride 1."""
    layers: list[nn.Module] = [conv_class(ndim)(cin, cout, kernel_size, padding=kernel_size // 2), nn.LeakyReLU(slope)]
    if norm:
        layers.append(nn.InstanceNorm3d(cout) if ndim == 3 else nn.InstanceNorm2d(cout))
    return nn.Sequential(*layers)


class ConvBlock(nn.Sequential):
    """Two :func:`conv_norm_act` layers: ``cin -> cout -> cout`` (3x3(x3))."""

    def __init__(self, ndim: int, cin: int, cout: int, *, slope: float = 0.2, norm: bool = True) -> None:
        super().__init__(conv_norm_act(ndim, cin, cout, slope=slope, norm=norm), conv_norm_act(ndim, cout, cout, slope=slope, norm=norm))


def lowpass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of ``x`` ``(N, C, *S)`` per channel: radius ``max(1, ceil(sigma))`` voxels, replicated borders.

    Equals :func:`omnireg.core.filters.gaussian_blur` ``(x, sigma, truncate=1.0)``, computed as one
    depthwise convolution with the outer-product kernel (about 20x faster on a CPU for 16 channels
    than the axis-by-axis 1D convolutions of the general filter).
    """
    d = x.ndim - 2
    k1 = gaussian_kernel1d(float(sigma), truncate=1.0, dtype=x.dtype, device=x.device)
    kernel = k1
    for _ in range(d - 1):
        kernel = kernel.unsqueeze(-1) * k1
    r = k1.numel() // 2
    c = x.shape[1]
    padded = F.pad(x, [r] * (2 * d), mode="replicate")
    conv = F.conv3d if d == 3 else F.conv2d
    return conv(padded, kernel.expand(c, 1, *kernel.shape), groups=c)


def _global_pool(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, *S)`` -> ``(N, 2C)``: global average then global maximum per channel."""
    flat = x.flatten(2)
    return torch.cat([flat.mean(-1), flat.amax(-1)], dim=1)


class GroupWeights(nn.Module):
    """The MSFB's global branch: softmax weights over ``groups`` feature maps of ``channels`` channels each.

    Args:
        groups: number of candidate groups ``G`` (>= 2).
        channels: channels ``C`` of every group.
        hidden: width of the MLP's hidden layer (default ``C``).
    """

    def __init__(self, groups: int, channels: int, *, hidden: int | None = None) -> None:
        super().__init__()
        if groups < 2:
            raise ValueError(f"groups: expected >= 2 groups to weigh, got {groups!r}")
        hidden = int(hidden or channels)
        self.mlp = nn.Sequential(nn.Linear(2 * groups * channels, hidden), nn.ReLU(), nn.Linear(hidden, groups))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Weights ``(N, G)``, non-negative, summing to one over the groups of each sample.

        Args:
            features: ``G`` tensors ``(N, C, *S)``.
        """
        stats = torch.cat([_global_pool(f) for f in features], dim=1)
        return torch.softmax(self.mlp(stats), dim=1)


class SpatialAttention(nn.Module):
    """``x * sigmoid(w(x))``: a spatial attention map from the channel mean and max of ``x``.

    The map convolves the 2-channel ``[mean_c x, max_c x]`` with one single-output convolution per
    kernel size in ``kernel_sizes`` ("same" padding), mixes their outputs by a 1x1(x1) convolution and
    applies a sigmoid, giving a weight in (0, 1) per voxel shared by all channels.

    Args:
        ndim: 2 or 3.
        kernel_sizes: odd kernel sizes of the parallel convolutions.
    """

    def __init__(self, ndim: int, kernel_sizes: Sequence[int] = (3, 5, 7)) -> None:
        super().__init__()
        conv = conv_class(ndim)
        self.convs = nn.ModuleList(conv(2, 1, int(k), padding=int(k) // 2) for k in kernel_sizes)
        self.mix = conv(len(self.convs), 1, 1)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The weights ``(N, 1, *S)`` in (0, 1)."""
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return torch.sigmoid(self.mix(torch.cat([c(pooled) for c in self.convs], dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention_map(x)


class FeatureFusion(nn.Module):
    """Fuse ``G`` groups of features into ``channels`` channels: MSFB or plain concatenation (module docstring).

    Args:
        ndim: 2 or 3.
        group_channels: channels of each input group (its tensors concatenated), ``G`` entries.
        channels: channels ``C`` of the projections and of the output.
        fusion: ``msfb`` or ``concat`` (:class:`Fusion`).
        branches: the MSFB's branches (:class:`MSFBBranches`); ignored for ``concat``.
        attention_kernels: kernel sizes of :class:`SpatialAttention`.
        lowpass_sigma: standard deviation (voxels) of the local branch's Gaussian low-pass filter.
        slope: LeakyReLU slope.
        norm: instance normalisation after each convolution.
        pointwise: 1x1(x1) group projections and local-branch output convolution (else 3x3(x3), as the
            reference code); the mixing convolution is 3x3(x3) either way.
    """

    def __init__(
        self,
        ndim: int,
        group_channels: Sequence[int],
        channels: int,
        *,
        fusion: Fusion | str = Fusion.MSFB,
        branches: MSFBBranches | str = MSFBBranches.BOTH,
        attention_kernels: Sequence[int] = (3, 5, 7),
        lowpass_sigma: float = 1.0,
        slope: float = 0.2,
        norm: bool = True,
        pointwise: bool = True,
    ) -> None:
        super().__init__()
        fusion, branches = Fusion(fusion), MSFBBranches(branches)
        groups = len(group_channels)
        self.lowpass_sigma = float(lowpass_sigma)
        k = 1 if pointwise else 3
        self.project = nn.ModuleList(conv_norm_act(ndim, int(c), channels, kernel_size=k, slope=slope, norm=norm) for c in group_channels)
        use_global = fusion is Fusion.MSFB and branches is not MSFBBranches.LOCAL and groups >= 2
        use_local = fusion is Fusion.MSFB and branches is not MSFBBranches.GLOBAL
        self.weights = GroupWeights(groups, channels) if use_global else None
        self.mix = conv_norm_act(ndim, groups * channels, channels, slope=slope, norm=norm)
        if use_local:
            self.attend_low = SpatialAttention(ndim, attention_kernels)
            self.attend_high = SpatialAttention(ndim, attention_kernels)
            self.out = conv_norm_act(ndim, 2 * channels, channels, kernel_size=k, slope=slope, norm=norm)
        else:
            self.attend_low = self.attend_high = self.out = None

    def fuse(self, groups: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The fused features and the global weights.

        Args:
            groups: ``G`` tensors ``(N, C_g, *S)`` on one grid (``C_g`` = ``group_channels[g]``).

        Returns:
            ``(fused (N, C, *S), weights (N, G) or None without a global branch)``.

        Raises:
            ValueError: wrong number of groups.
        """
        if len(groups) != len(self.project):
            raise ValueError(f"groups: expected {len(self.project)} feature groups, got {len(groups)}")
        projected = [p(g) for p, g in zip(self.project, groups)]
        weights = None
        if self.weights is not None:
            weights = self.weights(projected)
            shape = (weights.shape[0],) + (1,) * (projected[0].ndim - 1)
            projected = [f * weights[:, i].reshape(shape) for i, f in enumerate(projected)]
        x = self.mix(torch.cat(projected, dim=1))
        if self.out is not None:
            low = lowpass(x, self.lowpass_sigma)
            x = self.out(torch.cat([self.attend_low(low), self.attend_high(x - low)], dim=1))
        return x, weights

    def forward(self, groups: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.fuse(groups)[0]

