"""Small smooth test images for the similarity tests (deterministic, 2D and 3D)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F


def smooth_field(shape, *, seed: int = 0, sigma: float = 2.0, dtype=torch.float64) -> torch.Tensor:
    """A smooth random image ``(1, 1, *shape)`` scaled to ``[0, 1]``: white noise blurred by a Gaussian."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((1, 1, *shape), generator=g, dtype=torch.float64)
    radius = int(math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    d = len(shape)
    conv = {2: F.conv2d, 3: F.conv3d}[d]
    for axis in range(d):
        view = [1] * d
        view[axis] = k.numel()
        pad = [0] * d
        pad[axis] = radius
        x = conv(F.pad(x, sum(([p, p] for p in reversed(pad)), []), mode="replicate"), k.view(1, 1, *view))
    x = (x - x.min()) / (x.max() - x.min())
    return x.to(dtype)


def shifted_crops(shape, shifts, *, seed: int = 0, margin: int = 3, dtype=torch.float64, sigma: float = 2.0):
    """Crops of one smooth field: the centred one and one per shift (integer voxels, tensor-axis order).

    Returns ``(fixed, [moving_for_shift, ...])``, all ``(1, 1, *shape)``; no wrap-around at the border.
    """
    big = smooth_field(tuple(s + 2 * margin for s in shape), seed=seed, sigma=sigma, dtype=dtype)

    def crop(offset):
        index = [slice(None), slice(None)] + [slice(margin + o, margin + o + s) for o, s in zip(offset, shape)]
        return big[tuple(index)].contiguous()

    d = len(shape)
    return crop((0,) * d), [crop(s) for s in shifts]


def axis_shifts(d: int, amounts=(1, 2)) -> list[tuple[int, ...]]:
    """Shifts of +-amount along every axis."""
    out = []
    for axis in range(d):
        for a in amounts:
            for sign in (-1, 1):
                s = [0] * d
                s[axis] = sign * a
                out.append(tuple(s))
    return out


@pytest.fixture(autouse=True)
def _single_thread():
    """The tensors here are tiny: one intra-op thread avoids thread start/sync overhead on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def field():
    return smooth_field


@pytest.fixture
def crops():
    return shifted_crops


@pytest.fixture
def shifts():
    return axis_shifts
