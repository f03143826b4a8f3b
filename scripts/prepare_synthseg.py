"""Prepare the 20 SynthSeg label maps for training registration networks (2 mm, one common RAS grid).

What it does (details and the reasons in ``scripts/PREPARED_DATA.md``):

1. **Alignment images**: from every 1 mm label map, five brain tissue channels (cerebral white matter,
   cerebral cortex, ventricles, deep grey matter, cerebellum + brain stem; extra-cerebral labels left out)
   as fractions averaged over 4 mm blocks (downsampled first: the registration is cheap).
2. **Affine registration, label-based, with omnireg's own engine** (``omnireg.optim.register``): every
   subject's channel image (moving) to the reference's (fixed), centre-of-mass initialisation, then an
   affine stage with MSE over the channels at 8 and 4 mm. The result maps reference world points to the
   subject's world points (pull).
3. **Common grid**: RAS axes, 2 mm, covering the union of all subjects' brains mapped into the reference
   space, plus a margin, each size rounded up to a multiple of 16 voxels. The brain is the named structures
   without the brain stem and the CSF label, which reach down the spinal canal by very different lengths
   (with them the grid grows from 160 to 320 mm along S); the lower brain stem is cut where the grid ends.
4. **Aligned maps**: every label map pulled onto the common grid through its affine, label by label
   (each label's indicator interpolated linearly, the largest wins: partial volumes are resolved by
   majority instead of aliasing), written as int16 NIfTI with the FreeSurfer numbers.
5. **Native test maps**: subjects of the test split also resampled to 2 mm on their own (LIA) field of
   view, unaligned, for benchmarks that register test pairs from scratch (affine first).
6. ``labels.pt``: the training and validation maps (not the test maps) as one int16 tensor, so training
   needs no NIfTI reader (the GPU machine has no nibabel) and loads in a fraction of a second.
7. ``prepared.json``: grid, split, per-subject source file and SHA-256, output files and SHA-256, the
   matrix, the Dice to the reference before (world coordinates as stored) and after alignment, timing,
   the registration configuration, the command and the date.

Usage::

    OMP_NUM_THREADS=2 python scripts/prepare_synthseg.py --out /work/data_cache/synthseg_2mm
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from omnireg.core import Grid, Image, sample
from omnireg.io import load_image, save_image
from omnireg.optim import RegistrationConfig, StageConfig, register
from omnireg.training.labelmaps import (
    NAMED_STRUCTURES,
    class_table,
    read_prepared_index,
    sha256_file,
    write_label_tensors,
    write_prepared_index,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "synthseg_label_maps"

CHANNELS = {
    "cerebral_wm": [2, 41, 77, 251, 252, 253, 254, 255],
    "cortex": [3, 42],
    "ventricles": [4, 5, 43, 44, 14, 15, 72],
    "deep_gm": [10, 11, 12, 13, 17, 18, 26, 28, 49, 50, 51, 52, 53, 54, 58, 60],
    "cerebellum_brainstem": [7, 8, 46, 47, 16],
}
EXTENT_LABELS = [s for s in NAMED_STRUCTURES if s not in (16, 24)]  # brain stem and CSF reach down the spinal canal
SPLIT = {
    "train": [f"{i:02d}" for i in range(1, 13)],
    "validation": ["13", "14", "15"],
    "test": [f"{i:02d}" for i in range(16, 21)],
}


def alignment_image(labels: Image, block: int) -> Image:
    """Tissue fractions ``(5, *S / block)`` of the label map (mean over ``block^3`` voxels)."""
    lab = labels.data[0]
    chans = torch.stack([torch.isin(lab, torch.tensor(v, dtype=lab.dtype)).float() for v in CHANNELS.values()])
    pooled = F.avg_pool3d(chans[None], block)[0]
    grid = Grid(tuple(pooled.shape[1:]), tuple(s * block for s in labels.grid.spacing),
                tuple(labels.grid.transform_points(np.full(3, (block - 1) / 2), "voxel", "world")),
                labels.grid.direction)
    return Image(pooled, grid)


def registration_config(seed: int) -> RegistrationConfig:
    stage = StageConfig(transform="affine", metric="mse", shrink=[2, 1], iterations=[80, 40], optimizer="lbfgs")
    return RegistrationConfig(stages=[stage], init="com", seed=seed, normalize=False).validate()


def resample_labels(labels: Image, grid: Grid, matrix: np.ndarray) -> torch.Tensor:
    """Labels pulled onto ``grid`` through ``matrix`` (grid world -> label world), label-wise majority; int16."""
    pts = grid.points("world", dtype=torch.float64).reshape(-1, 3)
    pts = pts @ torch.as_tensor(matrix[:3, :3]).T + torch.as_tensor(matrix[:3, 3])
    vox = labels.grid.transform_points(pts, "world", "voxel")
    # crop the source to the sampled region (plus one voxel): every label test below runs on the crop only
    size = torch.tensor(labels.grid.shape, dtype=torch.float64)
    lo = torch.clamp(torch.floor(vox.min(0).values) - 1, min=torch.zeros(3, dtype=torch.float64), max=size - 1).long()
    hi = torch.clamp(torch.ceil(vox.max(0).values) + 2, min=lo + 1, max=size).long()
    lab = labels.data[0][lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    vox = (vox - lo.double()).float().reshape(1, *grid.shape, 3)
    best = torch.full(grid.shape, 0.5, dtype=torch.float32)  # background wins below one half of the voxel
    out = torch.zeros(grid.shape, dtype=torch.int16)
    for value in torch.unique(lab).tolist():
        if value == 0:
            continue
        frac = sample((lab == value).float()[None, None], vox, interp="linear")[0, 0]
        take = frac > best
        best = torch.where(take, frac, best)
        out[take] = value
    return out


def dice_named(a: np.ndarray, b: np.ndarray) -> float:
    scores = []
    for s in NAMED_STRUCTURES:
        x, y = a == s, b == s
        if y.any():
            scores.append(2 * np.logical_and(x, y).sum() / (x.sum() + y.sum()))
    return float(np.mean(scores))


def common_grid(brain_points: list[np.ndarray], spacing: float, margin: float, multiple: int) -> Grid:
    """RAS grid covering all points (world mm) plus ``margin``, sizes rounded up to ``multiple``."""
    pts = np.concatenate(brain_points)
    lo, hi = pts.min(0) - margin, pts.max(0) + margin
    shape = np.ceil((hi - lo) / spacing / multiple).astype(int) * multiple
    centre = (lo + hi) / 2
    origin = centre - spacing * (shape - 1) / 2
    return Grid(tuple(int(s) for s in shape), (spacing,) * 3, tuple(origin.tolist()), np.eye(3))


def _tensors(out: Path, names: list[str], arrays: dict) -> tuple[str, str]:
    return write_label_tensors(out, names, [arrays[n] for n in names], "labels.pt")


def add_tensors(out: Path) -> Path:
    """Add ``labels.pt`` to an existing prepared folder (from its aligned NIfTI files) and record it."""
    index = read_prepared_index(out)
    index.pop("format", None), index.pop("version", None)
    names = index["split"]["train"] + index["split"]["validation"]
    arrays = {n: load_image(out / index["subjects"][n]["file"]).data[0].numpy() for n in names}
    index["tensor_file"], index["tensor_sha256"] = _tensors(out, names, arrays)
    return write_prepared_index(out, index)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder with training_seg_01..20.nii.gz")
    p.add_argument("--out", type=Path, required=True, help="output folder (created; outside the package)")
    p.add_argument("--reference", default="01", help="subject the others are aligned to (default 01)")
    p.add_argument("--spacing", type=float, default=2.0, help="spacing of the common grid in mm")
    p.add_argument("--margin", type=float, default=6.0, help="margin around the brains in mm")
    p.add_argument("--block", type=int, default=4, help="voxels per axis averaged into one alignment voxel")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--force", action="store_true", help="overwrite an existing prepared.json")
    p.add_argument("--reuse-matrices", type=Path, default=None,
                   help="take the affine matrices from a previous prepared.json or registrations.json (same reference)")
    p.add_argument("--add-tensors", action="store_true", help="only add labels.pt to an existing --out folder")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.add_tensors:
        print(f"wrote {add_tensors(args.out)}")
        return 0
    if (args.out / "prepared.json").exists() and not args.force:
        raise SystemExit(f"--out: {args.out / 'prepared.json'} exists; use --force")
    (args.out / "aligned").mkdir(parents=True, exist_ok=True)
    (args.out / "native").mkdir(parents=True, exist_ok=True)
    names = [n for part in SPLIT.values() for n in part]
    sources = {n: args.source / f"training_seg_{n}.nii.gz" for n in names}
    t_start = time.time()
    ref = load_image(sources[args.reference])
    ref_align = alignment_image(ref, args.block)
    cfg = registration_config(seed=0)
    cache = args.out / "registrations.json"
    reuse = {}
    if args.reuse_matrices:
        data = json.loads(args.reuse_matrices.read_text())
        reuse = data.get("subjects", data)
        if data.get("subjects") is not None and data.get("reference", {}).get("subject") != args.reference:
            raise SystemExit("--reuse-matrices: that file was aligned to another reference")
    records, maps, brains = {}, {}, {}
    for n in names:
        labels = ref if n == args.reference else load_image(sources[n])
        maps[n] = labels
        t0 = time.time()
        if n == args.reference:
            matrix = np.eye(4)
        elif n in reuse:
            matrix = np.asarray(reuse[n]["matrix_reference_to_subject"])
        else:
            res = register(ref_align, alignment_image(labels, args.block), config=cfg)
            matrix = res.linear.matrix()[0].detach().double().numpy()
        seconds = time.time() - t0 if n not in reuse else reuse[n]["register_seconds"]
        # brain voxels in reference world coordinates: x_ref = matrix^-1 x_subject
        idx = np.argwhere(np.isin(labels.data[0].numpy(), EXTENT_LABELS))[::7].astype(np.float64)
        world = labels.grid.transform_points(idx, "voxel", "world")
        inv = np.linalg.inv(matrix)
        brains[n] = world @ inv[:3, :3].T + inv[:3, 3]
        records[n] = {"source": str(sources[n]), "source_sha256": sha256_file(sources[n]),
                      "matrix_reference_to_subject": matrix.tolist(), "register_seconds": round(seconds, 2)}
        if n in reuse and reuse[n].get("source_sha256") != records[n]["source_sha256"]:
            raise SystemExit(f"--reuse-matrices: the source of subject {n} changed since {args.reuse_matrices}")
        cache.write_text(json.dumps(records, indent=1))  # a crash or re-gridding can reuse the registrations
        print(f"{n}: registered in {seconds:.1f} s{' (reused)' if n in reuse else ''}", flush=True)
    grid = common_grid(list(brains.values()), args.spacing, args.margin, 16)
    print(f"common grid {grid.shape} at {args.spacing} mm, origin {np.round(grid.origin, 1)}", flush=True)
    aligned, before = {}, {}
    for n in names:
        aligned[n] = resample_labels(maps[n], grid, np.asarray(records[n]["matrix_reference_to_subject"]))
        before[n] = resample_labels(maps[n], grid, np.eye(4))
        file = f"aligned/seg_{n}.nii.gz"
        save_image(Image(aligned[n][None], grid), args.out / file, force=True)
        records[n].update(file=file, file_sha256=sha256_file(args.out / file))
        if n in SPLIT["test"]:
            ngrid = maps[n].grid.with_spacing(args.spacing)
            nfile = f"native/seg_{n}.nii.gz"
            save_image(Image(resample_labels(maps[n], ngrid, np.eye(4))[None], ngrid), args.out / nfile, force=True)
            records[n].update(native_file=nfile, native_file_sha256=sha256_file(args.out / nfile),
                              native_grid=ngrid.to_dict())
    ref_map = aligned[args.reference].numpy()
    for n in names:
        records[n]["dice_to_reference_before"] = round(dice_named(before[n].numpy(), ref_map), 4)
        records[n]["dice_to_reference_after"] = round(dice_named(aligned[n].numpy(), ref_map), 4)
        print(f"{n}: Dice to {args.reference} before {records[n]['dice_to_reference_before']:.3f} "
              f"after {records[n]['dice_to_reference_after']:.3f}", flush=True)
    values = class_table([a.numpy() for a in aligned.values()])
    others = [n for n in names if n != args.reference]
    index = {
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "omnireg_git_commit": git_commit(),
        "source_dir": str(args.source),
        "reference": {"subject": args.reference, "why": "a training subject of the same data set (labels of the same "
                      "protocol, Apache-2.0); no template of known licence and label-compatible tissue maps is at hand"},
        "grid": grid.to_dict(),
        "split": SPLIT,
        "subjects": records,
        "label_values": values.tolist(),
        "named_structures": {str(k): v for k, v in NAMED_STRUCTURES.items()},
        "alignment": {"channels": CHANNELS, "block_voxels": args.block, "config": cfg.to_dict(),
                      "grid_extent_labels": EXTENT_LABELS, "margin_mm": args.margin,
                      "register_seconds_total": round(sum(records[n]["register_seconds"] for n in others), 1),
                      "threads": args.threads},
        "slices_2d": {"axis": 2, "note": "2D training and benchmarks cut the aligned maps along tensor axis 2 (axial)"},
        "dice_to_reference_mean": {
            "before": round(float(np.mean([records[n]["dice_to_reference_before"] for n in others])), 4),
            "after": round(float(np.mean([records[n]["dice_to_reference_after"] for n in others])), 4)},
        "total_seconds": round(time.time() - t_start, 1),
    }
    index["tensor_file"], index["tensor_sha256"] = _tensors(args.out, SPLIT["train"] + SPLIT["validation"],
                                                            {n: aligned[n].numpy() for n in names})
    path = write_prepared_index(args.out, index)
    print(f"wrote {path} ({index['total_seconds']:.0f} s; mean Dice to the reference "
          f"{index['dice_to_reference_mean']['before']:.3f} -> {index['dice_to_reference_mean']['after']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
