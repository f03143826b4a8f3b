"""A configurable 2D/3D U-Net (the backbone of VoxelMorph and of DeepSim's segmenter).

Layout, given ``enc_channels`` (length L) and ``dec_channels`` (length >= L); every convolution is
3x3(x3), "same" zero padding, followed by an optional normalisation (``norm``: none by default, as
VoxelMorph; ``batch`` or ``instance``, affine) and LeakyReLU(``negative_slope``)::

    encoder level l = 0 .. L-1:  conv -> enc_channels[l]   at resolution 1 / 2**l, then max-pool by 2
    bottleneck input:            the pooled level L-1 output, resolution 1 / 2**L
    decoder level l = 0 .. L-1:  conv -> dec_channels[l]   at resolution 1 / 2**(L-l),
                                 then nearest-neighbour upsampling by 2 and concatenation with the
                                 encoder level L-1-l output (the skip connection)
    remaining convolutions:      conv -> dec_channels[L:], one each, at the output resolution

This is VoxelMorph's mapping of its two lists (one convolution per level): with the defaults
(encoder 16, 32, 32, 32; decoder 32, 32, 32, 32, 32, 16, 16) the encoder convolutions run at 1, 1/2,
1/4, 1/8, the first four decoder convolutions at 1/16, 1/8, 1/4, 1/2, each followed by upsampling and
a skip, and the last three (32, 16, 16) at full resolution on 48 = 32 + 16 input channels.

``out_stride = 2**m`` (VoxelMorph's ``half_res`` is ``m = 1``) stops the decoder at resolution
``1 / 2**m``: the last ``m`` upsampling-and-skip steps are left out (decoder convolutions whose
upsampling is left out stay at that resolution) and the remaining convolutions run there. Output voxel
``k`` then covers input voxels ``2**m k .. 2**m (k + 1) - 1`` (cell-centred geometry, as pooling).

Inputs must have spatial sizes divisible by :attr:`UNet.stride` ``= 2**L``; registration networks pad
internally (:func:`omnireg.networks.registration.pad_to_multiple`).
"""

from __future__ import annotations

from enum import Enum
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import conv_class

__all__ = ["ConvBlock", "Norm", "UNet"]


class Norm(str, Enum):
    """Normalisation after each convolution: ``none``, ``batch`` (BatchNorm) or ``instance`` (InstanceNorm, affine)."""

    NONE = "none"
    BATCH = "batch"
    INSTANCE = "instance"


def _norm_layer(norm: Norm, ndim: int, channels: int) -> nn.Module | None:
    if norm is Norm.BATCH:
        return (nn.BatchNorm3d if ndim == 3 else nn.BatchNorm2d)(channels)
    if norm is Norm.INSTANCE:
        return (nn.InstanceNorm3d if ndim == 3 else nn.InstanceNorm2d)(channels, affine=True)
    return None


class ConvBlock(nn.Module):
    """One 3x3(x3) "same" convolution, an optional normalisation, then LeakyReLU."""

    def __init__(self, ndim: int, in_channels: int, out_channels: int, negative_slope: float,
                 norm: Norm | str = Norm.NONE) -> None:
        super().__init__()
        self.conv = conv_class(ndim)(in_channels, out_channels, 3, padding=1)
        self.norm = _norm_layer(Norm(norm), ndim, out_channels)  # None keeps VoxelMorph's parameter names
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.leaky_relu(x, self.negative_slope)


def _channels(values: Sequence[int], name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a sequence of ints, got {values!r}") from None
    if not out or min(out) < 1:
        raise ValueError(f"{name}: expected positive channel counts, got {values!r}")
    return out


class UNet(nn.Module):
    """U-Net with per-level encoder features (layout and channel mapping in the module docstring).

    Args:
        ndim: 2 or 3 spatial dimensions.
        in_channels: input channels.
        enc_channels: one convolution per encoder level (L levels: stride ``2**L``).
        dec_channels: ``L`` decoder convolutions (one per level, coarse first), then any number of
            remaining convolutions at the output resolution.
        out_stride: output resolution ``1 / out_stride`` (a power of two up to ``2**L``; default 1).
        negative_slope: LeakyReLU slope (VoxelMorph: 0.2).
        norm: normalisation after every convolution (:class:`Norm`; default none).

    Shape:
        ``forward``: ``(N, in_channels, *S)`` -> ``(N, out_channels, *S / out_stride)``, ``S`` divisible by
        :attr:`stride`. ``encode``: the list of per-level features (see :meth:`encode`).
    """

    def __init__(
        self,
        ndim: int,
        in_channels: int,
        enc_channels: Sequence[int] = (16, 32, 32, 32),
        dec_channels: Sequence[int] = (32, 32, 32, 32, 32, 16, 16),
        *,
        out_stride: int = 1,
        negative_slope: float = 0.2,
        norm: Norm | str = Norm.NONE,
    ) -> None:
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"ndim: expected 2 or 3, got {ndim!r}")
        try:
            norm = Norm(norm)
        except ValueError:
            raise ValueError(f"norm: expected one of {[n.value for n in Norm]}, got {norm!r}") from None
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels: expected a positive int, got {in_channels!r}")
        enc = _channels(enc_channels, "enc_channels")
        dec = _channels(dec_channels, "dec_channels")
        levels = len(enc)
        if len(dec) < levels:
            raise ValueError(f"dec_channels: expected at least {levels} entries (one per encoder level), got {len(dec)}")
        if not isinstance(out_stride, int) or out_stride < 1 or out_stride & (out_stride - 1) or out_stride > 2**levels:
            raise ValueError(f"out_stride: expected a power of two from 1 to {2**levels}, got {out_stride!r}")
        self.ndim, self.levels, self.out_stride = ndim, levels, out_stride
        self.stride = 2**levels
        skipped = out_stride.bit_length() - 1  # upsampling steps left out at the fine end
        self.encoder = nn.ModuleList()
        prev = in_channels
        for c in enc:
            self.encoder.append(ConvBlock(ndim, prev, c, negative_slope, norm))
            prev = c
        self.decoder = nn.ModuleList()
        self.upsample: list[bool] = []
        for level in range(levels):
            self.decoder.append(ConvBlock(ndim, prev, dec[level], negative_slope, norm))
            prev = dec[level]
            up = level < levels - skipped
            self.upsample.append(up)
            if up:
                prev += enc[levels - 1 - level]
        self.remaining = nn.ModuleList()
        for c in dec[levels:]:
            self.remaining.append(ConvBlock(ndim, prev, c, negative_slope, norm))
            prev = c
        self.enc_channels, self.dec_channels = enc, dec
        self.out_channels = prev

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor (N, C, *S), got {type(x).__name__}")
        if x.ndim != self.ndim + 2 or x.shape[1] != self.encoder[0].conv.in_channels:
            raise ValueError(
                f"x: expected shape (N, {self.encoder[0].conv.in_channels}, *S) with {self.ndim} spatial axes, got {tuple(x.shape)}"
            )
        if any(s % self.stride for s in x.shape[2:]):
            raise ValueError(
                f"x: expected spatial sizes divisible by the U-Net's stride {self.stride}, got {tuple(x.shape[2:])} "
                "(pad with omnireg.networks.registration.pad_to_multiple)"
            )

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features: ``[e_0, ..., e_{L-1}, bottleneck]``.

        ``e_l`` ``(N, enc_channels[l], *S / 2**l)`` is encoder level ``l``'s output before pooling; the last
        entry is the pooled ``e_{L-1}`` ``(N, enc_channels[-1], *S / 2**L)``, the decoder's input.
        """
        self._check(x)
        feats = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self._pool(feats[-1]))
            feats.append(x)
        feats.append(self._pool(feats[-1]))
        return feats

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The decoder on :meth:`encode`'s list: ``(N, out_channels, *S / out_stride)``."""
        if len(features) != self.levels + 1:
            raise ValueError(f"features: expected {self.levels + 1} tensors from encode(), got {len(features)}")
        x = features[-1]
        for level, block in enumerate(self.decoder):
            x = block(x)
            if self.upsample[level]:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
                x = torch.cat([x, features[self.levels - 1 - level]], dim=1)
        for block in self.remaining:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Last decoder features ``(N, out_channels, *S / out_stride)`` of ``x`` ``(N, in_channels, *S)``."""
        return self.decode(self.encode(x))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(x, 2) if self.ndim == 3 else F.max_pool2d(x, 2)
