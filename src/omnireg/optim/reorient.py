"""Learned feature maps of the moving image recomputed in the fixed frame through the current estimate.

A learned feature map (DISA) is not rotation-equivariant: the network saw patch pairs in the same
orientation, so the features of a moving image rotated by 30 deg against the fixed one do not compare
like the features of two aligned patches, and the similarity of a pose far from the identity is
wrong. :class:`ReorientedMoving` resamples the moving image into the fixed image's frame through a
transform ``A`` (the current estimate, fixed world -> moving world) onto a padded copy of the fixed
feature grid and computes the features there. A transform ``T`` then reads the moving features at
``A^-1 T x``: at ``T = A`` every fixed node meets a moving feature computed in the same orientation.

The padded grid is shifted by half a feature-node spacing against the fixed nodes, so at ``T = A``
every fixed node lies in the middle of a moving feature cell: an unshifted grid puts every fixed node
on a moving node, where interpolation is exact and the similarity has a kink, which locks the
optimiser to the pose the features were computed at.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..core import Grid, sample
from .pyramid import regrid

__all__ = ["ReorientedMoving"]


class ReorientedMoving:
    """Moving features computed in the fixed frame through a transform (module docstring).

    Args:
        metric: the learned feature metric (``feature_level``, ``moving_stride``, ``_at_model_spacing``).
        fixed_feature_grid: the stride-4 grid of the fixed features.
        moving_data, moving_grid: the moving pyramid level ``(1, C, *S)`` (channel 0 is used).
        moving_mask: optional moving mask on ``moving_grid``.
        pad_mm: margin around the fixed field of view where moving features are computed (residual
            motion that carries a fixed node further out reads zeros and leaves the overlap).
    """

    def __init__(self, metric, fixed_feature_grid: Grid, moving_data: torch.Tensor, moving_grid: Grid,
                 moving_mask: torch.Tensor | None, *, pad_mm: float = 8.0) -> None:
        self.metric = metric
        d = fixed_feature_grid.ndim
        model = metric.model(d)
        data, grid = metric._at_model_spacing(moving_data[:, :1], moving_grid, model.config.patch_spacing_mm)
        self.data = data
        self.grid = grid
        # the moving field of view and mask travel with the image, on the same grid
        ones = torch.ones_like(data)
        extra = [ones]
        if moving_mask is not None:
            extra.append(regrid(moving_mask.to(data.dtype), moving_grid, grid))
        self.extra = torch.cat(extra, dim=1)
        self.stride = int(metric.moving_stride)
        # the fixed features' source grid (node k at source voxel 4 k), padded by whole nodes plus half a
        # moving node each side
        src = fixed_feature_grid.world_from_voxel() @ np.diag([0.25] * d + [1.0])
        spacing = np.linalg.norm(src[:d, :d], axis=0)
        pad_nodes = int(math.ceil(float(pad_mm) / (4.0 * float(spacing.min()))))
        shift = 4 * pad_nodes + 0.5 * self.stride
        wv = src.copy()
        wv[:d, d] = src[:d, d] - src[:d, :d] @ np.full(d, shift)
        shape = tuple(int(4 * n + 2 * 4 * pad_nodes + self.stride) for n in fixed_feature_grid.shape)
        self.ref = Grid.from_affine(shape, wv)
        self.matrix: np.ndarray | None = None

    def moved_mm(self, matrix: np.ndarray) -> float:
        """How far the orientation changed between the pose the features were last computed at and
        ``matrix``: the largest displacement of the padded fixed field of view's corners by the linear part
        of the relative transform about the centre (a translation leaves the features valid). Infinite
        before the first computation."""
        if self.matrix is None:
            return math.inf
        d = self.ref.ndim
        corners = np.array(np.meshgrid(*[[0.0, n - 1.0] for n in self.ref.shape], indexing="ij")).reshape(d, -1).T
        world = np.c_[corners, np.ones(len(corners))] @ self.ref.world_from_voxel().T
        rel = np.linalg.solve(self.matrix, np.asarray(matrix, dtype=np.float64))
        arm = world[:, :d] - world[:, :d].mean(0)
        return float(np.linalg.norm(arm @ (rel[:d, :d] - np.eye(d)).T, axis=1).max())

    def features(self, matrix: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, Grid, np.ndarray]:
        """Moving features in the fixed frame through ``matrix`` (fixed world -> moving world).

        Returns ``(features (1, C, *S_f), support and mask (1, 1 or 2, *S_f), feature grid,
        moving-world -> feature-voxel matrix)``.
        """
        a = np.asarray(matrix, dtype=np.float64)
        self.matrix = a
        d = self.ref.ndim
        dev = self.data.device
        pts = self.ref.points("world", dtype=torch.float64, device=dev)
        moving_world = pts @ torch.as_tensor(a[:d, :d].T, device=dev) + torch.as_tensor(a[:d, d], device=dev)
        vox = self.grid.transform_points(moving_world, "world", "voxel").unsqueeze(0).to(self.data.dtype)
        both = sample(torch.cat([self.data, self.extra], dim=1), vox, interp="linear", padding="zeros")
        image, extra = both[:, :1], both[:, 1:]
        feats, fgrid = self.metric.feature_level(image, self.ref, dense=False, moving=True)
        s = self.stride
        extra = extra[(slice(None), slice(None)) + (slice(None, None, s),) * d]
        extra = extra[(slice(None), slice(None)) + tuple(slice(0, n) for n in feats.shape[2:])]
        vox_from_world = fgrid.voxel_from_world() @ np.linalg.inv(a)
        return feats, extra, fgrid, vox_from_world
