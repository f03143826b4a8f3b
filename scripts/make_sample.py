#!/usr/bin/env python
"""Build the small sample data set shipped in ``src/omnireg/data/sample/``.

This is a one-off, reproducible build script, not library code: it uses nibabel and scipy directly.
Run it from the repository root::

    python scripts/make_sample.py                      # sources in ../shared/data
    python scripts/make_sample.py --source /path/to/shared/data --out src/omnireg/data/sample

Inputs (see ``ATTRIBUTION.md`` in the output folder for provenance and licences):

* ``voxelmorph_test_subject/test_scan_vol.nii.gz``: skull-stripped, intensity-normalised T1, 1 mm,
  160 x 192 x 224, identity affine (VoxelMorph test scan, Apache-2.0).
* ``voxelmorph_test_subject/test_scan_seg.nii.gz``: its FreeSurfer-aseg label map (uint8).
* ``itk_brain_2d_slices/BrainT1Slice.nii.gz`` and ``BrainProtonDensitySlice.nii.gz`` (ITK Examples/Data,
  Apache-2.0): an aligned T1 / PD pair of 2D slices, copied byte for byte.

What the script does (every step deterministic):

1. Crop: the bounding box of the labelled brain (aseg > 0) plus a margin of ``MARGIN_VOX`` output voxels
   (8 mm), clipped to the volume and aligned so that each axis holds whole 2 x 2 x 2 blocks.
2. T1 to 2 mm: Gaussian anti-aliasing (sigma ``AA_SIGMA_MM`` = 0.5 mm) followed by the mean of each
   2 x 2 x 2 block. The output voxel ``I`` is centred on source voxel ``c0 + 2 I + 0.5``, so the affine is
   the source affine composed with ``diag(2, 2, 2)`` and that shift, with the true FreeSurfer "LIA" axis
   directions (the source header's identity affine does not state them; see ``LIA``); the translation is then replaced so
   that world (0, 0, 0) lies at the centroid of the labelled brain (rounded to 0.1 mm).
3. Labels: the aseg ids are merged into seven tissue classes (``CLASSES`` below), then each 2 x 2 x 2 block
   takes its majority class (ties: a tissue class beats background, else the smallest id wins).
4. Synthetic T2-weighted contrast (``t2w_synthetic.nii.gz``), computed at 1 mm from the merged classes and
   the T1, then taken to 2 mm exactly as the T1:
   a. a T2-like value per class (``T2_VALUES``: CSF bright, grey matter intermediate, white matter dark);
      voxels inside the skull-stripped head but without a label (mostly sulcal CSF and meninges) get
      ``0.9 * clip(1 - T1 / 0.35, 0.2, 1)`` (dark in T1 -> bright);
   b. a partial-volume blur (Gaussian, sigma ``PV_SIGMA_MM`` = 1 mm);
   c. inverted fine T1 texture ``-TEXTURE_GAIN * (T1 - gauss(T1, 2 mm))`` inside the labelled brain;
   d. a soft head mask ``clip(T1 / 0.03, 0, 1)`` (zero where the T1 is zero);
   e. 2 mm downsampling as step 2, then Gaussian noise (sigma ``NOISE_SIGMA``, ``numpy`` generator seeded
      with ``NOISE_SEED``) where the downsampled T1 is above 0.01, clipped at 0.
   This image is synthetic: not an acquisition, only a second contrast of the same anatomy.
5. Float images are rounded to multiples of 2^-10 (finer than the 8-bit source, 1/255) so that gzip
   compresses them well, and saved as float32; labels as uint8 with NIfTI intent "label"; sform = qform = the 2 mm affine (code 1).

The script logs the SHA-256 of every input and output file.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

LOG = logging.getLogger("make_sample")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "src" / "omnireg" / "data" / "sample"

FACTOR = 2  # 1 mm -> 2 mm
MARGIN_VOX = 4  # output voxels (8 mm) around the labelled brain
AA_SIGMA_MM = 0.5
PV_SIGMA_MM = 1.0
TEXTURE_SIGMA_MM = 2.0
TEXTURE_GAIN = 0.5
NOISE_SIGMA = 0.01
NOISE_SEED = 20240501
QUANTUM = 2.0**-10

# merged tissue classes: id -> (name, FreeSurfer aseg ids)
CLASSES: dict[int, tuple[str, tuple[int, ...]]] = {
    1: ("CSF/ventricles", (4, 5, 14, 15, 24, 31, 43, 44, 63, 72)),
    2: ("cerebral cortex", (3, 42)),
    3: ("cerebral white matter", (2, 41, 77, 85, 251, 252, 253, 254, 255)),
    4: ("deep grey matter", (10, 11, 12, 13, 17, 18, 26, 28, 30, 49, 50, 51, 52, 53, 54, 58, 60, 62, 80)),
    5: ("cerebellum cortex", (8, 47)),
    6: ("cerebellum white matter", (7, 46)),
    7: ("brainstem", (16,)),
}
# T2-like value of each class (class 0 = background)
T2_VALUES = {0: 0.0, 1: 1.0, 2: 0.55, 3: 0.28, 4: 0.48, 5: 0.58, 6: 0.30, 7: 0.36}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def merge_labels(aseg: np.ndarray) -> np.ndarray:
    """FreeSurfer aseg ids -> merged class ids (uint8); every non-zero aseg id must be mapped."""
    lut = np.zeros(256, dtype=np.uint8)
    for cid, (_, ids) in CLASSES.items():
        lut[list(ids)] = cid
    unmapped = sorted(set(np.unique(aseg[aseg > 0]).tolist()) - {i for _, ids in CLASSES.values() for i in ids})
    if unmapped:
        raise ValueError(f"aseg ids without a class: {unmapped}")
    return lut[aseg]


def block_mean(x: np.ndarray) -> np.ndarray:
    """Mean of each FACTOR^3 block (shape divisible by FACTOR)."""
    s = x.shape
    return x.reshape(s[0] // FACTOR, FACTOR, s[1] // FACTOR, FACTOR, s[2] // FACTOR, FACTOR).mean(axis=(1, 3, 5))


def downsample_float(x: np.ndarray) -> np.ndarray:
    """Anti-aliased 2 mm image: Gaussian (sigma AA_SIGMA_MM, 1 mm voxels) then block mean."""
    return block_mean(ndimage.gaussian_filter(x, AA_SIGMA_MM, mode="nearest"))


def downsample_labels(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Majority vote per block; ties: tissue beats background, else the smallest id."""
    counts = np.stack([block_mean((labels == c).astype(np.float64)) for c in range(n_classes + 1)])
    counts[0] -= 1e-3  # background loses ties
    return np.argmax(counts, axis=0).astype(np.uint8)


def crop_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of ``mask`` plus the margin, with even length and clipped to the volume."""
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0) + 1
    box = []
    for a, n in enumerate(mask.shape):
        start = max(0, int(lo[a]) - MARGIN_VOX * FACTOR)
        stop = min(n, int(hi[a]) + MARGIN_VOX * FACTOR)
        length = (stop - start) // FACTOR * FACTOR
        if stop - start != length:  # extend (or shrink at the volume edge) to whole blocks
            if start + length + FACTOR <= n:
                length += FACTOR
        box.append(slice(start, start + length))
    return tuple(box)


def synthetic_t2(t1: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """T2-like contrast at 1 mm from merged classes and the T1 (see the module docstring, step 4)."""
    lut = np.array([T2_VALUES[c] for c in range(len(T2_VALUES))])
    base = lut[classes]
    unlabelled = (classes == 0) & (t1 > 0)
    base[unlabelled] = 0.9 * np.clip(1.0 - t1[unlabelled] / 0.35, 0.2, 1.0)
    t2 = ndimage.gaussian_filter(base, PV_SIGMA_MM, mode="nearest")
    texture = t1 - ndimage.gaussian_filter(t1, TEXTURE_SIGMA_MM, mode="nearest")
    t2 = t2 - TEXTURE_GAIN * texture * (classes > 0)
    t2 = t2 * np.clip(t1 / 0.03, 0.0, 1.0)
    return np.clip(t2, 0.0, None)


def quantize(x: np.ndarray) -> np.ndarray:
    return (np.round(x / QUANTUM) * QUANTUM).astype(np.float32)


LIA = np.array([[-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def save(data: np.ndarray, affine: np.ndarray, path: Path, *, label: bool = False) -> None:
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    if label:
        img.header.set_intent("label")
    nib.save(img, path)


def build(source: Path, out: Path) -> None:
    vox_dir = source / "voxelmorph_test_subject"
    slices_dir = source / "itk_brain_2d_slices"
    vol_path, seg_path = vox_dir / "test_scan_vol.nii.gz", vox_dir / "test_scan_seg.nii.gz"
    t1_2d, pd_2d = slices_dir / "BrainT1Slice.nii.gz", slices_dir / "BrainProtonDensitySlice.nii.gz"
    for p in (vol_path, seg_path, t1_2d, pd_2d):
        LOG.info("input  %s sha256=%s", p.relative_to(source), sha256(p))
    out.mkdir(parents=True, exist_ok=True)

    vol_img = nib.load(vol_path)
    t1 = np.asarray(vol_img.dataobj, dtype=np.float64)
    aseg = np.asarray(nib.load(seg_path).dataobj).astype(np.uint8)
    classes = merge_labels(aseg)

    box = crop_box(aseg > 0)
    start = np.array([s.start for s in box], dtype=np.float64)
    t1c, classes_c = t1[box], classes[box]
    LOG.info("crop %s -> shape %s", [(s.start, s.stop) for s in box], t1c.shape)

    t1_2mm = downsample_float(t1c)
    labels_2mm = downsample_labels(classes_c, len(CLASSES))
    t2_2mm = downsample_float(synthetic_t2(t1c, classes_c))
    rng = np.random.default_rng(NOISE_SEED)
    noise = rng.normal(0.0, NOISE_SIGMA, size=t2_2mm.shape)
    t2_2mm = np.clip(t2_2mm + noise * (t1_2mm > 0.01), 0.0, None)

    # affine: output voxel I sits at source voxel start + FACTOR * I + (FACTOR - 1) / 2
    scale = np.eye(4)
    scale[:3, :3] *= FACTOR
    scale[:3, 3] = start + (FACTOR - 1) / 2.0
    # The source header holds an identity affine, but the array is in FreeSurfer's conformed "LIA"
    # orientation (axis 0 -> patient left, axis 1 -> inferior, axis 2 -> anterior; checked on sagittal,
    # coronal and axial cuts: the cerebellum lies at high axis-1 and low axis-2 indices). The sample
    # states that orientation so that world RAS is anatomically right.
    affine = LIA @ vol_img.affine @ scale
    brain = np.argwhere(labels_2mm > 0).mean(0)
    centre = affine[:3, :3] @ brain + affine[:3, 3]
    affine[:3, 3] -= np.round(centre, 1)
    LOG.info("2 mm shape %s, affine\n%s", t1_2mm.shape, affine)

    save(quantize(t1_2mm), affine, out / "t1.nii.gz")
    save(quantize(t2_2mm), affine, out / "t2w_synthetic.nii.gz")
    save(labels_2mm, affine, out / "labels.nii.gz", label=True)
    tsv = "".join(f"{cid}\t{name}\n" for cid, (name, _) in CLASSES.items())
    (out / "labels.tsv").write_text("id\tname\n" + tsv)
    shutil.copyfile(t1_2d, out / "t1_2d.nii.gz")
    shutil.copyfile(pd_2d, out / "pd_2d.nii.gz")
    for name in ("t1.nii.gz", "t2w_synthetic.nii.gz", "labels.nii.gz", "labels.tsv", "t1_2d.nii.gz", "pd_2d.nii.gz"):
        p = out / name
        LOG.info("output %s %d bytes sha256=%s", name, p.stat().st_size, sha256(p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the shared/data folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build(args.source, args.out)


if __name__ == "__main__":
    main()
