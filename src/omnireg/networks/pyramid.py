"""The pyramid registration network of arXiv 2408.05717: shared encoder, auxiliary decoder, MSFB fusion.

Architecture (2D or 3D; ``C_l`` = ``channels[l]``, level ``l`` = the network's grid pooled by ``2**l``,
``L = len(channels) - 1`` the coarsest):

- **Shared encoder** (:class:`PyramidEncoder`), applied to the moving and to the fixed image
  separately (one weight set): a block of two 3x3(x3) convolutions (LeakyReLU, instance norm) per
  level, 2x average pooling between levels: features ``e_0 .. e_L`` of each image.
- **Shared auxiliary decoder** (:class:`AuxiliaryDecoder`, ``aux_decoder``), applied to each image's
  encoder features separately (unblended): a U-Net decoder (upsample, concatenate the encoder's skip,
  conv block) giving high-level features ``a_{L-1} .. a_0`` of each image.
- **Fusion pyramid decoder**, coarse to fine. At level ``L`` a conv block on the concatenated
  ``e_L`` of both images and a head predict a velocity ``v_L``. At each finer level ``l`` the field so
  far is upsampled (:func:`~omnireg.networks.registration.resize_displacement`), the moving image's
  ``e_l`` and ``a_l`` are warped by it, and a :class:`~omnireg.networks.msfb.FeatureFusion` block fuses
  the groups ``[e_l fixed, e_l moving]``, ``[a_l fixed, a_l moving]`` (if ``aux_decoder``) and
  ``[upsampled decoder state, upsampled displacement]``; a conv block (``C_l -> C_{l-1}``) and a head
  predict the residual velocity ``v_l``. Heads are conv-LeakyReLU-norm then a conv to ``D`` channels
  initialised near zero (std ``head_init_std``), so the untrained network predicts the identity.

Composition (pull convention, voxel units of each level's grid): with ``R_l = exp(v_l)`` (scaling and
squaring, ``integration_steps``) the transform of level ``l`` is ``T_l = up(T_{l+1}) ∘ R_l`` (``R_l``
acts on the fixed points first, then the coarser map), i.e. the displacement
``u_l = compose_displacements(up(u_{l+1}), r_l)``; this is the paper's ``phi_k = exp(v_k) ∘ up(phi_{k-1})``
written for maps that pull the moving image. Every ``R_l`` is a diffeomorphism and so is ``T_l`` (up to
interpolation). The inverse is the reversed composition of the inverse steps, each integrated from
``-v_l``: ``T_l^{-1} = R_l^{-1} ∘ up(T_{l+1}^{-1})``. Each level's ``exp(v) ∘ exp(-v)`` is the identity
to ~1e-3 voxel; the round-trip error of the composed map comes from resampling the coarser composed
fields (``up``): measured on three levels of smooth residuals, 0.04 voxel mean (0.07 max, interior) for
maps of up to 3.3 voxels, 0.13 mean (0.33 max) for maps of up to 6.6 voxels.

Choices left open by the paper or the reference code, each a config field (see :class:`PyramidConfig`):

- ``finest_stride`` (default 2): the pyramid runs on the input average-pooled by this factor and the
  final field is upsampled linearly (as VoxelMorph-diff's half-resolution velocity). The paper's
  network predicts the last residual at full resolution (``finest_stride=1``): for a 2 mm brain
  (96x112x96) that is 14 s of single-thread CPU and 1.5 GB per forward pass, against 1.6 s and 0.26 GB.
- ``pointwise_fusion`` (default True): 1x1(x1) group projections and local-branch output convolutions
  in the fusion blocks (the reference uses 3x3(x3)): 2.35 M instead of 3.53 M parameters (9.4 MB of
  float32 weights: the shipped model must stay under 10 MB) and ~15 % less time.
- Deterministic velocities (the reference samples them from a predicted Gaussian); no deformable
  convolution (the paper's title names one; the reference code has none); instance norm after LeakyReLU as in the reference (``instance_norm``).
- Per-sample global weights (the reference applies the first sample's weights to the whole batch);
  one spatial attention per frequency band (the reference shares one); the global MLP is
  ``2 G C -> C -> G``; Gaussian low-pass with replicated borders.
- The coarsest level has no fusion block (only encoder features exist there), as in the reference.

``velocity`` of the output is ``None``: the composed map is not the exponential of one stationary
field; the per-level velocities are returned by :meth:`PyramidNet.pyramid`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..core.sampling import sample
from .blocks import conv_class
from .msfb import ConvBlock, FeatureFusion, Fusion, MSFBBranches, conv_norm_act
from .registration import (
    NetworkOutput,
    RegistrationNetwork,
    compose_displacements,
    crop_to_shape,
    identity_voxel_points,
    integrate_velocity_voxels,
    resize_displacement,
    warp_voxels,
)
from .store import register_architecture

__all__ = [
    "AuxiliaryDecoder",
    "PyramidConfig",
    "PyramidEncoder",
    "PyramidFields",
    "PyramidNet",
    "compose_level",
    "compose_pyramid",
]

log = logging.getLogger(__name__)


@dataclass
class PyramidConfig:
    """Architecture of a :class:`PyramidNet` (saved with its weights).

    Attributes:
        ndim: 2 or 3 spatial dimensions.
        in_channels: channels of moving and fixed together, as :class:`~omnireg.networks.voxelmorph.VoxelMorphConfig`
            (even: the shared encoder takes ``in_channels / 2`` channels per image; 2 for single-channel images).
        channels: encoder widths per level, finest first; ``len(channels)`` levels (>= 2).
        aux_decoder: use the shared auxiliary decoder (ablation: ``False``).
        fusion: ``msfb`` or ``concat`` (ablation: plain concatenation, :mod:`omnireg.networks.msfb`).
        msfb_branches: ``both``, ``global`` or ``local`` (ablations of the MSFB).
        integration_steps: scaling-and-squaring steps of every residual velocity.
        finest_stride: the pyramid's finest level is the input average-pooled by this power of two
            (1 = the paper's full resolution).
        attention_kernels: kernel sizes of the MSFB's spatial attention.
        lowpass_sigma: the MSFB's Gaussian low-pass sigma (voxels of each level).
        negative_slope: LeakyReLU slope.
        instance_norm: instance normalisation after every convolution (as the reference).
        head_init_std: std of the initial weights of the velocity heads' last convolution.
        pointwise_fusion: 1x1(x1) group projections and local-branch output convolutions in the fusion
            blocks (the reference code uses 3x3(x3); module docstring).
        supervised_levels: how many levels just coarser than the finest pyramid level are returned in
            ``NetworkOutput.scales`` for deep supervision (levels ``supervised_levels .. 1``; capped at
            ``L``; 0: none). The reference supervises 1; the default 2 leaves out the coarsest levels
            (a few voxels per axis for a 2 mm brain), whose losses on pooled images carry little signal.
    """

    ndim: int = 3
    in_channels: int = 2
    channels: tuple[int, ...] = (16, 32, 32, 64, 64)
    aux_decoder: bool = True
    fusion: Fusion = Fusion.MSFB
    msfb_branches: MSFBBranches = MSFBBranches.BOTH
    integration_steps: int = 7
    finest_stride: int = 2
    attention_kernels: tuple[int, ...] = (3, 5, 7)
    lowpass_sigma: float = 1.0
    negative_slope: float = 0.2
    instance_norm: bool = True
    head_init_std: float = 1e-5
    pointwise_fusion: bool = True
    supervised_levels: int = 2

    def __post_init__(self) -> None:
        if self.ndim not in (2, 3):
            raise ValueError(f"ndim: expected 2 or 3, got {self.ndim!r}")
        if int(self.in_channels) < 2 or int(self.in_channels) % 2:
            raise ValueError(f"in_channels: expected an even count >= 2 (moving and fixed channels together), got {self.in_channels!r}")
        self.in_channels = int(self.in_channels)
        self.channels = tuple(int(c) for c in self.channels)
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise ValueError(f"channels: expected >= 2 positive widths (one per level), got {self.channels!r}")
        for name in ("fusion", "msfb_branches"):
            enum = Fusion if name == "fusion" else MSFBBranches
            try:
                setattr(self, name, enum(getattr(self, name)))
            except ValueError:
                raise ValueError(f"{name}: expected one of {[e.value for e in enum]}, got {getattr(self, name)!r}") from None
        if not isinstance(self.integration_steps, int) or self.integration_steps < 0:
            raise ValueError(f"integration_steps: expected a non-negative int, got {self.integration_steps!r}")
        s = int(self.finest_stride)
        if s < 1 or s & (s - 1):
            raise ValueError(f"finest_stride: expected a power of two >= 1, got {self.finest_stride!r}")
        self.finest_stride = s
        self.attention_kernels = tuple(int(k) for k in self.attention_kernels)
        if not self.attention_kernels or any(k < 1 or k % 2 == 0 for k in self.attention_kernels):
            raise ValueError(f"attention_kernels: expected odd positive sizes, got {self.attention_kernels!r}")
        if not self.lowpass_sigma > 0:
            raise ValueError(f"lowpass_sigma: expected > 0, got {self.lowpass_sigma!r}")
        self.aux_decoder, self.instance_norm = bool(self.aux_decoder), bool(self.instance_norm)
        self.pointwise_fusion = bool(self.pointwise_fusion)
        if not isinstance(self.supervised_levels, int) or isinstance(self.supervised_levels, bool) or self.supervised_levels < 0:
            raise ValueError(f"supervised_levels: expected a non-negative int, got {self.supervised_levels!r}")

    @property
    def levels(self) -> int:
        return len(self.channels)


class PyramidEncoder(nn.Module):
    """Shared encoder: ``ConvBlock(in -> C_0)``, then per level 2x average pooling and ``ConvBlock(C_{l-1} -> C_l)``."""

    def __init__(self, config: PyramidConfig) -> None:
        super().__init__()
        c, kw = config.channels, dict(slope=config.negative_slope, norm=config.instance_norm)
        ins = (config.in_channels // 2,) + c[:-1]
        self.blocks = nn.ModuleList(ConvBlock(config.ndim, i, o, **kw) for i, o in zip(ins, c))
        self.pool = nn.AvgPool3d(2) if config.ndim == 3 else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features ``[e_0 (N, C_0, *S), ..., e_L (N, C_L, *S / 2**L)]``; ``S`` divisible by ``2**L``."""
        out = [self.blocks[0](x)]
        for block in self.blocks[1:]:
            out.append(block(self.pool(out[-1])))
        return out


def _upsample(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Linear upsampling of features to ``shape`` (grids of one extent, voxel edges to edges)."""
    return F.interpolate(x, size=tuple(shape), mode="trilinear" if x.ndim == 5 else "bilinear", align_corners=False)


class AuxiliaryDecoder(nn.Module):
    """Shared auxiliary decoder: ``a_l = ConvBlock(C_{l+1} + C_l -> C_l)(cat(up(a_{l+1}), e_l))``, ``a_L = e_L``."""

    def __init__(self, config: PyramidConfig) -> None:
        super().__init__()
        c, kw = config.channels, dict(slope=config.negative_slope, norm=config.instance_norm)
        # blocks[l] makes a_l, for l = 0 .. L-1
        self.blocks = nn.ModuleList(ConvBlock(config.ndim, c[l + 1] + c[l], c[l], **kw) for l in range(len(c) - 1))

    def forward(self, enc: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Features ``[a_0, ..., a_{L-1}]`` (finest first) from the encoder's ``[e_0, ..., e_L]``."""
        out: list[torch.Tensor] = [None] * len(self.blocks)  # type: ignore[list-item]
        y = enc[-1]
        for l in reversed(range(len(self.blocks))):
            y = self.blocks[l](torch.cat([_upsample(y, enc[l].shape[2:]), enc[l]], dim=1))
            out[l] = y
        return out


class _VelocityHead(nn.Module):
    def __init__(self, config: PyramidConfig, width: int) -> None:
        super().__init__()
        self.hidden = conv_norm_act(config.ndim, width, width, slope=config.negative_slope, norm=config.instance_norm)
        self.out = conv_class(config.ndim)(width, config.ndim, 3, padding=1)
        nn.init.normal_(self.out.weight, std=config.head_init_std)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x))


@dataclass
class PyramidFields:
    """Every level's fields from :meth:`PyramidNet.pyramid`, coarse first (index 0 = level ``L``).

    All are voxel units of their own level's grid (the padded, pooled input; see :meth:`PyramidNet.pyramid`).

    Attributes:
        velocities: residual velocities ``v_l``.
        residuals: ``exp(v_l)`` displacements.
        displacements: composed ``u_l`` (``T_l = up(T_{l+1}) ∘ exp(v_l)``).
        inverses: composed inverses (``exp(-v_l) ∘ up(T_{l+1}^{-1})``).
        fusion_weights: the MSFB global weights ``(N, G)`` per fused level (coarse first; the
            coarsest level has none), empty without a global branch.
    """

    velocities: list[torch.Tensor] = field(default_factory=list)
    residuals: list[torch.Tensor] = field(default_factory=list)
    displacements: list[torch.Tensor] = field(default_factory=list)
    inverses: list[torch.Tensor] = field(default_factory=list)
    fusion_weights: list[torch.Tensor] = field(default_factory=list)


class PyramidNet(RegistrationNetwork):
    """The pyramid registration network (module docstring): ``forward(moving, fixed) -> NetworkOutput``.

    Args:
        config: the architecture (default :class:`PyramidConfig` ()).

    Shape:
        ``moving``, ``fixed``: ``(N, in_channels / 2, *S)`` each, any ``S`` (zero-padded internally at the
        high end of every axis to a multiple of :attr:`stride`, at least twice it).
        Output ``displacement`` and ``inverse``: ``(N, D, *S)`` voxel units of the input grid;
        ``scales[k]``: ``(N, D, *ceil(S / scale_strides[k]))`` covering the input's extent (see
        :attr:`scale_strides`).
    """

    diffeomorphic = True

    def __init__(self, config: PyramidConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or PyramidConfig()
        self.ndim = cfg.ndim
        self.in_channels = cfg.in_channels
        top = cfg.levels - 1
        self.stride = cfg.finest_stride * 2**top
        c, d = cfg.channels, cfg.ndim
        kw = dict(slope=cfg.negative_slope, norm=cfg.instance_norm)
        width = [c[max(l - 1, 0)] for l in range(cfg.levels)]  # decoder state width after level l
        self.encoder = PyramidEncoder(cfg)
        self.aux_decoder = AuxiliaryDecoder(cfg) if cfg.aux_decoder else None
        self.coarse_block = ConvBlock(d, 2 * c[top], width[top], **kw)
        fusions, blocks = [], []
        for l in range(top):  # fused levels 0 .. L-1
            groups = [2 * c[l]] + ([2 * c[l]] if cfg.aux_decoder else []) + [width[l + 1] + d]
            fusions.append(
                FeatureFusion(
                    d, groups, c[l], fusion=cfg.fusion, branches=cfg.msfb_branches,
                    attention_kernels=cfg.attention_kernels, lowpass_sigma=cfg.lowpass_sigma,
                    pointwise=cfg.pointwise_fusion, **kw,
                )
            )
            blocks.append(ConvBlock(d, c[l], width[l], **kw))
        self.fusions = nn.ModuleList(fusions)
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleList(_VelocityHead(cfg, width[l]) for l in range(cfg.levels))

    @property
    def scale_strides(self) -> tuple[int, ...]:
        """Nominal stride (input voxels per voxel) of each entry of ``NetworkOutput.scales``, coarse first.

        The pyramid levels ``min(supervised_levels, L) .. 1`` (:attr:`scale_levels`), whose grids are the
        input average-pooled by ``finest_stride * 2**l``. ``scales[k]`` has ``ceil(S / s)`` voxels per axis (``s = scale_strides[k]``)
        covering the input's extent, edges to edges (the convention of
        :func:`~omnireg.networks.registration.resize_displacement` and of area pooling): when ``s``
        divides ``S`` it is the level's own field on the input average-pooled by ``s``; otherwise the
        level's field (computed on the zero-padded input) resampled linearly onto that grid.
        ``resize_displacement(scales[k], S)`` brings it to the input grid.
        """
        return tuple(self.config.finest_stride * 2**l for l in self.scale_levels)

    @property
    def scale_levels(self) -> tuple[int, ...]:
        """The pyramid levels returned in ``NetworkOutput.scales``, coarse first (``config.supervised_levels``)."""
        top = min(self.config.supervised_levels, self.config.levels - 1)
        return tuple(range(top, 0, -1))

    def padded_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The internal shape for an input of spatial ``shape``: per axis ``max(ceil(s / stride), 2) * stride``."""
        m = self.stride
        return tuple(max(-(-int(s) // m), 2) * m for s in shape)

    def _prepare(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """Check, zero-pad at the high end and pool the pair; returns ``cat([moving, fixed])`` on the batch axis."""
        self.check_inputs(moving, fixed)
        if moving.shape[1] != fixed.shape[1]:
            raise ValueError(
                f"moving, fixed: expected {self.in_channels // 2} channels each (shared encoder), got {moving.shape[1]} and {fixed.shape[1]}"
            )
        pair = torch.cat([moving, fixed], dim=0)
        pad: list[int] = []
        for s, p in reversed(list(zip(pair.shape[2:], self.padded_shape(pair.shape[2:])))):
            pad += [0, p - s]
        pair = F.pad(pair, pad)
        s = self.config.finest_stride
        if s > 1:
            pair = F.avg_pool3d(pair, s) if self.ndim == 3 else F.avg_pool2d(pair, s)
        return pair

    def pyramid(self, moving: torch.Tensor, fixed: torch.Tensor) -> PyramidFields:
        """All levels' velocities, residual maps, composed maps and inverses (coarse first).

        Level ``l``'s grid is the input zero-padded to :meth:`padded_shape` and average-pooled by
        ``finest_stride * 2**l``; every field is in voxel units of its own level's grid.

        Args:
            moving, fixed: ``(N, in_channels / 2, *S)`` on one grid.

        Returns:
            :class:`PyramidFields`.
        """
        steps = self.config.integration_steps
        n = moving.shape[0]
        enc = self.encoder(self._prepare(moving, fixed))
        aux = self.aux_decoder(enc) if self.aux_decoder is not None else None
        out = PyramidFields()

        def step(v: torch.Tensor, up_u: torch.Tensor | None = None) -> None:
            # up_u: the coarser map already resized to v's grid (compose_level leaves it as it is)
            coarse = (up_u, out.inverses[-1]) if out.displacements else (None, None)
            r, u, inv = compose_level(v, *coarse, steps=steps)
            out.velocities.append(v)
            out.residuals.append(r)
            out.displacements.append(u)
            out.inverses.append(inv)

        mov_top, fix_top = enc[-1][:n], enc[-1][n:]
        state = self.coarse_block(torch.cat([fix_top, mov_top], dim=1))
        step(self.heads[-1](state))
        for l in reversed(range(len(self.fusions))):
            shape = enc[l].shape[2:]
            up_u = resize_displacement(out.displacements[-1], shape)
            groups = [torch.cat([enc[l][n:], warp_voxels(enc[l][:n], up_u)], dim=1)]
            if aux is not None:
                groups.append(torch.cat([aux[l][n:], warp_voxels(aux[l][:n], up_u)], dim=1))
            groups.append(torch.cat([_upsample(state, shape), up_u], dim=1))
            fused, weights = self.fusions[l].fuse(groups)
            if weights is not None:
                out.fusion_weights.append(weights)
            state = self.blocks[l](fused)
            step(self.heads[l](state), up_u)
        return out

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> NetworkOutput:
        """Register ``moving`` to ``fixed``: the full-resolution map, its inverse and the coarser scales.

        Args:
            moving: ``(N, in_channels / 2, *S)`` image to warp.
            fixed: ``(N, in_channels / 2, *S)`` reference image on the same grid.

        Returns:
            :class:`~omnireg.networks.registration.NetworkOutput`: ``displacement`` and ``inverse``
            ``(N, D, *S)`` voxel units (pull: fixed voxel ``x`` maps to moving voxel ``x + u(x)``),
            ``velocity`` ``None`` (the composed map has no single stationary velocity) and ``scales``
            (:attr:`scale_strides`).

        Raises:
            TypeError, ValueError: inputs that are not a matching floating point pair.
        """
        shape = tuple(moving.shape[2:])
        fields = self.pyramid(moving, fixed)
        padded = self.padded_shape(shape)

        def full(u: torch.Tensor) -> torch.Tensor:
            return crop_to_shape(resize_displacement(u, padded), shape)

        top = self.config.levels - 1  # fields are coarse first: level l at index top - l
        scales = [_input_extent(fields.displacements[top - l], shape, st) for l, st in zip(self.scale_levels, self.scale_strides)]
        return NetworkOutput(full(fields.displacements[-1]), full(fields.inverses[-1]), None, scales)


def compose_level(
    velocity: torch.Tensor,
    coarse: torch.Tensor | None = None,
    coarse_inverse: torch.Tensor | None = None,
    *,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pyramid step: integrate a residual velocity and compose it with the coarser level's map.

    With ``R = exp(v)`` and ``C`` the coarser map resized to ``v``'s grid (``up``,
    :func:`~omnireg.networks.registration.resize_displacement`), the level's map is ``T = up(C) ∘ R``
    (``R`` acts first) and its inverse ``T^{-1} = exp(-v) ∘ up(C^{-1})``.

    Args:
        velocity: ``(N, D, *S)`` residual velocity, voxel units of its grid.
        coarse: ``(N, D, *S_c)`` displacement of the coarser level (voxel units of its grid; a field
            already on ``v``'s grid is used as it is), or ``None`` at the coarsest level.
        coarse_inverse: the coarser level's inverse displacement (with ``coarse``).
        steps: scaling-and-squaring steps.

    Returns:
        ``(residual, displacement, inverse)``, each ``(N, D, *S)`` voxel units of ``v``'s grid.
    """
    shape = velocity.shape[2:]
    r = integrate_velocity_voxels(velocity, steps=steps)
    r_inv = integrate_velocity_voxels(-velocity, steps=steps)
    if coarse is None or coarse_inverse is None:
        if coarse is not None or coarse_inverse is not None:
            raise ValueError("coarse, coarse_inverse: expected both or neither")
        return r, r, r_inv
    u = compose_displacements(resize_displacement(coarse, shape), r)
    inv = compose_displacements(r_inv, resize_displacement(coarse_inverse, shape))
    return r, u, inv


def compose_pyramid(velocities: Sequence[torch.Tensor], *, steps: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The composed maps and inverses of residual velocities given coarse first (:func:`compose_level`).

    Args:
        velocities: ``(N, D, *S_l)`` voxel units, coarse first (each grid any finer resolution of the
            same extent, e.g. twice the previous).
        steps: scaling-and-squaring steps.

    Returns:
        ``(displacements, inverses)``, coarse first, each on its velocity's grid.
    """
    disp: list[torch.Tensor] = []
    inv: list[torch.Tensor] = []
    for v in velocities:
        _, u, w = compose_level(v, disp[-1] if disp else None, inv[-1] if inv else None, steps=steps)
        disp.append(u)
        inv.append(w)
    return disp, inv


def _input_extent(u: torch.Tensor, shape: Sequence[int], stride: int) -> torch.Tensor:
    """A level's field ``u`` (voxel units of the padded input pooled by ``stride``) on ``ceil(S / stride)``
    voxels covering the input's extent ``S``: voxel ``q`` sits at input voxel ``(q + 1/2) S / Q - 1/2``,
    sampled linearly (border values), vectors rescaled to the new voxel size ``S / Q``.
    """
    target = tuple(-(-int(s) // stride) for s in shape)
    if target == tuple(u.shape[2:]) and all(q * stride == int(s) for q, s in zip(target, shape)):
        return u  # the level's grid is that grid (no padding)
    dt, dev = u.dtype, u.device
    ratio = torch.tensor([s / (q * stride) for s, q in zip(shape, target)], dtype=dt, device=dev)
    points = (identity_voxel_points(target, dtype=dt, device=dev) + 0.5) * ratio - 0.5
    out = sample(u, points.expand(u.shape[0], *points.shape[1:]), interp="linear", padding="border")
    return out / ratio.view(1, -1, *([1] * len(target)))


register_architecture("pyramid", PyramidNet, PyramidConfig)
