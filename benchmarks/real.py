"""Real-data robustness (issue 15): what a new user gets from the presets on real images.

Cases (``../shared/data``; the script exits with a message when the folder is absent):

* **spinal cord**, SCT ``errsm_30``: T1w (moving) onto T2w (fixed), two separately acquired fields of view
  that the scanner already aligns: cord Dice of the manual segmentations per preset (identity row included).
  Goals: the default's and every multimodal preset's Dice >= identity's, the default's >= 0.90.
* **ch2 -> MNI** (ANTsPy's Colin27 ``ch2`` onto the FSL MNI152 ``mni``, at 2 mm and at 1 mm): AFIDs landmark
  error (32 points, Colin27 set for ch2, MNI152NLin6Asym set for mni; mean / median / max, and the largest
  increase of one landmark's error over the identity's), % of non-positive Jacobian determinants inside the
  fixed image's foreground (Otsu, holes filled), the largest displacement inside and outside the foreground,
  time and the size of ``transform.h5``. Goals: no non-positive determinant in the foreground, displacement
  outside no larger than inside, AFIDs mean below the affine preset's and no landmark worse than identity by
  more than 1 mm, 1 mm under 90 s on 2 cores. With ANTsPy installed (the ``bench`` extra), the same
  landmarks and field statistics for **ANTs SyN** as a new ANTsPy user runs it (``type_of_transform="SyN"``,
  its defaults: Mattes MI, ``reg_iterations=(40, 20, 0)``; SyN with CC, radius 4, ``reg_iterations=(100, 70, 40)``
  did not finish within 17 minutes at 2 mm on 2 cores); ``--no-ants`` skips them.
* **2D elastix T1 / PD** (the elastix manual's pair): ``multimodal-deformable``: non-positive determinants
  inside the fixed mask, time.

Every registration runs through :func:`omnireg.pipeline.run_registration` (what ``omnireg register`` runs)
into a temporary folder, so sizes are those of the real outputs.

Usage: ``python benchmarks/real.py [--quick|--full] [--threads 2] [--json PATH] [--cases spinal,brain2,brain1,2d]
[--no-ants]``
(``--quick``: ch2 -> MNI at 2 mm only).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import default_json, fmt, machine_info, set_threads, table, write_json

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SC = DATA / "sct_spinalcord_multicontrast"
ANTS = DATA / "antspy_sample_data"
AFIDS = DATA / "afids_template_landmarks"
ELASTIX = DATA / "elastix_example_2d_t1_pd"

SPINAL_PRESETS = ("default", "rigid", "affine", "multimodal-affine", "deformable", "multimodal-deformable")
BRAIN_PRESETS = ("affine", "deformable", "multimodal-deformable")


def _run(fixed, moving, preset: str | None, out: Path, **kw) -> tuple[dict, float]:
    from omnireg.pipeline import run_registration
    from omnireg.optim import preset as get_preset

    cfg = get_preset(preset or "affine")
    t = time.perf_counter()
    summary = run_registration(fixed, moving, out, cfg, report=False, force=True, **kw)
    return summary, time.perf_counter() - t


def spinal(tmp: Path) -> list[dict]:
    rows = []
    for preset in SPINAL_PRESETS:
        summary, wall = _run(SC / "t2" / "t2.nii.gz", SC / "t1" / "t1w.nii.gz", None if preset == "default" else preset,
                             tmp / f"sc-{preset}", fixed_labels=SC / "t2" / "t2_seg-manual.nii.gz",
                             moving_labels=SC / "t1" / "t1w_seg-manual.nii.gz")
        lab = summary["evaluation"]["labels"]
        if not rows:
            rows.append({"case": "spinal", "preset": "identity", "dice": lab["dice_mean_before"]})
        rows.append({"case": "spinal", "preset": preset, "dice": lab["dice_mean"], "time_s": wall,
                     "discarded_stages": [s["stage"] for s in summary["stages"] if not s["kept"]],
                     "init": summary["initialization"].get("starts")})
        print(f"spinal {preset}: Dice {lab['dice_mean_before']:.3f} -> {lab['dice_mean']:.3f} ({wall:.0f} s)", flush=True)
    return rows


def _landmarks(path: Path):
    import numpy as np

    return np.genfromtxt(path, delimiter=",", skip_header=1, usecols=(1, 2, 3))


def _brain_images(spacing: float, tmp: Path) -> tuple[Path, Path]:
    if spacing == 1.0:
        return ANTS / "mni.nii.gz", ANTS / "ch2.nii.gz"
    from omnireg.io import load_image, save_image
    from omnireg.transforms import resample

    out = []
    for name in ("mni", "ch2"):
        img = load_image(ANTS / f"{name}.nii.gz")
        img = resample(img, None, onto=img.grid.with_spacing([spacing] * 3), interp="linear")
        path = tmp / f"{name}_{spacing:g}mm.nii.gz"
        save_image(img, path, force=True)
        out.append(path)
    return out[0], out[1]


def _foreground(fixed_path: Path):
    """The fixed image's foreground (Otsu, holes filled) as a boolean array on its grid."""
    from omnireg.io import load_image
    from omnireg.optim.initialize import foreground_region

    fixed = load_image(fixed_path)
    return foreground_region(fixed.batch().float(), fixed.grid, dilate_mm=0.0)[0, 0].numpy() > 0


def _disp_stats(mag, jd, fg) -> dict:
    """% non-positive Jacobian determinants inside ``fg`` and the largest displacement inside and outside it."""
    return {"neg_jac_fg_pct": 100.0 * float((jd[fg] <= 0).mean()), "max_disp_in_mm": float(mag[fg].max()),
            "max_disp_out_mm": float(mag[~fg].max()) if (~fg).any() else 0.0}


def _field_stats(out: Path, fixed_path: Path, fg) -> dict:
    import numpy as np
    import torch

    from omnireg.evaluation import jacobian_determinant
    from omnireg.io import load_image
    from omnireg.transforms.files import load_transform

    fixed = load_image(fixed_path)
    t = load_transform(out / "transform.h5")
    pts = torch.as_tensor(fixed.grid.points("world").reshape(1, -1, 3), dtype=torch.float32)
    with torch.no_grad():
        lin = load_transform(out / "linear.mat")
        # the deformable part alone: T = L o D, so D(x) = L^-1(T(x))
        d_pts = lin.inverse()(t(pts)) if (out / "deformation.nii.gz").exists() else pts
    u = (d_pts - pts)[0].numpy().reshape(*fixed.grid.shape, 3)
    jd = jacobian_determinant(np.moveaxis(u, -1, 0).astype(np.float64), fixed.grid)
    return {**_disp_stats(np.linalg.norm(u, axis=-1), jd, fg),
            "transform_h5_mb": (out / "transform.h5").stat().st_size / 2**20}


def _landmark_row(spacing: float, name: str, e, e0, wall: float) -> dict:
    """A ch2 -> MNI row: AFIDs errors ``e`` (the identity's ``e0``) and the time."""
    import numpy as np

    return {"case": f"ch2->mni {spacing:g}mm", "preset": name, "afids_mean": e.mean(), "afids_median": float(np.median(e)),
            "afids_max": e.max(), "worst_vs_identity_mm": float((e - e0).max()),
            "worst_landmark": int(np.argmax(e - e0)) + 1, "time_s": wall}


def _print_brain_row(spacing: float, row: dict) -> None:
    size = f"  {row['transform_h5_mb']:.1f} MB" if "transform_h5_mb" in row else ""
    print(f"ch2->mni {spacing:g} mm {row['preset']}: AFIDs {row['afids_mean']:.2f}/{row['afids_median']:.2f}/"
          f"{row['afids_max']:.2f} worst {row['worst_vs_identity_mm']:+.2f} (landmark {row['worst_landmark']})  neg "
          f"{row['neg_jac_fg_pct']:.3f}%  |u| in {row['max_disp_in_mm']:.1f} out {row['max_disp_out_mm']:.1f}  "
          f"{row['time_s']:.0f} s{size}", flush=True)


#: ANTs SyN settings of the reference rows: (row name, ``ants.registration`` keywords, spacings it runs at)
ANTS_SYN = (("ants-syn (antspy defaults)", dict(type_of_transform="SyN"), (2.0, 1.0)),)


def _ants_rows(spacing: float, fixed: Path, moving: Path, p_fixed, q_moving, e0, fg) -> list[dict]:
    """ANTs SyN on the same images and landmarks (points mapped fixed -> moving by its forward transforms, LPS)."""
    try:
        import ants
    except ImportError:
        print("ants-syn rows skipped: antspyx is not installed (pip install 'omnireg[bench]')", flush=True)
        return []
    import numpy as np
    import pandas as pd
    import SimpleITK as sitk

    rows = []
    for name, kw, spacings in ANTS_SYN:
        if spacing not in spacings:
            continue
        f, m = ants.image_read(str(fixed)), ants.image_read(str(moving))
        t = time.perf_counter()
        reg = ants.registration(f, m, random_seed=1, **kw)
        wall = time.perf_counter() - t
        lps = pd.DataFrame({"x": -p_fixed[:, 0], "y": -p_fixed[:, 1], "z": p_fixed[:, 2]})
        out = ants.apply_transforms_to_points(3, lps, reg["fwdtransforms"]).values
        e = np.linalg.norm(np.c_[-out[:, 0], -out[:, 1], out[:, 2]] - q_moving, axis=1)
        # the deformable part alone: SyN's forward warp (a displacement field on the fixed grid)
        warp = sitk.ReadImage(reg["fwdtransforms"][0], sitk.sitkVectorFloat64)
        jd = np.transpose(sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(warp)), (2, 1, 0))
        mag = np.linalg.norm(np.transpose(sitk.GetArrayFromImage(warp), (2, 1, 0, 3)), axis=-1)
        row = {**_landmark_row(spacing, name, e, e0, wall), **_disp_stats(mag, jd, fg),
               "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}}
        rows.append(row)
        _print_brain_row(spacing, row)
    return rows


def brain(spacing: float, tmp: Path, with_ants: bool = True) -> list[dict]:
    import numpy as np
    import torch

    from omnireg.transforms.files import load_transform

    p_fixed, q_moving = _landmarks(AFIDS / "tpl-MNI152NLin6Asym_afids_ras.csv"), _landmarks(AFIDS / "tpl-Colin27_afids_ras.csv")
    e0 = np.linalg.norm(p_fixed - q_moving, axis=1)
    rows = [{"case": f"ch2->mni {spacing:g}mm", "preset": "identity", "afids_mean": e0.mean(),
             "afids_median": float(np.median(e0)), "afids_max": e0.max()}]
    fixed, moving = _brain_images(spacing, tmp)
    fg = _foreground(fixed)
    for preset in BRAIN_PRESETS:
        out = tmp / f"brain{spacing:g}-{preset}"
        summary, wall = _run(fixed, moving, preset, out)
        t = load_transform(out / "transform.h5")
        with torch.no_grad():
            mapped = t(torch.as_tensor(p_fixed, dtype=torch.float32)[None])[0].double().numpy()
        e = np.linalg.norm(mapped - q_moving, axis=1)
        row = {**_landmark_row(spacing, preset, e, e0, wall), **_field_stats(out, fixed, fg),
               "discarded_stages": [s["stage"] for s in summary["stages"] if not s["kept"]]}
        rows.append(row)
        _print_brain_row(spacing, row)
    if with_ants:
        rows += _ants_rows(spacing, fixed, moving, p_fixed, q_moving, e0, fg)
    return rows


def elastix2d(tmp: Path) -> list[dict]:
    import numpy as np

    from omnireg.evaluation import jacobian_determinant
    from omnireg.io import load_image
    from omnireg.transforms.files import load_transform
    import torch

    out = tmp / "elastix2d"
    summary, wall = _run(ELASTIX / "fixed_t1.nii.gz", ELASTIX / "moving_pd.nii.gz", "multimodal-deformable", out)
    fixed = load_image(ELASTIX / "fixed_t1.nii.gz")
    mask = load_image(ELASTIX / "fixed_mask.nii.gz").numpy()[0] > 0
    t = load_transform(out / "transform.h5")
    pts = torch.as_tensor(fixed.grid.points("world").reshape(1, -1, 2), dtype=torch.float32)
    with torch.no_grad():
        u = (t(pts) - pts)[0].numpy().reshape(*fixed.grid.shape, 2)
    jd = jacobian_determinant(np.moveaxis(u, -1, 0).astype(np.float64), fixed.grid)
    row = {"case": "elastix 2D T1/PD", "preset": "multimodal-deformable", "neg_jac_mask": int((jd[mask] <= 0).sum()),
           "neg_jac_all": int((jd <= 0).sum()), "time_s": wall}
    print(f"elastix 2D: non-positive Jacobians {row['neg_jac_mask']} in the mask, {row['neg_jac_all']} in all; {wall:.1f} s", flush=True)
    return [row]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="ch2 -> MNI at 2 mm only (default)")
    mode.add_argument("--full", action="store_true", help="every case")
    ap.add_argument("--cases", default=None, help="comma-separated subset of spinal, brain2, brain1, 2d")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-ants", action="store_true", help="skip the ANTs SyN reference rows of ch2 -> MNI")
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"real.py: the shared data folder {DATA} is absent; nothing to run", file=sys.stderr)
        return 2
    set_threads(args.threads)
    cases = (args.cases.split(",") if args.cases else
             (["spinal", "brain2", "brain1", "2d"] if args.full else ["spinal", "brain2", "2d"]))
    rows: list[dict] = []
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="omnireg-real-") as tmp:
        tmp = Path(tmp)
        for case in cases:
            if case == "spinal":
                rows += spinal(tmp)
            elif case in ("brain2", "brain1"):
                rows += brain(2.0 if case == "brain2" else 1.0, tmp, with_ants=not args.no_ants)
            elif case == "2d":
                rows += elastix2d(tmp)
            else:
                ap.error(f"--cases: unknown case {case!r}")
    cols = ["case", "preset", "dice", "afids_mean", "afids_median", "afids_max", "worst_vs_identity_mm", "worst_landmark",
            "neg_jac_fg_pct",
            "max_disp_in_mm", "max_disp_out_mm", "neg_jac_mask", "time_s", "transform_h5_mb"]
    print(table(cols, [[fmt(r.get(c)) if r.get(c) is not None else "-" for c in cols] for r in rows]))
    path = write_json({"rows": rows, "cases": cases, "total_s": time.time() - t0,
                       "machine": machine_info(args.threads)}, args.json or default_json("real"))
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
