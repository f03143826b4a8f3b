"""Inverse-consistency penalty for a pair of forward and backward displacement fields.

Convention:
    ``u_f`` and ``u_b`` have shape ``(N, D, *S)``: displacements in **world mm** (components along world
    axes) on the voxel centres of the same ``grid``. The forward transform is ``T_f(x) = x + u_f(x)``
    and the backward one ``T_b(x) = x + u_b(x)``; they are inverse to each other when
    ``T_b(T_f(x)) = x``, i.e. ``u_f(x) + u_b(x + u_f(x)) = 0``. ``u_b`` is sampled at the world points
    ``x + u_f(x)`` (pull) with :func:`omnireg.core.sampling.sample`, after the world -> voxel map of the
    grid: ``v' = v + M^-1 u_f(x)`` with ``M = direction @ diag(spacing)`` (the origin cancels, so a
    spacing tuple suffices for an axis-aligned grid).
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.enums import Interp, Padding, as_enum
from ..core.sampling import sample
from ..core.differences import GridLike, check_displacement, voxel_from_world_linear

__all__ = ["inverse_consistency_penalty", "InverseConsistencyPenalty"]


def _composition_residual(
    u_first: torch.Tensor, u_second: torch.Tensor, minv: torch.Tensor, interp: Interp, padding: Padding
) -> torch.Tensor:
    """``u_first(x) + u_second(x + u_first(x))`` in world mm, ``(N, D, *S)``."""
    shape = u_first.shape[2:]
    axes = [torch.arange(s, dtype=u_first.dtype, device=u_first.device) for s in shape]
    voxels = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).unsqueeze(0)  # (1, *S, D)
    step = u_first.movedim(1, -1) @ minv.T  # world mm -> voxel offsets, (N, *S, D)
    warped = sample(u_second, voxels + step, interp=interp, padding=padding)
    return u_first + warped


def inverse_consistency_penalty(
    u_forward: torch.Tensor,
    u_backward: torch.Tensor,
    grid: GridLike,
    *,
    symmetric: bool = True,
    interp: Interp | str = Interp.LINEAR,
    padding: Padding | str = Padding.BORDER,
) -> torch.Tensor:
    """Mean squared inverse-consistency error (mm^2).

    ``e_f(x) = u_f(x) + u_b(x + u_f(x))`` and ``e_b(x) = u_b(x) + u_f(x + u_b(x))``;
    the penalty is ``mean_x ||e_f(x)||^2`` or, with ``symmetric=True``,
    ``(mean_x ||e_f(x)||^2 + mean_x ||e_b(x)||^2) / 2``. It is 0 when ``T_b = T_f^-1`` (exactly so for a
    translation and its negative, and for linear fields whose composed points stay inside the grid).

    Args:
        u_forward: ``u_f`` ``(N, D, *S)``, displacement in world mm on ``grid``.
        u_backward: ``u_b`` ``(N, D, *S)``, displacement in world mm on the same ``grid``.
        grid: the fields' :class:`Grid`, or ``D`` spacings in mm for an axis-aligned grid.
        symmetric: also include the backward-then-forward error ``e_b``.
        interp: interpolation of the resampled field (``"linear"``, ``"cubic"`` or ``"nearest"``;
            nearest gives no gradient with respect to the points).
        padding: values of a field beyond the grid (``"border"``: nearest border value, the default,
            so that a translation stays exactly consistent near the edges; ``"zeros"``).

    Returns:
        ``(N,)`` in the dtype and device of the fields, in mm^2.

    Raises:
        TypeError: if a field is not a floating tensor or ``grid`` has the wrong type.
        ValueError: on mismatched shapes, a grid that does not match the fields, or unknown options.

    Shape:
        ``u_forward``, ``u_backward``: ``(N, D, *S)`` -> ``(N,)``.

    Example:
        >>> t = torch.tensor([1.5, -0.5]).view(1, 2, 1, 1).expand(1, 2, 4, 4)
        >>> bool(inverse_consistency_penalty(t, -t, (1.0, 1.0)) < 1e-10)
        True
        >>> inverse_consistency_penalty(t, t, (1.0, 1.0))  # e = 2 t, ||e||^2 = 4 * 2.5
        tensor([10.])
    """
    check_displacement(u_forward, "u_forward")
    check_displacement(u_backward, "u_backward")
    if u_forward.shape != u_backward.shape:
        raise ValueError(
            f"u_backward: expected the shape of u_forward {tuple(u_forward.shape)}, got {tuple(u_backward.shape)}"
        )
    if u_forward.dtype != u_backward.dtype:
        raise TypeError(f"u_backward: expected dtype {u_forward.dtype} (as u_forward), got {u_backward.dtype}")
    interp = as_enum(interp, Interp, "interp")
    padding = as_enum(padding, Padding, "padding")
    minv = voxel_from_world_linear(grid, u_forward)
    err = _composition_residual(u_forward, u_backward, minv, interp, padding).square().sum(dim=1)
    value = err.flatten(1).mean(dim=1)
    if symmetric:
        err_b = _composition_residual(u_backward, u_forward, minv, interp, padding).square().sum(dim=1)
        value = 0.5 * (value + err_b.flatten(1).mean(dim=1))
    return value


class InverseConsistencyPenalty(nn.Module):
    """Module form of :func:`inverse_consistency_penalty`; ``forward(u_forward, u_backward, grid) -> (N,)``.

    Args:
        symmetric: also include the backward-then-forward error.
        interp: interpolation of the resampled field.
        padding: values of a field beyond the grid.
    """

    def __init__(
        self,
        *,
        symmetric: bool = True,
        interp: Interp | str = Interp.LINEAR,
        padding: Padding | str = Padding.BORDER,
    ) -> None:
        super().__init__()
        self.symmetric = bool(symmetric)
        self.interp = as_enum(interp, Interp, "interp")
        self.padding = as_enum(padding, Padding, "padding")

    def forward(self, u_forward: torch.Tensor, u_backward: torch.Tensor, grid: GridLike) -> torch.Tensor:
        """Args: forward and backward displacements ``(N, D, *S)`` in world mm on ``grid``."""
        return inverse_consistency_penalty(
            u_forward, u_backward, grid, symmetric=self.symmetric, interp=self.interp, padding=self.padding
        )

    def extra_repr(self) -> str:
        return f"symmetric={self.symmetric}, interp={self.interp.value}, padding={self.padding.value}"
