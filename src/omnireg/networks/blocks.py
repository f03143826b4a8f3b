"""Building blocks shared by omnireg's networks (2D or 3D by a constructor argument)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ResidualBlock", "conv_class"]


def conv_class(ndim: int) -> type[nn.Module]:
    """``nn.Conv3d`` for 3 spatial dimensions, ``nn.Conv2d`` for 2."""
    return nn.Conv3d if ndim == 3 else nn.Conv2d


class ResidualBlock(nn.Module):
    """``leaky(x + conv2(leaky(conv1(x))))`` with two 3x3(x3) "same" convolutions of ``width`` channels.

    Args:
        ndim: 2 or 3.
        width: channels in and out.
        slope: LeakyReLU negative slope.
        zero_init: start ``conv2`` at zero (the block starts as the identity).
    """

    def __init__(self, ndim: int, width: int, slope: float, *, zero_init: bool = False) -> None:
        super().__init__()
        conv = conv_class(ndim)
        self.conv1 = conv(width, width, 3, padding=1)
        self.conv2 = conv(width, width, 3, padding=1)
        self.slope = slope
        if zero_init:
            nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.conv1(x), self.slope)
        return F.leaky_relu(x + self.conv2(y), self.slope)
