"""Optimisation variables of a stage: a new identity transform of the stage's kind, held in scaled units.

Parameters are optimised in scaled units ``z = parameter * scale_mm``: translations, B-spline coefficients
and velocities in mm, rotations, log-scales and matrix entries multiplied by the radius of the fixed image
(so one unit moves the image's boundary by about one mm, as ITK's physical-shift scales do).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core import Grid
from .config import StageConfig, TransformKind

__all__ = ["matrix_tensor", "make_stage_transform", "velocity_grid", "parameter_scales", "Scaled"]


def matrix_tensor(m: np.ndarray, dtype, device) -> torch.Tensor:
    return torch.tensor(np.asarray(m, dtype=np.float64), dtype=dtype, device=device)


def velocity_grid(stage: StageConfig, grid: Grid, level_shrink: float = 1.0, finest_shrink: float = 1.0) -> Grid:
    """The grid of an SVF stage's velocity at a pyramid level.

    The final velocity grid has ``stage.svf_spacing_mm`` or, when it is ``None``, twice the spacing of the
    stage's finest level (at least 2 mm); a coarser level holds its velocity on its own, coarser grid
    (coarse to fine: the velocity is upsampled when the next level starts), so a coarse level costs what its
    voxels cost, not what the final grid's do.

    Args:
        stage: the SVF stage.
        grid: the fixed image's grid.
        level_shrink: the level's shrink factor (as :meth:`ProblemBuilder.shrink` gives it).
        finest_shrink: the shrink factor of the stage's finest level.
    """
    final = stage.svf_spacing_mm or max(2.0 * min(grid.spacing) * float(finest_shrink), 2.0)
    return grid.with_spacing([max(final, s * float(level_shrink)) for s in grid.spacing])


def make_stage_transform(stage: StageConfig, grid: Grid, center: np.ndarray, dtype, device,
                         vgrid: Grid | None = None) -> nn.Module:
    """A new identity transform of the stage's kind, centred on the fixed image (an SVF on ``vgrid``, by
    default :func:`velocity_grid` at full resolution)."""
    from .. import transforms as T

    kind = stage.kind
    d = grid.ndim
    c = torch.as_tensor(center, dtype=dtype)
    if kind is TransformKind.TRANSLATION:
        t = T.Translation(ndim=d, dtype=dtype)
    elif kind is TransformKind.RIGID:
        t = T.Rigid(ndim=d, center=c, dtype=dtype)
    elif kind is TransformKind.SIMILARITY:
        t = T.Similarity(ndim=d, center=c, dtype=dtype)
    elif kind is TransformKind.AFFINE:
        t = T.Affine(ndim=d, center=c, dtype=dtype)
    elif kind is TransformKind.BSPLINE:
        t = T.BSplineTransform.from_grid(grid, spacing_mm=stage.control_spacing_mm, dtype=dtype)
    else:
        vgrid = vgrid or velocity_grid(stage, grid)
        t = T.StationaryVelocityField(
            torch.zeros(1, d, *vgrid.shape, dtype=dtype), vgrid, steps=int(stage.svf_steps)
        )
    return t.to(device)


def parameter_scales(module: nn.Module, radius: float) -> dict[str, torch.Tensor]:
    """Per-parameter factor ``s`` with ``parameter = z * s`` (``z``: the optimisation variable, mm-like).

    Linear transforms declare their physical scales (:meth:`LinearTransform.parameter_scales`: mm per unit
    of each parameter at ``radius`` from the centre); dense transforms (B-spline coefficients, velocities)
    are already in mm (``s = 1``).
    """
    from ..transforms.linear import LinearTransform

    radius = max(float(radius), 1e-6)
    if isinstance(module, LinearTransform):
        mm = module.parameter_scales(radius)
        out, offset = {}, 0
        named = dict(module.named_parameters())
        for name in module._flat:
            p = named[name]
            size = p[0].numel()
            out[name] = (1.0 / mm[offset : offset + size]).reshape(p.shape[1:]).expand_as(p).clone()
            offset += size
        return out
    return {name: torch.ones_like(p) for name, p in module.named_parameters()}


class Scaled(nn.Module):
    """Holds optimisation variables z with ``parameter = z * scale`` and evaluates the wrapped transform."""

    def __init__(self, transform: nn.Module, scales: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.transform = transform
        self.names = [n for n, _ in transform.named_parameters()]
        self.scale = {n: scales[n].detach() for n in self.names}
        self.z = nn.ParameterList(
            [nn.Parameter((p.detach() / self.scale[n]).clone()) for n, p in transform.named_parameters()]
        )

    def params(self) -> dict[str, torch.Tensor]:
        return {n: z * self.scale[n] for n, z in zip(self.names, self.z)}

    def call(self, method: str, *args):
        params = self.params()
        module = self.transform

        class _Call(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.t = module

            def forward(self, *a):
                return getattr(self.t, method)(*a) if method != "forward" else self.t(*a)

        wrapper = _Call()
        return torch.func.functional_call(wrapper, {f"t.{k}": v for k, v in params.items()}, args)

    def flat(self) -> np.ndarray:
        return torch.cat([z.detach().reshape(-1) for z in self.z]).cpu().double().numpy()

    def set_flat(self, vec: np.ndarray) -> None:
        i = 0
        with torch.no_grad():
            for z in self.z:
                n = z.numel()
                z.copy_(torch.tensor(vec[i : i + n], dtype=z.dtype).reshape(z.shape))
                i += n

    def commit(self) -> nn.Module:
        """Write the optimised values back into the transform and return it (detached)."""
        with torch.no_grad():
            for n, v in self.params().items():
                _get_param(self.transform, n).copy_(v)
        return self.transform


def _get_param(module: nn.Module, name: str) -> torch.Tensor:
    obj = module
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj

