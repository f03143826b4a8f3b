"""Random convolutions: appearance changes as large as a change of modality, with the geometry kept.

A random-convolution network (RandConv; Xu et al. 2021, used by MAD, arXiv 2309.02875) is a short
stack of convolutions with freshly drawn random weights and no learning:

``h_0 = x``; ``h_l = phi(standardize(conv_l(h_{l-1})))`` for ``l = 1 .. depth - 1``;
``y = standardize(conv_depth(h_{depth-1}))``; optionally ``y = alpha * standardize(x) + (1 - alpha) * y``.

- every ``conv_l`` has a kernel size drawn from ``kernel_sizes`` (odd, voxels), ``hidden_channels``
  channels between layers (1 in and 1 out per image channel), He-normal weights and a random bias
  (``bias_std`` times the standard deviation of its input), and replicate padding ("same" size);
- ``phi`` is a leaky ReLU (``negative_slope``), or a clamp to ``[-clamp, clamp]``
  (:class:`RandConvNonlinearity`); ``standardize`` rescales to zero mean and unit variance per item and
  channel, so the depth does not change the intensity scale;
- ``alpha`` is drawn uniformly from ``mix`` for every item (``(0, 0)``: no mixing).

Because every output voxel is a (non-linear) function of a small neighbourhood of the same input voxel,
edges and region boundaries stay where they are; because the weights are random with both signs, the
intensity relation between regions changes arbitrarily (contrast inversions, non-monotone maps),
as between MR contrasts. Every item of a batch gets its own random network; all randomness comes from
the ``generator``.

Example:
    >>> import torch
    >>> x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> y = random_convolution(x, generator=torch.Generator().manual_seed(1))
    >>> y.shape
    torch.Size([2, 1, 16, 16])
    >>> z = random_convolution(x, generator=torch.Generator().manual_seed(1))
    >>> bool(torch.equal(y, z))
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from ..core.enums import as_enum

__all__ = ["RandConvConfig", "RandConvNonlinearity", "RandomConvolution", "random_convolution"]


class RandConvNonlinearity(str, Enum):
    """Non-linearity between random convolution layers."""

    LEAKY_RELU = "leaky_relu"
    CLAMP = "clamp"


@dataclass
class RandConvConfig:
    """Settings of :func:`random_convolution`.

    Attributes:
        kernel_sizes: odd kernel sizes (voxels) from which each layer draws one uniformly.
        depth: number of convolution layers (>= 1).
        hidden_channels: channels between layers (ignored when ``depth == 1``).
        nonlinearity: ``leaky_relu`` or ``clamp`` (:class:`RandConvNonlinearity`).
        negative_slope: slope of the leaky ReLU for negative inputs.
        clamp: bound of the clamp non-linearity (in standard deviations).
        bias_std: standard deviation of the random biases, relative to the layer's input scale.
        mix: range of the mixing weight ``alpha`` of the (standardised) input, ``0 <= lo <= hi <= 1``.
    """

    kernel_sizes: tuple[int, ...] = (1, 3)
    depth: int = 4
    hidden_channels: int = 4
    nonlinearity: RandConvNonlinearity | str = RandConvNonlinearity.LEAKY_RELU
    negative_slope: float = 0.2
    clamp: float = 1.0
    bias_std: float = 0.5
    mix: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        try:
            self.kernel_sizes = tuple(int(k) for k in self.kernel_sizes)
        except (TypeError, ValueError):
            raise TypeError(f"kernel_sizes: expected a sequence of odd integers, got {self.kernel_sizes!r}") from None
        if not self.kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes: expected one or more odd sizes >= 1, got {self.kernel_sizes!r}")
        if int(self.depth) < 1:
            raise ValueError(f"depth: expected >= 1 layers, got {self.depth!r}")
        self.depth = int(self.depth)
        if int(self.hidden_channels) < 1:
            raise ValueError(f"hidden_channels: expected >= 1, got {self.hidden_channels!r}")
        self.hidden_channels = int(self.hidden_channels)
        self.nonlinearity = as_enum(self.nonlinearity, RandConvNonlinearity, "nonlinearity")
        if not self.clamp > 0:
            raise ValueError(f"clamp: expected > 0, got {self.clamp!r}")
        if self.bias_std < 0:
            raise ValueError(f"bias_std: expected >= 0, got {self.bias_std!r}")
        lo, hi = (float(v) for v in self.mix)
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"mix: expected 0 <= lo <= hi <= 1, got {self.mix!r}")
        self.mix = (lo, hi)


def _standardize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Zero mean, unit variance per (item, channel) over the spatial axes."""
    flat = x.flatten(2)
    mean = flat.mean(-1)
    std = flat.std(-1, unbiased=False)
    shape = (*x.shape[:2],) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) / (std.reshape(shape) + eps)


def random_convolution(
    image: torch.Tensor,
    *,
    config: RandConvConfig | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply an independent random convolution network to every item and channel of ``image``.

    See the module docstring for the formula. The output is standardised (zero mean, unit variance
    per item and channel); rescale it as the consumer needs (e.g. to the ``[0, 1]`` percentile range).

    Args:
        image: ``(N, C, *S)`` batch, ``S`` 2D or 3D (voxel grid; kernels are in voxels).
        config: a :class:`RandConvConfig` (default settings when ``None``).
        generator: source of all randomness (kernel sizes, weights, biases, mixing); ``None`` uses a
            generator seeded with 0 (deterministic).

    Returns:
        ``(N, C, *S)``, same dtype and device as ``image``.

    Raises:
        TypeError: ``image`` is not a floating-point tensor.
        ValueError: ``image`` does not have 2 or 3 spatial axes.

    Shape:
        image ``(N, C, *S)`` -> ``(N, C, *S)``.
    """
    if not isinstance(image, torch.Tensor) or not image.dtype.is_floating_point:
        raise TypeError(f"image: expected a floating-point tensor, got {type(image).__name__}")
    d = image.ndim - 2
    if d not in (2, 3):
        raise ValueError(f"image: expected shape (N, C, *S) with 2 or 3 spatial axes, got {tuple(image.shape)}")
    cfg = config or RandConvConfig()
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    n, c = image.shape[:2]
    groups = n * c
    dtype, device = image.dtype, image.device
    conv = F.conv3d if d == 3 else F.conv2d
    x0 = _standardize(image)
    h = x0.reshape(1, groups, *image.shape[2:])
    widths = [1] + [cfg.hidden_channels] * (cfg.depth - 1) + [1]
    for layer in range(cfg.depth):
        k = cfg.kernel_sizes[int(torch.randint(len(cfg.kernel_sizes), (1,), generator=g))]
        c_in, c_out = widths[layer], widths[layer + 1]
        fan_in = c_in * k**d
        gain = math.sqrt(2.0 / (1.0 + cfg.negative_slope**2))
        w = torch.randn(groups * c_out, c_in, *([k] * d), generator=g, dtype=torch.float64) * (gain / math.sqrt(fan_in))
        b = torch.randn(groups * c_out, generator=g, dtype=torch.float64) * cfg.bias_std
        if k > 1:
            h = F.pad(h, [k // 2] * (2 * d), mode="replicate")
        h = conv(h, w.to(dtype=dtype, device=device), b.to(dtype=dtype, device=device), groups=groups)
        h = _standardize(h)
        if layer < cfg.depth - 1:
            if cfg.nonlinearity is RandConvNonlinearity.LEAKY_RELU:
                h = F.leaky_relu(h, cfg.negative_slope)
            else:
                h = h.clamp(-cfg.clamp, cfg.clamp)
    y = h.reshape(n, c, *image.shape[2:])
    lo, hi = cfg.mix
    if hi > 0:
        alpha = lo + (hi - lo) * torch.rand(n, c, generator=g, dtype=torch.float64)
        alpha = alpha.to(dtype=dtype, device=device).reshape(n, c, *([1] * d))
        y = _standardize(alpha * x0 + (1 - alpha) * y)
    return y


class RandomConvolution(nn.Module):
    """Module form of :func:`random_convolution` (no parameters; holds the config).

    ``forward(image, generator)``; see :func:`random_convolution` for shapes.
    """

    def __init__(self, config: RandConvConfig | None = None) -> None:
        super().__init__()
        self.config = config or RandConvConfig()

    def forward(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return random_convolution(image, config=self.config, generator=generator)

    def extra_repr(self) -> str:
        return repr(self.config)
