"""The MAD distance network: a small ResNet-style CNN that predicts the distance (mm) between two patch centres.

MAD (Sideri-Lampretsa et al., arXiv 2309.02875) trains a CNN on pairs of patches cut from two different
random-convolution "modalities" of the same single-modality image, at centres a known offset apart,
to predict the Euclidean distance between the centres. Averaged over patch pairs sampled on the fixed
image and the warped moving image, the prediction is a modality-agnostic distance to minimise.

Architecture (omnireg's choice, sized for CPU; the paper's exact network is not reproduced): the two
patches are stacked as 2 channels of a ``p^D`` input (``p`` = ``patch_size``) and go through

- a stem: conv 2 -> ``widths[0]`` (3x3(x3), stride 1), LeakyReLU;
- per stage ``s`` = 1, 2, 3: conv ``widths[s-1] -> widths[s]`` with stride 2, LeakyReLU, then ``depth``
  residual blocks (two 3x3(x3) convolutions, identity skip);
- global average pooling, a hidden linear layer of ``head_width`` (LeakyReLU) and one output passed
  through ``softplus``, scaled by ``distance_scale_mm``: a non-negative distance in mm.

With ``patch_size`` 16 and widths (8, 16, 32, 32) a 3D pair costs about 11 M multiply-adds, so the
registration's 64 patch pairs take a few tens of milliseconds per evaluation on one CPU core.

Convention:
    Channel 0 is the patch of the fixed image, channel 1 the patch of the (warped) moving image, both
    sampled on the same ``p^D`` patch grid of spacing ``patch_spacing_mm`` and rescaled as in training
    (robust ``[0, 1]`` range of the whole image). The distance is meant to be symmetric in the two
    channels (training offsets point in uniformly random directions); the order is not swapped in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import ResidualBlock, conv_class
from .store import register_architecture

__all__ = ["MADConfig", "MADNet", "structure_features"]


@dataclass
class MADConfig:
    """Architecture of a MAD distance network and the patch geometry it was trained for.

    Attributes:
        ndim: 2 or 3 (spatial dimensions).
        patch_size: patch side in voxels (the input is ``patch_size^ndim``), >= 8.
        patch_spacing_mm: spacing of the patch grid in mm (patches are sampled at this physical spacing,
            whatever the image's voxel size).
        widths: channels of the stem and of the three stride-2 stages.
        depth: residual blocks per stage.
        head_width: width of the hidden linear layer.
        negative_slope: LeakyReLU slope.
        distance_scale_mm: output scale: ``distance = distance_scale_mm * softplus(z)``.
        max_distance_mm: largest centre offset seen in training (predictions beyond it are saturated).
        input_features: ``raw`` (the two patches) or ``structure`` (each patch standardised to zero mean and
            unit variance, plus their product, their gradient magnitudes and the product of those: six
            channels that make intensity-independent cues explicit; see the module docstring).
    """

    ndim: int = 3
    patch_size: int = 16
    patch_spacing_mm: float = 3.0
    widths: tuple[int, int, int, int] = (8, 16, 32, 32)
    depth: int = 1
    head_width: int = 32
    negative_slope: float = 0.1
    distance_scale_mm: float = 10.0
    max_distance_mm: float = 40.0
    input_features: str = "structure"

    def __post_init__(self) -> None:
        if self.ndim not in (2, 3):
            raise ValueError(f"ndim: expected 2 or 3, got {self.ndim!r}")
        if int(self.patch_size) < 8:
            raise ValueError(f"patch_size: expected >= 8 voxels, got {self.patch_size!r}")
        self.patch_size = int(self.patch_size)
        if not self.patch_spacing_mm > 0:
            raise ValueError(f"patch_spacing_mm: expected > 0, got {self.patch_spacing_mm!r}")
        self.widths = tuple(int(c) for c in self.widths)
        if len(self.widths) != 4 or min(self.widths) < 1:
            raise ValueError(f"widths: expected four positive widths, got {self.widths!r}")
        if int(self.depth) < 0:
            raise ValueError(f"depth: expected >= 0, got {self.depth!r}")
        self.depth = int(self.depth)
        if self.input_features not in ("raw", "structure"):
            raise ValueError(f"input_features: expected 'raw' or 'structure', got {self.input_features!r}")
        if not self.max_distance_mm > 0 or not self.distance_scale_mm > 0:
            raise ValueError("max_distance_mm, distance_scale_mm: expected > 0")


def structure_features(pair: torch.Tensor, *, floor: float = 0.02) -> torch.Tensor:
    """Six intensity-robust channels of a patch pair ``(N, 2, *P)``: ``[f, m, f m, |grad f|, |grad m|, |grad f| |grad m|]``.

    ``f`` and ``m`` are the patches standardised to zero mean and unit variance over each patch (standard
    deviation floored at ``floor``, in the units of the ``[0, 1]`` input range, so flat background patches are
    not amplified); gradients are central differences in patch voxels (replicate border).
    """
    d = pair.ndim - 2
    flat = pair.flatten(2)
    mean = flat.mean(-1).reshape(*pair.shape[:2], *([1] * d))
    std = flat.std(-1, unbiased=False).reshape(*pair.shape[:2], *([1] * d))
    z = (pair - mean) / (std + floor)
    sq = torch.zeros_like(z)
    for axis in range(d):
        a = 2 + axis
        n = z.shape[a]
        fwd = torch.cat([z.narrow(a, 1, n - 1), z.narrow(a, n - 1, 1)], dim=a)
        bwd = torch.cat([z.narrow(a, 0, 1), z.narrow(a, 0, n - 1)], dim=a)
        sq = sq + (0.5 * (fwd - bwd)) ** 2
    g = torch.sqrt(sq + 1e-6)
    return torch.cat([z, z[:, :1] * z[:, 1:], g, g[:, :1] * g[:, 1:]], dim=1)


class MADNet(nn.Module):
    """MAD distance CNN (module docstring): ``forward(pair)`` ``(N, 2, p, ..., p)`` -> ``(N,)`` distances in mm."""

    def __init__(self, config: MADConfig | None = None) -> None:
        super().__init__()
        self.config = config or MADConfig()
        cfg = self.config
        d, w, s = cfg.ndim, cfg.widths, cfg.negative_slope
        conv = conv_class(d)
        self.stem = conv(2 if cfg.input_features == "raw" else 6, w[0], 3, padding=1)
        stages = []
        for i in range(3):
            blocks: list[nn.Module] = [conv(w[i], w[i + 1], 3, stride=2, padding=1), nn.LeakyReLU(s)]
            blocks += [ResidualBlock(d, w[i + 1], s, zero_init=True) for _ in range(cfg.depth)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.hidden = nn.Linear(w[3], cfg.head_width)
        self.out = nn.Linear(cfg.head_width, 1)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        """Predicted distance (mm) between the centres of the two patches of each pair.

        Args:
            pair: ``(N, 2, p, ..., p)`` (``ndim`` spatial axes of ``patch_size``): fixed and moving patch.

        Returns:
            ``(N,)`` non-negative distances in mm.

        Raises:
            ValueError: wrong shape (the message gives the expected one).

        Shape:
            pair ``(N, 2, *[p] * ndim)`` -> ``(N,)``.
        """
        cfg = self.config
        expected = (2,) + (cfg.patch_size,) * cfg.ndim
        if pair.ndim != cfg.ndim + 2 or tuple(pair.shape[1:]) != expected:
            raise ValueError(f"pair: expected shape (N, {', '.join(map(str, expected))}), got {tuple(pair.shape)}")
        s = cfg.negative_slope
        x = pair if cfg.input_features == "raw" else structure_features(pair)
        x = F.leaky_relu(self.stem(x), s)
        x = self.stages(x)
        x = x.flatten(2).mean(-1)
        x = F.leaky_relu(self.hidden(x), s)
        return cfg.distance_scale_mm * F.softplus(self.out(x)[:, 0])


register_architecture("mad", MADNet, MADConfig)
