"""Build the image pairs on which the shipped DISA models were trained (and validated).

Sources (all from ../shared/data, licences from their PROVENANCE.md files; nothing GPL is trained on):

- ``synthseg_label_maps`` (Apache-2.0): 20 whole-head label maps of different subjects. For each map
  two synthetic "modalities" are drawn SynthSeg-style: a random intensity per tissue class (left and
  right structures share it), Gaussian texture noise, partial-volume blur, a smooth multiplicative bias
  field, then resampling to 2 mm. ``--split safe`` (default): maps 01-12 train, 13-15 are held out (split
  ``val``) and the test subjects 16-20 are never read. ``--split v1``: maps 01-16 train, 17-20 held out, the
  split of the shipped 3D and 2D models (made before the test subjects were set apart; kept to reproduce them).
- ``sct_spinalcord_multicontrast`` (MIT): the subject's real T1w and T2w volumes (roughly aligned in
  world space, different fields of view) form one more training pair.
- ``voxelmorph_test_subject`` (Apache-2.0): its real T1 vs a non-monotonic T2-like remapping of it with
  a bias field: a held-out pair with real anatomy.

Usage:
    python scripts/make_disa_pairs.py --shared ../shared/data --out WORKDIR [--seed 0] [--split safe|v1]

Writes WORKDIR/*.nii.gz and WORKDIR/pairs.csv (columns fixed, moving, split).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from omnireg.core import Image
from omnireg.core.filters import gaussian_blur
from omnireg.io import load_image, save_image
from omnireg.optim.pyramid import pyramid_level
from omnireg.training.synthetic import bias_field, t2_like_remap

RIGHT_TO_LEFT = {41: 2, 42: 3, 43: 4, 44: 5, 46: 7, 47: 8, 49: 10, 50: 11, 51: 12, 52: 13, 53: 17, 54: 18, 58: 26, 60: 28, 164: 163}


def synthesize(labels: Image, rng: np.random.Generator, generator: torch.Generator) -> Image:
    lab = labels.data[0].numpy().astype(np.int64)
    classes = np.unique(lab)
    lut = np.zeros(int(classes.max()) + 1, dtype=np.float32)
    values = {}
    for c in classes:
        key = RIGHT_TO_LEFT.get(int(c), int(c))
        if key not in values:
            values[key] = 0.0 if key == 0 else float(rng.uniform(0.05, 1.0))
        lut[c] = values[key]
    img = lut[lab]
    img = img + rng.normal(0.0, rng.uniform(0.01, 0.05), size=img.shape).astype(np.float32) * (lab > 0)
    data = torch.from_numpy(img)[None, None]
    data = gaussian_blur(data, float(rng.uniform(0.5, 1.2)))
    level = pyramid_level(data, labels.grid, shrink=2.0, sigma_mm=0.0)
    out = level.data * bias_field(level.grid, strength=0.3, generator=generator).to(data.dtype)
    return Image(out[0].clamp_min(0), level.grid)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=("safe", "v1"), default="safe",
                    help="safe: maps 01-12 train, 13-15 val, 16-20 never read; v1: 01-16 train, 17-20 val (shipped models)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    rows = []
    last, last_train = (15, 12) if args.split == "safe" else (20, 16)
    for i in range(1, last + 1):
        src = args.shared / "synthseg_label_maps" / f"training_seg_{i:02d}.nii.gz"
        labels = load_image(src)
        names = []
        for contrast in ("a", "b"):
            path = args.out / f"synthseg{i:02d}_{contrast}.nii.gz"
            if not path.exists():
                save_image(synthesize(labels, rng, gen), path)
            names.append(path.name)
        rows.append({"fixed": names[0], "moving": names[1], "split": "train" if i <= last_train else "val"})
        print(f"synthseg {i:02d} done", flush=True)
    sct = args.shared / "sct_spinalcord_multicontrast"
    rows.append({"fixed": str((sct / "t1" / "t1w.nii.gz").resolve()), "moving": str((sct / "t2" / "t2.nii.gz").resolve()), "split": "train"})
    vxm = load_image(args.shared / "voxelmorph_test_subject" / "test_scan_vol.nii.gz")
    t1 = pyramid_level(vxm.batch().float(), vxm.grid, shrink=2.0)
    t1_img = Image(t1.data[0], t1.grid)
    x = t1.data / t1.data.max()
    t2 = t2_like_remap(x) * bias_field(t1.grid, strength=0.3, generator=gen)
    save_image(t1_img, args.out / "vxm_t1.nii.gz", force=True)
    save_image(Image(t2[0].float(), t1.grid), args.out / "vxm_t2like.nii.gz", force=True)
    rows.append({"fixed": "vxm_t1.nii.gz", "moving": "vxm_t2like.nii.gz", "split": "val"})
    with (args.out / "pairs.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["fixed", "moving", "split"])
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} pairs to {args.out / 'pairs.csv'}")


if __name__ == "__main__":
    main()
