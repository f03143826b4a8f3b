"""Train the shipped MAD weights (``src/omnireg/data/weights/mad_3d.pt`` and ``mad_2d.pt``) from ../shared/data.

Only Apache/MIT/BSD data are used for training (see each folder's PROVENANCE.md):

- 3D: ``antspy_sample_data/ch2.nii.gz`` and ``mni.nii.gz`` (Apache-2.0) and four single-contrast images
  synthesised from ``synthseg_label_maps/training_seg_0{1..4}.nii.gz`` (Apache-2.0; random intensity per label,
  Gaussian blur, 2 mm). Not ``voxelmorph_test_subject`` (it is the bundled sample's subject, held out).
- 2D: ``antspy_sample_data/r{16,27,30,62,64,85}slice.nii.gz`` and ``elastix_example_2d_t1_pd/{fixed_t1,
  moving_pd}.nii.gz`` (Apache-2.0), each used as a single-modality image. Not ``itk_brain_2d_slices``
  (the bundled 2D sample's source, held out).

Held-out validation: the bundled sample (``t1``, and the aligned pair ``t1``/``t2w_synthetic`` in 3D,
``t1_2d``/``pd_2d`` in 2D) and the SPM12 avg152 T1/T2/PD templates (GPL: read here for validation only,
never trained on or copied).

Usage (one thread: another training may run on the other core)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python scripts/train_mad.py --work /tmp/mad_work [--dims 3 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WEIGHTS = ROOT / "src" / "omnireg" / "data" / "weights"

STEPS = {3: 4500, 2: 8000}
BATCH = {3: 64, 2: 96}
REUSE = {3: 4, 2: 1}


def synthesise(label_path: Path, out: Path, seed: int) -> None:
    """A single-contrast image from a label map: random intensity per label, 2 mm, blur, mild noise."""
    import nibabel as nib
    from scipy import ndimage as ndi

    img = nib.load(str(label_path))
    lab = np.asarray(img.dataobj)[::2, ::2, ::2].astype(np.int32)
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.1, 1.0, size=int(lab.max()) + 1)
    values[0] = 0.0
    vol = values[lab]
    vol = ndi.gaussian_filter(vol, 0.6) + rng.normal(0, 0.01, vol.shape) * (lab > 0)
    affine = img.affine.copy()
    affine[:3, :3] *= 2
    nib.save(nib.Nifti1Image(vol.astype(np.float32), affine), str(out))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/mad_work", help="folder for synthesised images, lists and logs")
    p.add_argument("--dims", type=int, nargs="+", default=[3, 2])
    p.add_argument("--steps-3d", type=int, default=STEPS[3])
    p.add_argument("--steps-2d", type=int, default=STEPS[2])
    p.add_argument("--out-dir", default=str(WEIGHTS))
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from omnireg.cli.train_mad import main as train_main
    from omnireg.data import sample_path

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if not SHARED.is_dir():
        print(f"no {SHARED}", file=sys.stderr)
        return 2
    synth = []
    for i in range(1, 5):
        out = work / f"synthseg_{i:02d}_synth.nii.gz"
        if not out.exists():
            synthesise(SHARED / "synthseg_label_maps" / f"training_seg_{i:02d}.nii.gz", out, seed=100 + i)
        synth.append(out)
    lists = {
        3: [SHARED / "antspy_sample_data/ch2.nii.gz", SHARED / "antspy_sample_data/mni.nii.gz", *synth],
        2: [SHARED / f"antspy_sample_data/r{k}slice.nii.gz" for k in (16, 27, 30, 62, 64, 85)]
        + [SHARED / "elastix_example_2d_t1_pd/fixed_t1.nii.gz", SHARED / "elastix_example_2d_t1_pd/moving_pd.nii.gz"],
    }
    val_images = {3: [sample_path("t1")], 2: [sample_path("t1_2d")]}
    spm = SHARED / "spm12_templates_2mm"
    val_pairs = {
        3: [(sample_path("t1"), sample_path("t2w")), (spm / "canonical_avg152T1.nii.gz", spm / "canonical_avg152T2.nii.gz"),
            (spm / "canonical_avg152T1.nii.gz", spm / "canonical_avg152PD.nii.gz")],
        2: [(sample_path("t1_2d"), sample_path("pd_2d"))],
    }
    status = 0
    for d in a.dims:
        (work / f"images_{d}d.txt").write_text("\n".join(str(x) for x in lists[d]) + "\n")
        (work / f"val_images_{d}d.txt").write_text("\n".join(str(x) for x in val_images[d]) + "\n")
        (work / f"val_pairs_{d}d.csv").write_text("fixed,moving\n" + "".join(f"{x},{y}\n" for x, y in val_pairs[d]))
        steps = a.steps_3d if d == 3 else a.steps_2d
        argv = [
            "--images", str(work / f"images_{d}d.txt"), "--out", str(Path(a.out_dir) / f"mad_{d}d.pt"),
            "--validation-images", str(work / f"val_images_{d}d.txt"),
            "--validation-pairs", str(work / f"val_pairs_{d}d.csv"),
            "--ndim", str(d), "--steps", str(steps), "--batch-size", str(BATCH[d]), "--appearance-reuse", str(REUSE[d]), "--seed", "0",
            "--threads", "1", "--force", "--no-progress",
        ]
        print("omnireg train mad " + " ".join(argv), file=sys.stderr, flush=True)
        t0 = time.time()
        status |= train_main(argv)
        print(f"{d}D: {time.time() - t0:.0f} s wall", file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
