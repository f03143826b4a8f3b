"""Shared types and voxel-unit field operations of omnireg's registration networks.

Convention:
    A registration network takes a moving and a fixed image on the SAME voxel grid, ``(N, C, *S)``
    each, and predicts a displacement ``u`` ``(N, D, *S)`` in **voxel units** of that grid, components
    in tensor-axis order (i, j, k). The transform is pull: fixed voxel ``x`` maps to moving voxel
    ``x + u(x)`` and the warped moving image is ``warped(x) = moving(x + u(x))``
    (:func:`warp_voxels`). World units, oblique grids and ITK files are the pipeline's business:
    :meth:`omnireg.transforms.DisplacementField.from_voxel_displacement` converts.

    ``compose_displacements(a, b)`` is ``a ∘ b`` (``b`` acts on points first). Between voxel centres a
    field is interpolated linearly; beyond the grid every field here is **extended by its border values**
    (replicate), so the maps stay continuous at the image edge. (omnireg's world-space
    :class:`~omnireg.transforms.DisplacementField` follows ITK instead: zero beyond half a voxel. Used
    inside scaling and squaring, that rule makes a velocity that points out of the grid fold at the
    border, so :func:`integrate_velocity_voxels` integrates the border-extended velocity.)

    Resolution changes (:func:`resize_displacement`) treat two grids of one tensor as covering the same
    extent, voxel edges to voxel edges (as :meth:`omnireg.core.Grid.with_spacing` and as stride-2 pooling
    see it): output voxel ``p`` sits at input voxel ``(p + 1/2) S_in / S_out - 1/2``, and the vectors are
    multiplied by ``S_out / S_in`` per axis (a half-resolution field upsampled to full resolution doubles).

    Padding to a network's stride is internal and **at the high end** of each axis
    (:func:`pad_to_multiple`): voxel ``p`` of the input is voxel ``p`` of the padded tensor, so a voxel
    displacement predicted on the padded tensor is cropped (:func:`crop_to_shape`) without any shift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.enums import Interp, Padding
from ..core.grid import Grid
from ..core.sampling import sample
from ..transforms.svf import integrate_velocity

__all__ = [
    "NetworkOutput",
    "RegistrationNetwork",
    "compose_displacements",
    "crop_to_shape",
    "frame_grid",
    "identity_voxel_points",
    "integrate_velocity_voxels",
    "pad_to_multiple",
    "resize_displacement",
    "warp_voxels",
]


@dataclass
class NetworkOutput:
    """What every registration network returns (one type, whatever the model's flags).

    Attributes:
        displacement: ``(N, D, *S)`` voxel units of the input grid, components (i, j, k); pull: fixed
            voxel ``x`` maps to moving voxel ``x + u(x)``.
        inverse: ``(N, D, *S)`` displacement of the inverse map (diffeomorphic models), else ``None``.
        velocity: the stationary velocity field that was integrated, in voxel units of its own grid
            (the model documents that grid), or ``None``.
        scales: coarser-scale displacements for deep supervision, coarse first, each ``(N, D, *S_k)`` in
            voxel units of its own grid; ``[]`` for single-scale models.
    """

    displacement: torch.Tensor
    inverse: torch.Tensor | None = None
    velocity: torch.Tensor | None = None
    scales: list[torch.Tensor] = field(default_factory=list)


class RegistrationNetwork(nn.Module):
    """Base of omnireg's registration networks: ``forward(moving, fixed) -> NetworkOutput``.

    Subclasses set :attr:`config` (a dataclass saved beside the weights), :attr:`ndim`,
    :attr:`diffeomorphic` and :attr:`stride` (inputs are padded internally to a multiple of it, so any
    spatial shape works and the outputs have the input's shape), and implement :meth:`forward`.

    Shape:
        ``moving``, ``fixed``: ``(N, C_m, *S)`` and ``(N, C_f, *S)`` on one voxel grid.
        output: :class:`NetworkOutput` with ``displacement`` ``(N, D, *S)``.
    """

    config: Any
    ndim: int
    diffeomorphic: bool
    stride: int = 1
    in_channels: int = 2

    def check_inputs(self, moving: torch.Tensor, fixed: torch.Tensor) -> None:
        """Raise a ``TypeError``/``ValueError`` naming the argument unless the pair fits this network."""
        for name, x in (("moving", moving), ("fixed", fixed)):
            if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
                raise TypeError(f"{name}: expected a floating point torch.Tensor (N, C, *S), got {type(x).__name__}")
            if x.ndim != self.ndim + 2:
                raise ValueError(f"{name}: expected shape (N, C, *S) with {self.ndim} spatial axes, got {tuple(x.shape)}")
        if moving.shape[0] != fixed.shape[0] or moving.shape[2:] != fixed.shape[2:]:
            raise ValueError(
                f"moving, fixed: expected the same batch size and spatial shape, got {tuple(moving.shape)} and {tuple(fixed.shape)}"
            )
        if moving.shape[1] + fixed.shape[1] != self.in_channels:
            raise ValueError(
                f"moving, fixed: expected {self.in_channels} channels together (the network's in_channels), "
                f"got {moving.shape[1]} + {fixed.shape[1]}"
            )

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> NetworkOutput:  # pragma: no cover - abstract
        raise NotImplementedError


# ---------------------------------------------------------------------------- the network's frame
def frame_grid(grid: Grid, *, spacing_mm: float, direction: Any = None, multiple: int = 1) -> Grid:
    """The smallest grid of a network's frame that contains every voxel (edges included) of ``grid``.

    A network sees images in the frame it was trained in: isotropic ``spacing_mm`` voxels whose tensor axes
    point along the columns of ``direction`` (world RAS directions; ``None``: RAS). The grid returned has
    that spacing and direction, is centred on ``grid``'s field of view, and has a shape that is a multiple of
    ``multiple`` per axis (padded evenly on both sides: a network's stride), so the network needs no padding
    of its own. Every voxel centre of ``grid`` lies inside its voxel edges.

    Args:
        grid: the image's grid (any spacing, origin, oblique direction).
        spacing_mm: the frame's voxel size.
        direction: ``(D, D)`` orthonormal direction of the frame, or None for the identity (RAS).
        multiple: the shape is rounded up to a multiple of it.

    Returns:
        The frame's :class:`~omnireg.core.Grid`.

    Example:
        >>> from omnireg.core import Grid
        >>> g = frame_grid(Grid((10, 7), (1.0, 3.0)), spacing_mm=2.0, multiple=4)
        >>> g.shape, g.spacing
        ((8, 12), (2.0, 2.0))
    """
    d = grid.ndim
    rot = np.eye(d) if direction is None else np.asarray(direction, dtype=np.float64)
    if rot.shape != (d, d) or not np.allclose(rot.T @ rot, np.eye(d), atol=1e-4):
        raise ValueError(f"direction: expected an orthonormal ({d}, {d}) matrix, got {direction!r}")
    sp = float(spacing_mm)
    if not sp > 0:
        raise ValueError(f"spacing_mm: expected a positive voxel size, got {spacing_mm!r}")
    if not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"multiple: expected a positive int, got {multiple!r}")
    corners = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in grid.shape], indexing="ij")).reshape(d, -1).T
    frame = grid.transform_points(corners, "voxel", "world") @ rot  # coordinates along the frame's axes
    lo, hi = frame.min(0), frame.max(0)
    shape = np.maximum(1, np.ceil((hi - lo) / sp - 1e-6)).astype(int)
    shape = -(-shape // multiple) * multiple
    start = (lo + hi) / 2 - sp * (shape - 1) / 2
    return Grid(tuple(shape.tolist()), (sp,) * d, tuple((rot @ start).tolist()), rot)


# ---------------------------------------------------------------------------- voxel-unit fields
def _check_field(displacement: object, name: str) -> torch.Tensor:
    if not isinstance(displacement, torch.Tensor) or not displacement.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a floating point torch.Tensor (N, D, *S), got {type(displacement).__name__}")
    d = displacement.ndim - 2
    if d not in (2, 3) or displacement.shape[1] != d:
        raise ValueError(f"{name}: expected a voxel displacement (N, D, *S) with D = 2 or 3 spatial axes, got {tuple(displacement.shape)}")
    return displacement


def identity_voxel_points(shape: Sequence[int], *, dtype: torch.dtype = torch.float32, device: Any = None) -> torch.Tensor:
    """Voxel indices of every voxel centre of ``shape``: ``(1, *S, D)``, components (i, j, k)."""
    axes = [torch.arange(int(s), dtype=dtype, device=device) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).unsqueeze(0)


def _points(displacement: torch.Tensor) -> torch.Tensor:
    """``x + u(x)`` as sampling points ``(N, *S, D)``."""
    ident = identity_voxel_points(displacement.shape[2:], dtype=displacement.dtype, device=displacement.device)
    return ident + displacement.movedim(1, -1)


def warp_voxels(
    image: torch.Tensor,
    displacement: torch.Tensor,
    *,
    interp: Interp | str = Interp.LINEAR,
    padding: Padding | str = Padding.ZEROS,
) -> torch.Tensor:
    """Pull-warp ``image`` by a voxel displacement: ``out(x) = image(x + u(x))`` on the same grid.

    Sampled with :func:`omnireg.core.sample`; differentiable in both arguments (linear interpolation).
    Integer (label) images are sampled with nearest neighbour and keep their dtype.

    Args:
        image: ``(N, C, *S)`` (N may be 1 and is broadcast over the displacement's batch).
        displacement: ``(N, D, *S)`` voxel units of the same grid, components (i, j, k).
        interp: ``"linear"`` (default), ``"nearest"`` or ``"cubic"``.
        padding: ``"zeros"`` (default: zero outside, linear fall-off over the outer half voxel, as
            ``grid_sample``) or ``"border"`` (the nearest border value) where ``x + u(x)`` leaves the image.

    Returns:
        ``(max(N_image, N_u), C, *S)`` in ``image``'s dtype.

    Raises:
        TypeError, ValueError: on a non-tensor, or shapes that do not match.
    """
    _check_field(displacement, "displacement")
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image: expected a torch.Tensor (N, C, *S), got {type(image).__name__}")
    if image.shape[2:] != displacement.shape[2:] or image.ndim != displacement.ndim:
        raise ValueError(
            f"image: expected spatial shape {tuple(displacement.shape[2:])} of the displacement, got {tuple(image.shape)}"
        )
    return sample(image, _points(displacement), interp=interp, padding=padding)


def compose_displacements(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The displacement of ``a ∘ b`` (``b`` acts first): ``u(x) = u_b(x) + u_a(x + u_b(x))``.

    Warping an image by the result equals warping it by ``a`` and then warping that by ``b``
    (up to interpolation). ``u_a`` is interpolated linearly and extended by its border values beyond
    the grid (module docstring).

    Args:
        a: ``(N, D, *S)`` voxel displacement (applied second).
        b: ``(N, D, *S)`` voxel displacement on the same grid (applied first); batch 1 broadcasts.

    Returns:
        ``(N, D, *S)`` voxel displacement.
    """
    _check_field(a, "a")
    _check_field(b, "b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"a, b: expected displacements on one grid, got {tuple(a.shape)} and {tuple(b.shape)}")
    return b + sample(a, _points(b), interp="linear", padding="border")


def integrate_velocity_voxels(velocity: torch.Tensor, *, steps: int) -> torch.Tensor:
    """Displacement of ``exp(v)`` by scaling and squaring, all in voxel units of ``v``'s grid.

    ``u_0 = v / 2**steps``, ``u_{k+1} = u_k + u_k ∘ (id + u_k)``, computed by
    :func:`omnireg.transforms.svf.integrate_velocity` on a unit-spacing identity grid (where world mm
    are voxel units). ``v`` is first extended by its border values by ``r_a = ceil(max |v_a|) + 1`` voxels
    on both sides of each axis ``a`` (at most the axis' size) and the result cropped back. No point of
    the squarings of the original grid travels farther than ``max |v_a|`` along axis ``a``, so this is
    the integration of the border-extended velocity, which stays continuous at the edge and does not
    fold there (module docstring). (Strictly, the far edge of the extension, where the dense-field rule
    still applies, reaches back through interpolation stencils by up to one voxel per squaring; measured
    against a 30-voxel-wider extension the result differs at float32 rounding, 1e-5 voxel.) The
    extension costs a host synchronisation (the maximum) per call and grows the integration grid with
    the largest velocity. The inverse map is ``integrate_velocity_voxels(-v, steps=steps)``.

    Args:
        velocity: ``(N, D, *S)`` stationary velocity, voxel units, components (i, j, k).
        steps: number of squarings (``0`` returns ``v``).

    Returns:
        ``(N, D, *S)`` voxel displacement; differentiable in ``velocity``.

    Raises:
        TypeError, ValueError: on a malformed field or a bad ``steps``.
    """
    _check_field(velocity, "velocity")
    shape = tuple(velocity.shape[2:])
    d = len(shape)
    with torch.no_grad():
        largest = velocity.abs().amax(dim=tuple(i for i in range(velocity.ndim) if i != 1)).tolist() if velocity.numel() else [0.0] * d
    reach = [min(int(math.ceil(m)) + 1, s) if math.isfinite(m) else 1 for m, s in zip(largest, shape)]
    pad: list[int] = []
    for r in reversed(reach):  # F.pad lists the last axis first
        pad += [r, r]
    padded = F.pad(velocity, pad, mode="replicate")
    u = integrate_velocity(padded, Grid(tuple(padded.shape[2:])), steps=steps)
    return u[(slice(None), slice(None)) + tuple(slice(r, r + s) for r, s in zip(reach, shape))]


def resize_displacement(displacement: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """A voxel displacement moved to another resolution of the same extent (module docstring).

    Output voxel ``p`` takes the input's linear interpolation at ``(p + 1/2) S_in / S_out - 1/2``
    (clamped to the border) and the vectors are scaled by ``S_out / S_in`` per axis, so the map they
    describe is the same (``2 u`` for a half-resolution field brought to full resolution). Downsampling
    by 2 averages pairs. (This sampling is ``F.interpolate(mode="(bi|tri)linear", align_corners=False)``
    exactly, which is used: on a regular grid it is several times faster than sampling at points.)

    Args:
        displacement: ``(N, D, *S_in)`` voxel units of its grid, components (i, j, k).
        shape: ``S_out``, the target spatial shape.

    Returns:
        ``(N, D, *S_out)`` voxel units of the target grid.
    """
    _check_field(displacement, "displacement")
    d = displacement.shape[1]
    shape = tuple(int(s) for s in shape)
    if len(shape) != d or min(shape) < 1:
        raise ValueError(f"shape: expected {d} positive sizes, got {shape!r}")
    s_in = tuple(displacement.shape[2:])
    if shape == s_in:
        return displacement
    mode = "trilinear" if d == 3 else "bilinear"
    out = F.interpolate(displacement, size=shape, mode=mode, align_corners=False)
    factor = torch.tensor([o / i for o, i in zip(shape, s_in)], dtype=displacement.dtype, device=displacement.device)
    return out * factor.view(1, d, *([1] * d))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Zero-pad the spatial axes of ``x`` ``(N, C, *S)`` at their high end to multiples of ``multiple``.

    Returns:
        ``(padded, S)``: the padded tensor (voxel ``p`` unchanged) and the original spatial shape for
        :func:`crop_to_shape`. ``x`` itself is returned when no padding is needed.
    """
    if not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"multiple: expected a positive int, got {multiple!r}")
    shape = tuple(int(s) for s in x.shape[2:])
    extra = [(-s) % multiple for s in shape]
    if not any(extra):
        return x, shape
    pad: list[int] = []
    for e in reversed(extra):  # F.pad lists the last axis first
        pad += [0, e]
    return F.pad(x, pad), shape


def crop_to_shape(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The first ``shape`` voxels of every spatial axis of ``x`` ``(N, C, *S_pad)`` (undoes :func:`pad_to_multiple`)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != x.ndim - 2 or any(s > p for s, p in zip(shape, x.shape[2:])):
        raise ValueError(f"shape: expected at most {tuple(x.shape[2:])} per axis, got {shape}")
    return x[(slice(None), slice(None)) + tuple(slice(0, s) for s in shape)]
