"""Stationary velocity fields integrated by scaling and squaring (diffeomorphic deformations).

Convention:
    ``v`` is a stationary velocity field in world mm, ``(N, D, *S)``, at the voxel centres of ``grid``
    (components are world axes, like :class:`~omnireg.transforms.DisplacementField`). The transform is
    ``T = exp(v)``, the flow of ``v`` at time 1, computed by scaling and squaring with an explicit
    number of ``steps``::

        u_0 = v / 2**steps,    u_{k+1}(x) = u_k(x) + u_k(x + u_k(x))    (k = 0 .. steps-1)

    so ``T(x) = x + u_steps(x)``. Each squaring interpolates ``u_k`` linearly; where ``x + u_k(x)`` leaves
    the grid, ``u_k`` is extended by its border values (a cut to zero there would fold the map at the edge
    of the grid wherever the velocity points outwards). The result is then evaluated like any
    :class:`DisplacementField` (zero beyond half a voxel outside its grid). The inverse is ``exp(-v)``.
"""

from __future__ import annotations

import torch

from ..core.grid import Grid
from ..core.sampling import sample
from .base import Transform
from .dense import (
    DisplacementField,
    check_field,
    evaluate_displacement,
    voxel_from_world_vectors,
    world_from_voxel_vectors,
)

__all__ = ["StationaryVelocityField", "integrate_velocity"]


def _check_steps(steps: object) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps: expected a non-negative int (number of squarings), got {steps!r}")
    return steps


def integrate_velocity(velocity: torch.Tensor, grid: Grid, *, steps: int) -> torch.Tensor:
    """Displacement ``u`` of ``exp(v)`` by scaling and squaring (formula in the module docstring).

    Args:
        velocity: ``(N, D, *S)`` world mm velocity at the voxel centres of ``grid``.
        grid: the grid of ``velocity`` (any spacing and direction).
        steps: number of squarings (``0`` returns ``v`` itself); the field is scaled by ``2**-steps``.

    Returns:
        ``(N, D, *S)`` world mm displacement of ``exp(v)`` on ``grid``; differentiable in ``velocity``.

    Raises:
        TypeError, ValueError: on a field that does not match ``grid`` or a bad ``steps``.
    """
    check_field(velocity, grid, "velocity")
    steps = _check_steps(steps)
    u = voxel_from_world_vectors(velocity, grid) / (2.0**steps)
    idx = grid.points("voxel", dtype=velocity.dtype, device=velocity.device).unsqueeze(0)
    for _ in range(steps):
        u = u + sample(u, idx + u.movedim(1, -1), interp="linear", padding="border")
    return world_from_voxel_vectors(u, grid)


class StationaryVelocityField(Transform):
    """``T = exp(v)`` for a stationary velocity field ``v`` in world mm (scaling and squaring).

    ``T`` maps fixed-space world points to moving-space world points (pull). ``forward`` integrates
    ``v`` on its grid and interpolates the resulting displacement at the given points (no caching).

    Args:
        velocity: ``(N, D, *S)`` world mm velocity at the voxel centres of ``grid``.
        grid: the fixed grid of the field.
        steps: number of squarings (explicit; default 7, i.e. ``v / 128`` squared 7 times).
        learnable: ``nn.Parameter`` copy (True) or a buffer kept in its autograd graph (False).

    Raises:
        TypeError, ValueError: on a mismatching field or a bad ``steps``.
    """

    def __init__(self, velocity: torch.Tensor, grid: Grid, *, steps: int = 7, learnable: bool = True) -> None:
        check_field(velocity, grid, "velocity")
        super().__init__(grid.ndim, int(velocity.shape[0]))
        self.grid = grid
        self.steps = _check_steps(steps)
        self._register("velocity", velocity, learnable)

    def displacement_field(self) -> DisplacementField:
        """``exp(v)`` as a :class:`DisplacementField` on :attr:`grid` (kept in the autograd graph)."""
        return DisplacementField(integrate_velocity(self.velocity, self.grid, steps=self.steps), self.grid, learnable=False)

    def _transform(self, points: torch.Tensor) -> torch.Tensor:
        u = integrate_velocity(self.velocity, self.grid, steps=self.steps)
        return points + evaluate_displacement(u, self.grid, points)

    def transform_grid(self, grid: Grid, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``T(x)`` at the voxel centres of ``grid`` (no extra interpolation on the field's own grid)."""
        self._check_grid(grid)
        return self.displacement_field().transform_grid(grid, dtype=dtype)

    def inverse(self) -> "StationaryVelocityField":
        """``exp(-v)`` with the same grid and steps (a copy, not linked to this field)."""
        return StationaryVelocityField(-self.velocity.detach(), self.grid, steps=self.steps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, steps={self.steps}, grid={self.grid!r}"
