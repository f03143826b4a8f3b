"""Warping images and mapping points with a transform (pull).

Convention:
    A transform ``T`` maps fixed-space world points to moving-space world points. Warping is pull:
    for every voxel centre ``x`` of the target (fixed) grid, ``warped(x) = moving(T(x))``: ``x`` is
    mapped to world mm in the moving space, then to the moving image's voxel space, and sampled there
    with :func:`omnireg.core.sample`. Landmarks of the fixed image are mapped with the very same
    ``T`` (:func:`transform_points`) to their positions in the moving image.

    Consequence (pinned by a test): a translation by ``+t`` mm moves image content by ``-t`` mm.
"""

from __future__ import annotations

import torch

from ..core.enums import Interp, Padding
from ..core.grid import Grid
from ..core.image import Image
from ..core.sampling import affine_points, sample
from .base import Transform, broadcast_batch, check_points
from .linear import Identity

__all__ = ["warp", "resample", "transform_points", "moving_voxel_points"]


def moving_voxel_points(
    transform: Transform, fixed_grid: Grid, moving_grid: Grid, *, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Moving-image voxel positions of the fixed grid's voxel centres: ``voxel_from_world_m(T(x))``.

    For linear transforms the chain ``voxel_from_world_m @ M @ world_from_voxel_f`` is multiplied in
    float64 and applied to integer voxel indices, so an identity on equal grids is exact.

    Args:
        transform: fixed -> moving world transform of batch size N.
        fixed_grid: the grid of the output (target) points.
        moving_grid: the grid whose voxel space the points are returned in.
        dtype: dtype of the result (default: the transform's).

    Returns:
        ``(N, *S_fixed, D)`` continuous voxel indices of ``moving_grid`` in tensor-axis order.
    """
    if not isinstance(transform, Transform):
        raise TypeError(f"transform: expected a Transform, got {type(transform).__name__}")
    for name, g in (("fixed_grid", fixed_grid), ("moving_grid", moving_grid)):
        if not isinstance(g, Grid):
            raise TypeError(f"{name}: expected a Grid, got {type(g).__name__}")
        if g.ndim != transform.ndim:
            raise ValueError(f"{name}: expected a {transform.ndim}D grid for a {transform.ndim}D transform, got {g.ndim}D")
    dtype = dtype or transform.dtype
    if transform.is_linear:
        m = transform.matrix()
        device = m.device
        vm = torch.as_tensor(moving_grid.voxel_from_world(), dtype=torch.float64, device=device)
        wf = torch.as_tensor(fixed_grid.world_from_voxel(), dtype=torch.float64, device=device)
        total = vm @ m.to(torch.float64) @ wf
        return affine_points(total, fixed_grid.shape, dtype)  # exact for integer index maps
    y = transform.transform_grid(fixed_grid, dtype=dtype)
    return moving_grid.transform_points(y, "world", "voxel")


def warp(
    moving_data: torch.Tensor,
    moving_grid: Grid,
    transform: Transform,
    fixed_grid: Grid,
    *,
    interp: Interp | str = Interp.LINEAR,
    padding: Padding | str = Padding.ZEROS,
) -> torch.Tensor:
    """Pull-warp a batch of moving images onto the fixed grid: ``out(x) = moving(T(x))``.

    Differentiable with respect to ``moving_data`` and the transform's parameters (with linear or
    cubic interpolation; nearest neighbour gives zero gradients with respect to the transform).

    Args:
        moving_data: ``(N, C, *S_m)`` moving images on ``moving_grid``; N is the transform's batch
            size or 1 (one image, N transforms; or N images, one transform).
        moving_grid: the grid of ``moving_data``.
        transform: fixed -> moving world transform (mm).
        fixed_grid: the target grid (any spacing, origin, direction).
        interp: ``"linear"`` (default), ``"nearest"`` or ``"cubic"``; integer data use nearest.
        padding: ``"zeros"`` (default) or ``"border"`` outside the moving image.

    Returns:
        ``(max(N, batch_size), C, *S_fixed)``, dtype of ``moving_data``.

    Raises:
        TypeError, ValueError: on mismatching shapes, grids or batch sizes.
    """
    if not isinstance(moving_data, torch.Tensor):
        raise TypeError(f"moving_data: expected a torch.Tensor (N, C, *S), got {type(moving_data).__name__}")
    if not isinstance(moving_grid, Grid):
        raise TypeError(f"moving_grid: expected a Grid, got {type(moving_grid).__name__}")
    if moving_data.ndim != moving_grid.ndim + 2 or tuple(moving_data.shape[2:]) != moving_grid.shape:
        raise ValueError(
            f"moving_data: expected shape (N, C, {', '.join(map(str, moving_grid.shape))}) to match moving_grid, "
            f"got {tuple(moving_data.shape)}"
        )
    if not isinstance(transform, Transform):
        raise TypeError(f"transform: expected a Transform, got {type(transform).__name__}")
    broadcast_batch(moving_data.shape[0], transform.batch_size, "moving_data and transform")
    dtype = moving_data.dtype if moving_data.dtype.is_floating_point else transform.dtype
    for name, g in (("fixed_grid", fixed_grid), ("moving_grid", moving_grid)):
        if not isinstance(g, Grid):
            raise TypeError(f"{name}: expected a Grid, got {type(g).__name__}")
        if g.ndim != transform.ndim:
            raise ValueError(f"{name}: expected a {transform.ndim}D grid for a {transform.ndim}D transform, got {g.ndim}D")
    vox = moving_voxel_points(transform, fixed_grid, moving_grid, dtype=dtype)
    return sample(moving_data, vox.to(moving_data.device), interp=interp, padding=padding)


def resample(
    moving: Image,
    transform: Transform | None = None,
    *,
    onto: Grid,
    interp: Interp | str = Interp.LINEAR,
    padding: Padding | str = Padding.ZEROS,
) -> Image:
    """Pull-resample a moving :class:`Image` onto any target grid: ``out(x) = moving(T(x))``.

    Each voxel centre ``x`` of ``onto`` is mapped to moving-space world mm by ``transform``, then to
    the moving image's voxel space, and sampled there. Label maps (integer data) are sampled with
    nearest neighbour and keep their dtype.

    Args:
        moving: the image to warp.
        transform: fixed -> moving world transform with batch size 1; ``None`` is the identity (plain
            resampling onto ``onto``). For batches of transforms use :func:`warp`.
        onto: the target grid (other spacing, origin, oblique direction all allowed).
        interp, padding: as :func:`warp`.

    Returns:
        an Image on ``onto`` with ``moving``'s channels and dtype.

    Raises:
        TypeError: if ``moving`` is not an Image or ``onto`` not a Grid.
        ValueError: if the transform's batch size is not 1 or dimensions differ.

    Example:
        >>> import torch
        >>> from omnireg.core import Grid, Image
        >>> from omnireg.transforms import Translation
        >>> img = Image(torch.arange(5.0)[None, :, None].expand(1, 5, 2).contiguous(), Grid((5, 2)))
        >>> resample(img, Translation(2, translation=[1.0, 0.0]), onto=img.grid).data[0, :, 0].tolist()
        [1.0, 2.0, 3.0, 4.0, 0.0]
    """
    if not isinstance(moving, Image):
        raise TypeError(f"moving: expected an Image, got {type(moving).__name__}")
    if not isinstance(onto, Grid):
        raise TypeError(f"onto: expected a Grid, got {type(onto).__name__}")
    if transform is None:
        transform = Identity(moving.ndim, dtype=moving.dtype if not moving.is_label else torch.float32)
    if transform.batch_size != 1:
        raise ValueError(
            f"transform: expected batch size 1 for resample (one Image out), got {transform.batch_size}; use warp()"
        )
    out = warp(moving.batch(), moving.grid, transform, onto, interp=interp, padding=padding)
    return Image(out[0], onto)


def transform_points(transform: Transform, points: torch.Tensor) -> torch.Tensor:
    """Map fixed-space world points (e.g. landmarks, RAS mm) to moving-space world points.

    This is exactly the mapping used to warp images (pull): a landmark at ``x`` in the fixed image
    corresponds to ``transform(x)`` in the moving image, and the warped moving image shows at ``x``
    what the moving image shows at ``transform(x)``.

    Args:
        transform: fixed -> moving world transform.
        points: ``(N, *P, D)`` world mm points in the fixed space.

    Returns:
        ``(N, *P, D)`` world mm points in the moving space.
    """
    if not isinstance(transform, Transform):
        raise TypeError(f"transform: expected a Transform, got {type(transform).__name__}")
    return transform(check_points(points, transform.ndim))

