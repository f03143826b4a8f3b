"""Patch sampling for training learned similarities: volumes in world space, random frames, patch pairs.

A training patch is a small regular grid of ``size`` points per axis, spaced ``spacing_mm`` apart,
centred at a world point and oriented by a **frame**: a ``(D_volume, D_patch)`` matrix with
orthonormal columns (a random rotation, possibly with a reflection). Points are sampled from the
volume with linear interpolation (zeros outside), so a 2D patch can be an oblique plane through a 3D
volume, and two volumes of a pair are sampled at related world positions through the **same**
frame. Everything is in world mm, so volumes of any spacing and orientation mix freely.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core import Grid, Image, sample
from ..core.intensity import robust_normalize

__all__ = [
    "TrainingVolume",
    "load_training_volume",
    "random_frames",
    "read_pairs_csv",
    "sample_patches",
    "patch_offsets",
]

log = logging.getLogger(__name__)


@dataclass
class TrainingVolume:
    """A normalised training image ``(1, 1, *S)`` (robust range ``[0, 1]``), its grid and foreground voxels.

    ``foreground`` holds the flat indices of voxels above ``threshold`` of the normalised intensity,
    from which patch centres are drawn. ``name`` is the file it came from.
    """

    data: torch.Tensor
    grid: Grid
    foreground: torch.Tensor
    name: str = ""

    @property
    def ndim(self) -> int:
        return self.grid.ndim

    def random_centres(self, n: int, generator: torch.Generator, *, anywhere: float = 0.0) -> torch.Tensor:
        """``(n, D)`` world points of random voxels (jittered by up to half a voxel).

        A fraction ``anywhere`` of them is drawn from the whole image (background included), the rest
        from the foreground.
        """
        idx = self.foreground[torch.randint(self.foreground.numel(), (n,), generator=generator)]
        if anywhere > 0:
            every = torch.randint(self.grid.numel, (n,), generator=generator)
            idx = torch.where(torch.rand(n, generator=generator) < anywhere, every, idx)
        vox = torch.stack(torch.unravel_index(idx, self.grid.shape), dim=1).double()
        vox = vox + torch.rand(vox.shape, generator=generator, dtype=torch.float64) - 0.5
        return torch.as_tensor(self.grid.transform_points(vox, "voxel", "world"))


def load_training_volume(source: str | Path | Image, *, threshold: float = 0.05) -> TrainingVolume:
    """Read (or take) an image, keep its first channel, normalise it robustly and list its foreground.

    Raises:
        ValueError: the image has no voxel above ``threshold`` after normalisation.
    """
    if isinstance(source, Image):
        image, name = source, "<image>"
    else:
        from ..io import load_image

        image, name = load_image(source), str(source)
    data = robust_normalize(image.batch()[:, :1].float())
    fg = (data.reshape(-1) > threshold).nonzero().reshape(-1)
    if fg.numel() == 0:
        raise ValueError(f"image {name}: no foreground voxel above {threshold} of the robust intensity range")
    return TrainingVolume(data=data, grid=image.grid, foreground=fg, name=name)


def read_pairs_csv(path: str | Path) -> list[dict]:
    """Rows of a pairs file: columns ``fixed``, ``moving`` and optionally ``split`` (``train``/``val``).

    Relative paths are read relative to the CSV's folder. A header row is required.

    Raises:
        FileNotFoundError: the CSV or a listed image is missing.
        ValueError: missing columns, an empty file or an unknown split.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs: no such file: {path}")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        if not {"fixed", "moving"} <= cols:
            raise ValueError(f"pairs: {path} needs a header with columns 'fixed' and 'moving', got {sorted(cols)}")
        rows = []
        for i, row in enumerate(reader, start=2):
            split = (row.get("split") or "train").strip().lower()
            if split not in ("train", "val"):
                raise ValueError(f"pairs: {path} line {i}: split must be 'train' or 'val', got {split!r}")
            entry = {"split": split}
            for key in ("fixed", "moving"):
                value = (row.get(key) or "").strip()
                if not value:
                    raise ValueError(f"pairs: {path} line {i}: empty '{key}'")
                p = Path(value)
                p = p if p.is_absolute() else path.parent / p
                if not p.exists():
                    raise FileNotFoundError(f"pairs: {path} line {i}: no such image: {p}")
                entry[key] = str(p)
            rows.append(entry)
    if not rows:
        raise ValueError(f"pairs: {path} lists no image pair")
    return rows


def random_frames(
    n: int, volume_ndim: int, patch_ndim: int, generator: torch.Generator, *, reflect: bool = True
) -> torch.Tensor:
    """``(n, D_volume, D_patch)`` random orientations: uniform rotations (QR of a Gaussian matrix), each
    reflected with probability 1/2 if ``reflect``; a 2D patch of a 3D volume is a random oblique plane."""
    if patch_ndim > volume_ndim:
        raise ValueError(f"patch_ndim: a {patch_ndim}D patch cannot be cut from a {volume_ndim}D volume")
    g = torch.randn(n, volume_ndim, volume_ndim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)  # Haar-uniform
    det = torch.linalg.det(q)
    q[:, :, 0] = q[:, :, 0] * det.sign().unsqueeze(1)  # proper rotations
    if reflect:
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).double()
        q[:, :, -1] = q[:, :, -1] * flip.unsqueeze(1)
    return q[:, :, :patch_ndim]


def patch_offsets(size: int, spacing_mm: float, ndim: int, *, dtype=torch.float64) -> torch.Tensor:
    """``(size,) * ndim + (ndim,)`` patch-local offsets in mm, centred (centre voxel ``size // 2`` at 0)."""
    r = (torch.arange(size, dtype=dtype) - size // 2) * float(spacing_mm)
    mesh = torch.meshgrid(*([r] * ndim), indexing="ij")
    return torch.stack(mesh, dim=-1)


def sample_patches(
    volume: TrainingVolume,
    centres: torch.Tensor,
    frames: torch.Tensor,
    *,
    size: int,
    spacing_mm: float | torch.Tensor,
) -> torch.Tensor:
    """Patches of ``volume`` at world ``centres`` ``(B, D_volume)`` through ``frames`` ``(B, D_volume, D_patch)``.

    ``spacing_mm`` is one value or ``(B,)`` per-patch values (scale augmentation).

    Returns:
        ``(B, 1, *(size,) * D_patch)`` float32 patches (linear interpolation, zeros outside the volume).
    """
    b, dv, dp = frames.shape
    if dv != volume.ndim:
        raise ValueError(f"frames: expected {volume.ndim}D frames for this volume, got {dv}D")
    unit = patch_offsets(size, 1.0, dp).reshape(-1, dp)  # (P, dp)
    sp = torch.as_tensor(spacing_mm, dtype=torch.float64).reshape(-1, 1, 1).expand(b, 1, 1)
    world = centres.double().unsqueeze(1) + (unit.unsqueeze(0) * sp) @ frames.transpose(1, 2)  # (B, P, dv)
    m = torch.as_tensor(volume.grid.voxel_from_world(), dtype=torch.float64)
    vox = world @ m[:dv, :dv].T + m[:dv, dv]
    vox = vox.reshape(b, *([size] * dp), *([1] * (dv - dp)), dv).float()
    out = sample(volume.data.float(), vox, interp="linear", padding="zeros")  # (B, 1, *P, 1...)
    return out.reshape(b, 1, *([size] * dp))

