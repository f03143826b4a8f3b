"""VoxelMorph and VoxelMorph-diff: a U-Net that maps a (moving, fixed) pair to a dense voxel displacement.

The architecture follows VoxelMorph (Balakrishnan et al. 2019; Dalca et al. 2019 for the diffeomorphic
variant), written for omnireg's conventions:

- the input is ``cat([moving, fixed], dim=1)``, zero-padded at the high end of every axis to a multiple
  of the U-Net's stride ``2**L`` (so any shape works; voxel indices are unchanged and the outputs are
  cropped back to the input's shape);
- the :class:`~omnireg.networks.unet.UNet` (encoder 16, 32, 32, 32; decoder 32, 32, 32, 32, 32, 16, 16 by
  default; LeakyReLU 0.2) is followed by a 3x3(x3) convolution to ``D`` channels whose weights start
  ~ N(0, ``flow_init_std``) (1e-5) and bias at 0, so a new network predicts an almost-identity map;
- ``voxelmorph`` (``diffeomorphic=False``): that field is the displacement, at full resolution;
- ``voxelmorph-diff`` (``diffeomorphic=True``): the decoder stops at ``1 / int_downsize`` resolution
  (VoxelMorph's "half_res" for the default 2: the last upsampling and skip are left out) and the field
  is a stationary velocity ``v`` there. ``exp(v)`` is integrated by scaling and squaring with
  ``int_steps`` (7) squarings in voxel units of that grid
  (:func:`~omnireg.networks.registration.integrate_velocity_voxels`) and brought to full resolution with
  its vectors scaled by ``int_downsize`` (:func:`~omnireg.networks.registration.resize_displacement`:
  half-resolution voxel ``k`` covers full-resolution voxels ``2k, 2k + 1``). The inverse map is
  ``exp(-v)``, integrated and upsampled the same way.

Output (:class:`~omnireg.networks.registration.NetworkOutput`): ``displacement`` ``(N, D, *S)`` in voxel
units of the input grid (pull: fixed voxel ``x`` maps to moving voxel ``x + u(x)``); for the diff model
also ``inverse`` ``(N, D, *S)`` and ``velocity`` ``(N, D, *S_pad / int_downsize)`` on the half-resolution
grid of the padded input; ``scales`` is empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .blocks import conv_class
from .registration import (
    NetworkOutput,
    RegistrationNetwork,
    crop_to_shape,
    integrate_velocity_voxels,
    pad_to_multiple,
    resize_displacement,
)
from .store import register_architecture
from .unet import UNet

__all__ = ["VOXELMORPH_KINDS", "VoxelMorph", "VoxelMorphConfig"]

VOXELMORPH_KINDS = {"voxelmorph": False, "voxelmorph-diff": True}
"""Model names (store kinds, ``--model`` names) and whether each is diffeomorphic."""


def _ints(values: object, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a sequence of ints, got {values!r}") from None
    if not out or min(out) < 1:
        raise ValueError(f"{name}: expected positive channel counts, got {values!r}")
    return out


@dataclass
class VoxelMorphConfig:
    """Architecture of a VoxelMorph network (saved beside its weights).

    Attributes:
        ndim: 2 or 3 spatial dimensions.
        in_channels: channels of moving and fixed together (2 for single-channel images).
        enc_channels: U-Net encoder convolutions, one per level (stride ``2**len``).
        dec_channels: U-Net decoder convolutions (one per level, then the remaining ones at the output
            resolution); see :mod:`omnireg.networks.unet` for the mapping.
        diffeomorphic: False: ``voxelmorph`` (displacement); True: ``voxelmorph-diff`` (velocity field,
            scaling and squaring, exact inverse).
        int_steps: squarings of the scaling and squaring (diff model only; >= 1).
        int_downsize: the velocity field's resolution factor (diff model only; a power of two up to the
            U-Net's stride; 1 integrates at full resolution).
        negative_slope: LeakyReLU slope.
        flow_init_std: standard deviation of the initial weights of the last (flow) convolution.
    """

    ndim: int = 3
    in_channels: int = 2
    enc_channels: tuple[int, ...] = (16, 32, 32, 32)
    dec_channels: tuple[int, ...] = (32, 32, 32, 32, 32, 16, 16)
    diffeomorphic: bool = False
    int_steps: int = 7
    int_downsize: int = 2
    negative_slope: float = 0.2
    flow_init_std: float = 1e-5

    def __post_init__(self) -> None:
        if self.ndim not in (2, 3) or isinstance(self.ndim, bool):
            raise ValueError(f"ndim: expected 2 or 3, got {self.ndim!r}")
        if not isinstance(self.in_channels, int) or self.in_channels < 2:
            raise ValueError(f"in_channels: expected an int >= 2 (moving and fixed channels together), got {self.in_channels!r}")
        self.enc_channels = _ints(self.enc_channels, "enc_channels")
        self.dec_channels = _ints(self.dec_channels, "dec_channels")
        if len(self.dec_channels) < len(self.enc_channels):
            raise ValueError(
                f"dec_channels: expected at least {len(self.enc_channels)} entries (one per encoder level), got {len(self.dec_channels)}"
            )
        if not isinstance(self.diffeomorphic, bool):
            raise TypeError(f"diffeomorphic: expected a bool, got {self.diffeomorphic!r}")
        if not isinstance(self.int_steps, int) or isinstance(self.int_steps, bool) or self.int_steps < 1:
            raise ValueError(f"int_steps: expected an int >= 1 (number of squarings), got {self.int_steps!r}")
        top = 2 ** len(self.enc_channels)
        f = self.int_downsize
        if not isinstance(f, int) or isinstance(f, bool) or f < 1 or f & (f - 1) or f > top:
            raise ValueError(f"int_downsize: expected a power of two from 1 to {top}, got {f!r}")
        if not self.flow_init_std >= 0:
            raise ValueError(f"flow_init_std: expected a non-negative standard deviation, got {self.flow_init_std!r}")

    @property
    def kind(self) -> str:
        """The store kind and model name: ``"voxelmorph-diff"`` or ``"voxelmorph"``."""
        return "voxelmorph-diff" if self.diffeomorphic else "voxelmorph"

    @classmethod
    def from_kind(cls, kind: str, **fields: object) -> "VoxelMorphConfig":
        """The config of model ``kind`` (a key of :data:`VOXELMORPH_KINDS`) with other fields as given."""
        if kind not in VOXELMORPH_KINDS:
            raise ValueError(f"kind: expected one of {sorted(VOXELMORPH_KINDS)}, got {kind!r}")
        if "diffeomorphic" in fields:
            raise TypeError("fields: 'diffeomorphic' follows from kind; do not pass it")
        return cls(diffeomorphic=VOXELMORPH_KINDS[kind], **fields)  # type: ignore[arg-type]


class VoxelMorph(RegistrationNetwork):
    """VoxelMorph (``diffeomorphic=False``) or VoxelMorph-diff (``True``); architecture in the module docstring.

    Args:
        config: the architecture (default: 3D ``voxelmorph``).

    Shape:
        ``forward(moving, fixed)``: ``(N, C_m, *S)`` and ``(N, C_f, *S)`` with ``C_m + C_f = in_channels``,
        any ``S`` -> :class:`NetworkOutput` with ``displacement`` ``(N, D, *S)`` (voxel units).
    """

    def __init__(self, config: VoxelMorphConfig | None = None) -> None:
        super().__init__()
        config = config or VoxelMorphConfig()
        if not isinstance(config, VoxelMorphConfig):
            raise TypeError(f"config: expected a VoxelMorphConfig, got {type(config).__name__}")
        self.config = config
        self.ndim = config.ndim
        self.diffeomorphic = config.diffeomorphic
        self.in_channels = config.in_channels
        self.out_stride = config.int_downsize if config.diffeomorphic else 1
        self.unet = UNet(
            config.ndim,
            config.in_channels,
            config.enc_channels,
            config.dec_channels,
            out_stride=self.out_stride,
            negative_slope=config.negative_slope,
        )
        self.stride = self.unet.stride
        self.flow = conv_class(config.ndim)(self.unet.out_channels, config.ndim, 3, padding=1)
        with torch.no_grad():
            nn.init.normal_(self.flow.weight, 0.0, config.flow_init_std)
            nn.init.zeros_(self.flow.bias)

    @property
    def kind(self) -> str:
        """The store kind to save this network under (``save_model(path, net, kind=net.kind)``)."""
        return self.config.kind

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> NetworkOutput:
        """Predict the map from fixed to moving voxels (pull) for a pair on one voxel grid.

        Args:
            moving: ``(N, C_m, *S)`` moving images.
            fixed: ``(N, C_f, *S)`` fixed images on the same voxel grid.

        Returns:
            :class:`NetworkOutput` (module docstring for each field).

        Raises:
            TypeError, ValueError: on inputs that do not fit the network (naming the argument).
        """
        self.check_inputs(moving, fixed)
        x, shape = pad_to_multiple(torch.cat([moving, fixed], dim=1), self.stride)
        field = self.flow(self.unet(x))
        if not self.diffeomorphic:
            return NetworkOutput(displacement=crop_to_shape(field, shape))
        padded = tuple(x.shape[2:])
        steps = self.config.int_steps
        forward = resize_displacement(integrate_velocity_voxels(field, steps=steps), padded)
        inverse = resize_displacement(integrate_velocity_voxels(-field, steps=steps), padded)
        return NetworkOutput(
            displacement=crop_to_shape(forward, shape),
            inverse=crop_to_shape(inverse, shape),
            velocity=field,
        )

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, ndim={self.ndim}, stride={self.stride}"


def _factory(diffeomorphic: bool):
    kind = "voxelmorph-diff" if diffeomorphic else "voxelmorph"

    def build(config: VoxelMorphConfig) -> VoxelMorph:
        if config.diffeomorphic is not diffeomorphic:
            raise ValueError(f"config: a {kind!r} model needs diffeomorphic={diffeomorphic}, got {config.diffeomorphic}")
        return VoxelMorph(config)

    return build


for _kind, _diff in VOXELMORPH_KINDS.items():
    register_architecture(_kind, _factory(_diff), VoxelMorphConfig)
