"""Benchmark: omnireg against ANTsPy, itk-elastix, SimpleITK and dipy on known-truth cases.

Case families (fixed = the bundled 2 mm T1; moving built by ``make_known_case`` on a padded grid, see
``_cases.py``; transforms about the brain centre, drawn with a seeded generator):

* ``sanity``: one pure translation (6, -4, 2) mm, T1 -> T1: the sign-convention check. Every method must
  recover it with a sub-millimetre error; a convention error shows as about 2 x 7.5 mm.
* ``affine-mono`` / ``affine-multi``: rotations within +-10 deg, translations within +-10 mm and scales
  within +-8 % per axis; moving T1 (mono) or the synthetic T2w with a 20 % bias field and 2 % noise (multi).
* ``deformable-mono`` / ``deformable-multi``: a smooth random displacement of at most 6 mm (sigma 20 mm)
  on top of a small affine (+-5 deg, +-5 mm, +-4 %).

Methods (each run in its own subprocess, one after the other, all with ``--threads`` threads; a peer
whose package is missing is recorded as "not installed"):

* ``omnireg``: presets ``affine`` / ``multimodal-affine`` / ``deformable`` / ``multimodal-deformable``.
* ``ants`` (ANTsPy): ``type_of_transform="Affine"`` (aff_metric GC mono, mattes multi); deformable
  ``"SyN"`` (syn_metric CC radius 4 mono, mattes multi; reg_iterations 100-70-40).
* ``elastix`` (itk-elastix): the default ``rigid`` + ``affine`` (+ ``bspline``, 10 mm final grid, without
  the bending-energy term, which crashes itk-elastix 0.25.4 here) parameter maps, the rigid one with
  centre-of-gravity initialisation; AdvancedNormalizedCorrelation for mono, AdvancedMattesMutualInformation
  (the default) for multi.
* ``sitk`` (SimpleITK ImageRegistrationMethod): centred initializer (moments mono, geometry multi),
  VersorRigid3D then Affine, Correlation (mono) / Mattes MI 50 bins (multi) on 25 % random samples,
  RegularStepGradientDescent with physical-shift scales, pyramid 4-2-1 (sigma 2-1-0 voxels); deformable: a
  cubic B-spline on top (about 10 mm final control spacing, mesh refined x2 per level, gradient descent
  with line search, as SimpleITK's ImageRegistrationMethodBSpline3 example).
* ``dipy``: centre of mass, then translation, rigid and affine ``AffineRegistration`` with
  ``MutualInformationMetric`` (32 bins; pyramid 4-2-1, sigmas 3-1-0); deformable
  ``SymmetricDiffeomorphicRegistration`` with ``CCMetric`` (mono) / ``EMMetric`` (multi; dipy has no MI for
  SyN), level iterations 50-25-10.

How each result becomes a fixed -> moving point map (the convention-free way): the moving image's
world coordinates (LPS, as ITK reads the NIfTI) are written as three coordinate images on the moving
grid, plus an image of ones; each method resamples them onto the fixed grid with **its own** resampler
and its final transform (``antsApplyTransforms`` with the ``fwdtransforms``, transformix, ``sitk.Resample``,
dipy's ``transform``), with linear interpolation, which reproduces a linear function exactly. The value at
fixed voxel ``x`` is then ``T(x)``, exactly the point map the method uses to warp images; the ones image
marks where ``T(x)`` falls outside the moving image. As a check, each method also warps the moving image
with its own resampler (linear), and that is compared with omnireg's resampling through the extracted map
(``consistency``: max abs difference over the brain, relative to the intensity range; ~1e-5 when the map
is right).

Reported per method and family: mean and 95th percentile of the target error ``|T(x) - T_true(x)|`` over
the brain voxels (labels > 0) (averaged over cases), mean Dice of the 7 tissue labels (moving labels warped
with the method's map, nearest neighbour), folding (% of voxels with ``det J <= 0`` of the map, over the
fixed voxels whose neighbours map inside the moving image), wall time of the registration call(s) and the
peak resident memory of the subprocess. Rows ``initial`` (identity map) and ``truth`` (the true map) give
the range.

Usage::

    python benchmarks/peers.py --quick           # sanity + 1 case each of affine-mono, affine-multi, deformable-mono
    python benchmarks/peers.py --full            # sanity + 5 affine cases per modality + 2 deformable per modality
    python benchmarks/peers.py --sanity          # only the translation check
    python benchmarks/peers.py --methods omnireg ants --families affine-mono

Writes ``bench-results/peers.json`` (``--json PATH``) after every case.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

METHODS = ("omnireg", "ants", "elastix", "sitk", "dipy")
FAMILIES = ("sanity", "affine-mono", "affine-multi", "deformable-mono", "deformable-multi")
OMNIREG_PRESET = {
    "sanity": "affine",
    "affine-mono": "affine",
    "affine-multi": "multimodal-affine",
    "deformable-mono": "deformable",
    "deformable-multi": "multimodal-deformable",
}
SANITY_TRANSLATION_MM = (6.0, -4.0, 2.0)  # whole voxels: the truth row has Dice 1
LPS = (-1.0, -1.0, 1.0)


def _modality(family: str) -> str:
    return "multi" if family.endswith("multi") else "mono"


def _deformable(family: str) -> bool:
    return family.startswith("deformable")


def peer_available(method: str) -> tuple[bool, str]:
    """Whether a method's package is importable (without importing it), and the package version."""
    import importlib.util

    module, dist = {"omnireg": ("omnireg", "omnireg"), "ants": ("ants", "antspyx"), "elastix": ("itk", "itk-elastix"),
                    "sitk": ("SimpleITK", "SimpleITK"), "dipy": ("dipy", "dipy")}[method]
    version = C.package_versions([dist])[dist]
    if importlib.util.find_spec(module) is None or version is None:
        return False, "not installed"
    return True, version


# ---------------------------------------------------------------------------------------------- cases
def make_cases(families, n_affine: int, n_deformable: int, seed: int) -> list[dict]:
    """Case descriptions: family, name, true matrix (RAS, fixed -> moving) and displacement settings."""
    import numpy as np

    from _cases import brain_centre
    from omnireg.training.synthetic import affine_matrix

    out = []
    for fam in families:
        if fam == "sanity":
            m = affine_matrix(ndim=3, translation_mm=SANITY_TRANSLATION_MM)
            out.append({"family": fam, "name": "sanity-0", "matrix": m, "displacement_seed": None})
            continue
        n = n_deformable if _deformable(fam) else n_affine
        rot, trans, scale = (5.0, 5.0, 0.04) if _deformable(fam) else (10.0, 10.0, 0.08)
        for k in range(n):
            rng = np.random.default_rng([seed, FAMILIES.index(fam), k])
            m = affine_matrix(
                ndim=3,
                rotation_deg=rng.uniform(-rot, rot, 3),
                translation_mm=rng.uniform(-trans, trans, 3),
                scale=1.0 + rng.uniform(-scale, scale, 3),
                center=brain_centre(),
            )
            out.append({"family": fam, "name": f"{fam}-{k}", "matrix": m,
                        "displacement_seed": int(rng.integers(1 << 30)) if _deformable(fam) else None})
    return out


def build(case: dict):
    """The KnownCase of a case description."""
    import torch

    from _cases import build_case, sample_images
    from omnireg.training.synthetic import smooth_displacement

    disp = None
    if case["displacement_seed"] is not None:
        t1 = sample_images()[0]
        gen = torch.Generator().manual_seed(case["displacement_seed"])
        disp = smooth_displacement(t1.grid, max_mm=6.0, smoothness_mm=20.0, generator=gen)
    return build_case(_modality(case["family"]), case["matrix"], displacement=disp, seed=1)


def write_case_files(kc, folder: Path) -> None:
    """fixed/moving NIfTI files, the LPS world coordinates of the moving voxels and an image of ones."""
    import numpy as np
    import torch

    from omnireg.core import Image
    from omnireg.io import save_image

    folder.mkdir(parents=True, exist_ok=True)
    save_image(kc.fixed, folder / "fixed.nii.gz", force=True)
    save_image(kc.moving, folder / "moving.nii.gz", force=True)
    grid = kc.moving.grid
    world = grid.points("world", dtype=torch.float64).numpy()  # (*S, 3) RAS
    for c in range(3):
        data = torch.from_numpy(np.ascontiguousarray(world[..., c] * LPS[c], dtype=np.float32))[None]
        save_image(Image(data, grid), folder / f"coord{c}.nii.gz", force=True)
    save_image(Image(torch.ones(1, *grid.shape), grid), folder / "ones.nii.gz", force=True)


# ---------------------------------------------------------------------------------------------- methods
# Each runner registers fixed.nii.gz and moving.nii.gz of a case folder and returns
# (seconds, settings, apply) where apply(path) resamples the moving-grid image at ``path`` onto the fixed
# grid with the method's own resampler and final transform (linear), as an (i, j, k) float array.


def run_omnireg(folder: Path, family: str, threads: int):
    import torch

    from omnireg.io import load_image
    from omnireg.optim import register
    from omnireg.transforms import resample

    fixed, moving = load_image(folder / "fixed.nii.gz"), load_image(folder / "moving.nii.gz")
    name = OMNIREG_PRESET[family]
    t0 = time.perf_counter()
    res = register(fixed, moving, config=name)
    seconds = time.perf_counter() - t0
    transform = res.transform

    def apply(path):
        img = load_image(path)
        with torch.no_grad():
            return resample(img, transform, onto=fixed.grid, interp="linear").numpy()[0]

    return seconds, {"preset": name}, apply


def run_ants(folder: Path, family: str, threads: int):
    import ants

    fixed = ants.image_read(str(folder / "fixed.nii.gz"))
    moving = ants.image_read(str(folder / "moving.nii.gz"))
    multi = _modality(family) == "multi"
    kw = dict(aff_metric="mattes" if multi else "GC")
    if _deformable(family):
        kw.update(type_of_transform="SyN", syn_metric="mattes" if multi else "CC", syn_sampling=32 if multi else 4,
                  reg_iterations=(100, 70, 40))
    else:
        kw.update(type_of_transform="Affine")
    t0 = time.perf_counter()
    tx = ants.registration(fixed, moving, **kw)
    seconds = time.perf_counter() - t0
    fwd = tx["fwdtransforms"]

    def apply(path):
        img = ants.image_read(str(path))
        return ants.apply_transforms(fixed, img, transformlist=fwd, interpolator="linear", defaultvalue=0).numpy()

    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}
    settings["fwdtransforms"] = [Path(f).name for f in fwd]
    return seconds, settings, apply


def run_elastix(folder: Path, family: str, threads: int):
    import itk
    import numpy as np

    fixed = itk.imread(str(folder / "fixed.nii.gz"), itk.F)
    moving = itk.imread(str(folder / "moving.nii.gz"), itk.F)
    metric = "AdvancedMattesMutualInformation" if _modality(family) == "multi" else "AdvancedNormalizedCorrelation"
    po = itk.ParameterObject.New()
    maps = []
    rigid = po.GetDefaultParameterMap("rigid")
    rigid["Metric"] = [metric]
    rigid["AutomaticTransformInitialization"] = ["true"]
    rigid["AutomaticTransformInitializationMethod"] = ["CenterOfGravity"]
    maps.append(rigid)
    affine = po.GetDefaultParameterMap("affine")
    affine["Metric"] = [metric]
    maps.append(affine)
    if _deformable(family):
        # without the default map's TransformBendingEnergyPenalty: with it, itk-elastix 0.25.4 crashes
        # (SIGSEGV) while estimating the step size on these images (elastix issue #1377 discusses dropping it)
        bspline = po.GetDefaultParameterMap("bspline")
        bspline["Metric"] = [metric]
        bspline["Registration"] = ["MultiResolutionRegistration"]
        for key in ("Metric0Weight", "Metric1Weight"):
            bspline.pop(key, None)
        maps.append(bspline)
    for m in maps:
        po.AddParameterMap(m)
    t0 = time.perf_counter()
    _, params = itk.elastix_registration_method(fixed, moving, parameter_object=po, log_to_console=False,
                                                number_of_threads=threads)
    seconds = time.perf_counter() - t0
    for i in range(params.GetNumberOfParameterMaps()):
        params.SetParameter(i, "ResampleInterpolator", "FinalLinearInterpolator")
        params.SetParameter(i, "DefaultPixelValue", "0")
        params.SetParameter(i, "ResultImagePixelType", "float")

    def apply(path):
        img = itk.imread(str(path), itk.F)
        out = itk.transformix_filter(img, params, log_to_console=False)
        return np.asarray(itk.array_from_image(out)).transpose(2, 1, 0)

    settings = {"maps": [m["Transform"][0] for m in maps], "metric": metric}
    return seconds, settings, apply


def run_sitk(folder: Path, family: str, threads: int):
    import SimpleITK as sitk

    fixed = sitk.ReadImage(str(folder / "fixed.nii.gz"), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(folder / "moving.nii.gz"), sitk.sitkFloat32)
    multi = _modality(family) == "multi"

    def method(optimizer: str) -> sitk.ImageRegistrationMethod:
        r = sitk.ImageRegistrationMethod()
        if multi:
            r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
        else:
            r.SetMetricAsCorrelation()
        r.SetMetricSamplingStrategy(r.RANDOM)
        r.SetMetricSamplingPercentage(0.25, 1)
        r.SetInterpolator(sitk.sitkLinear)
        if optimizer == "rsgd":
            r.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-4, numberOfIterations=300,
                                                       relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
            r.SetOptimizerScalesFromPhysicalShift()
        else:  # B-spline with a control mesh refined per level (SimpleITK's ImageRegistrationMethodBSpline3 recipe;
            # L-BFGS-B cannot follow the growing number of parameters)
            r.SetOptimizerAsGradientDescentLineSearch(learningRate=5.0, numberOfIterations=100,
                                                      convergenceMinimumValue=1e-4, convergenceWindowSize=5)
        r.SetShrinkFactorsPerLevel([4, 2, 1])
        r.SetSmoothingSigmasPerLevel([2, 1, 0])
        r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        return r

    kinds = sitk.CenteredTransformInitializerFilter
    init_kind = kinds.GEOMETRY if multi else kinds.MOMENTS
    t0 = time.perf_counter()
    init = sitk.CenteredTransformInitializer(fixed, moving, sitk.VersorRigid3DTransform(), init_kind)
    r = method("rsgd")
    r.SetInitialTransform(init, inPlace=True)
    r.Execute(fixed, moving)
    rigid = sitk.VersorRigid3DTransform(init)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    r = method("rsgd")
    r.SetInitialTransform(affine, inPlace=True)
    r.Execute(fixed, moving)
    final: sitk.Transform = affine
    settings = {"init": "moments" if not multi else "geometry", "metric": "mattes50" if multi else "correlation",
                "stages": ["VersorRigid3D", "Affine"]}
    if _deformable(family):
        extent = [sz * sp for sz, sp in zip(fixed.GetSize(), fixed.GetSpacing())]
        mesh = [max(1, int(round(e / 40.0))) for e in extent]  # x4 after two refinements: ~10 mm spacing
        bspline = sitk.BSplineTransformInitializer(fixed, mesh, 3)
        r = method("linesearch")
        r.SetMovingInitialTransform(affine)
        r.SetInitialTransformAsBSpline(bspline, inPlace=True, scaleFactors=[1, 2, 4])
        r.Execute(fixed, moving)
        final = sitk.CompositeTransform([affine, bspline])  # the last is applied first to points: affine(bspline(x))
        settings["stages"].append(f"BSpline mesh {mesh} x4")
    seconds = time.perf_counter() - t0

    def apply(path):
        img = sitk.ReadImage(str(path), sitk.sitkFloat32)
        out = sitk.Resample(img, fixed, final, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return sitk.GetArrayFromImage(out).transpose(2, 1, 0)

    return seconds, settings, apply


def run_dipy(folder: Path, family: str, threads: int):
    import nibabel as nib
    import numpy as np
    from dipy.align.imaffine import AffineRegistration, MutualInformationMetric, transform_centers_of_mass
    from dipy.align.transforms import AffineTransform3D, RigidTransform3D, TranslationTransform3D

    fimg, mimg = nib.load(folder / "fixed.nii.gz"), nib.load(folder / "moving.nii.gz")
    static, static_aff = np.asarray(fimg.dataobj, dtype=np.float64), fimg.affine
    moving, moving_aff = np.asarray(mimg.dataobj, dtype=np.float64), mimg.affine
    multi = _modality(family) == "multi"
    t0 = time.perf_counter()
    com = transform_centers_of_mass(static, static_aff, moving, moving_aff)
    affreg = AffineRegistration(metric=MutualInformationMetric(nbins=32, sampling_proportion=None),
                                level_iters=[10000, 1000, 100], sigmas=[3.0, 1.0, 0.0], factors=[4, 2, 1], verbosity=0)
    grids = dict(static_grid2world=static_aff, moving_grid2world=moving_aff)
    current = com.affine
    for transform in (TranslationTransform3D(), RigidTransform3D(), AffineTransform3D()):
        result = affreg.optimize(static, moving, transform, None, starting_affine=current, **grids)
        current = result.affine
    mapping = result
    settings = {"affine": "com -> translation -> rigid -> affine, MI 32 bins"}
    if _deformable(family):
        from dipy.align.imwarp import SymmetricDiffeomorphicRegistration
        from dipy.align.metrics import CCMetric, EMMetric

        metric = EMMetric(3) if multi else CCMetric(3, sigma_diff=2.0, radius=4)
        sdr = SymmetricDiffeomorphicRegistration(metric, level_iters=[50, 25, 10])
        mapping = sdr.optimize(static, moving, prealign=current, **grids)
        settings["deformable"] = f"SyN {type(metric).__name__} 50-25-10"
    seconds = time.perf_counter() - t0

    def apply(path):
        img = np.asarray(nib.load(path).dataobj, dtype=np.float64)
        return mapping.transform(img, interpolation="linear")

    return seconds, settings, apply


RUNNERS = {"omnireg": run_omnireg, "ants": run_ants, "elastix": run_elastix, "sitk": run_sitk, "dipy": run_dipy}


def worker(args) -> None:
    """One method on one case folder: register, extract the point map and the linear warp; save them.

    Only the method's own libraries are imported (torch only for omnireg), so the peak resident memory,
    read right after the registration, is the method's: imports, reading the images and registering.
    """
    C.set_thread_env(args.threads)
    if args.worker == "omnireg":
        import torch

        torch.set_num_threads(args.threads)
    if args.worker in ("omnireg", "sitk"):
        import SimpleITK as sitk

        sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(args.threads)
    import numpy as np

    folder = Path(args.case_dir)
    seconds, settings, apply = RUNNERS[args.worker](folder, args.family, args.threads)
    peak = C.peak_rss_mb()
    mapping = np.stack([np.asarray(apply(folder / f"coord{c}.nii.gz"), dtype=np.float64) for c in range(3)])
    ones = np.asarray(apply(folder / "ones.nii.gz"), dtype=np.float64)
    warped = np.asarray(apply(folder / "moving.nii.gz"), dtype=np.float32)
    np.savez(folder / f"{args.worker}.npz", mapping_lps=mapping, ones=ones, warped=warped)
    print("RESULT " + json.dumps({"seconds": seconds, "peak_rss_mb": peak, "settings": settings}))


def run_worker(method: str, folder: Path, family: str, threads: int, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--case-dir", str(folder),
           "--family", family, "--threads", str(threads)]
    env = dict(os.environ)
    env.update({k: str(threads) for k in C.THREAD_ENV})
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate(kc, fixed_labels, mapping_ras, inside, warped_own=None) -> dict:
    """Target error, Dice, folding (and the consistency of ``warped_own``) of a fixed -> moving map.

    Args:
        kc: the KnownCase.
        fixed_labels: ``(*S)`` integer labels of the fixed image.
        mapping_ras: ``(3, *S)`` float64 world RAS positions ``T(x)`` at the fixed voxel centres.
        inside: ``(*S)`` bool, where ``T(x)`` lies inside the moving image.
        warped_own: the method's own linear warp of the moving image (``(*S)``), or None.
    """
    import numpy as np
    import torch
    from scipy import ndimage

    from _cases import brain_mask
    from omnireg.evaluation import jacobian_statistics
    from omnireg.transforms import DisplacementField, resample

    grid = kc.fixed.grid
    x = grid.points("world", dtype=torch.float64).numpy()  # (*S, 3)
    u = mapping_ras - np.moveaxis(x, -1, 0)
    field = DisplacementField(torch.from_numpy(u)[None], grid, learnable=False)
    brain = brain_mask().numpy()
    with torch.no_grad():
        err = kc.target_error(field, mask=torch.from_numpy(brain)).numpy()
        warped_labels = resample(kc.moving_labels, field, onto=grid, interp="nearest").numpy()[0]
    dice = {}
    for lab in np.unique(fixed_labels[fixed_labels > 0]):
        a, b = fixed_labels == lab, warped_labels == lab
        dice[int(lab)] = float(2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1))
    valid = ndimage.binary_erosion(inside, iterations=1, border_value=1)
    jac = jacobian_statistics(u, grid, mask=valid) if valid.any() else None
    out = {
        "mean_mm": float(err.mean()),
        "median_mm": float(np.median(err)),
        "p95_mm": float(np.percentile(err, 95)),
        "max_mm": float(err.max()),
        "dice_mean": float(np.mean(list(dice.values()))),
        "dice": dice,
        "folding_percent": jac.nonpositive_fraction * 100.0 if jac else None,
        "jacobian_min": jac.min if jac else None,
        "brain_outside_moving_percent": float(100.0 * (brain & ~inside).sum() / brain.sum()),
    }
    if warped_own is not None:
        with torch.no_grad():
            ours = resample(kc.moving, field, onto=grid, interp="linear").numpy()[0]
        sel = brain & inside
        span = float(kc.moving.data.max() - kc.moving.data.min())
        out["consistency_max_rel"] = float(np.abs(ours[sel] - warped_own[sel]).max() / span)
        out["consistency_mean_rel"] = float(np.abs(ours[sel] - warped_own[sel]).mean() / span)
    return out


def reference_rows(kc, fixed_labels) -> dict:
    """``initial`` (identity) and ``truth`` (the true map) evaluated like a method."""
    import numpy as np
    import torch

    grid = kc.fixed.grid
    x = grid.points("world", dtype=torch.float64)
    ident = np.moveaxis(x.numpy(), -1, 0)
    truth = np.moveaxis(kc.true_points(x.unsqueeze(0))[0].numpy(), -1, 0)
    rows = {}
    for name, mapping in (("initial", ident), ("truth", truth)):
        vox = kc.moving.grid.transform_points(np.moveaxis(mapping, 0, -1), "world", "voxel")
        inside = np.all((vox >= -0.5) & (vox <= np.asarray(kc.moving.grid.shape) - 0.5), axis=-1)
        rows[name] = evaluate(kc, fixed_labels, mapping, inside)
    return rows


# ---------------------------------------------------------------------------------------------- report
def summary_rows(results: list[dict], families, methods) -> list[list]:
    import numpy as np

    rows = []
    for fam in families:
        for method in ("initial", "truth", *methods):
            rs = [r for r in results if r["family"] == fam and r["method"] == method]
            if not rs:
                continue
            ok = [r for r in rs if r.get("mean_mm") is not None]
            if not ok:
                status = rs[0].get("status") or "failed: " + rs[0].get("error", "").split("|")[-1].strip()
                rows.append([fam, method, len(rs), None, None, None, None, None, None, None, status[:60]])
                continue

            def avg(key):
                vals = [r[key] for r in ok if r.get(key) is not None]
                return float(np.mean(vals)) if vals else None

            worst = max(r["mean_mm"] for r in ok)
            cons = [r["consistency_max_rel"] for r in ok if r.get("consistency_max_rel") is not None]
            note = "" if len(ok) == len(rs) else f"{len(rs) - len(ok)} failed"
            remark = (f"{max(cons):.1e}" if cons else "") + (f" {note}" if note else "")
            rows.append([fam, method, len(ok), avg("mean_mm"), avg("p95_mm"), worst, avg("dice_mean"),
                         avg("folding_percent"), avg("seconds"), avg("peak_rss_mb"), remark])
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="sanity + one case of affine-mono, affine-multi, deformable-mono (default)")
    mode.add_argument("--full", action="store_true", help="sanity + 5 cases per affine family + 2 per deformable family")
    mode.add_argument("--sanity", action="store_true", help="only the translation sanity case")
    p.add_argument("--families", nargs="+", choices=FAMILIES)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--cases", type=int, help="cases per affine family")
    p.add_argument("--deformable-cases", type=int, help="cases per deformable family")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per method and case (default 3600)")
    p.add_argument("--keep", type=Path, help="keep the case files and outputs in this folder")
    p.add_argument("--json", type=Path, default=C.default_json("peers"))
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--case-dir", help=argparse.SUPPRESS)
    p.add_argument("--family", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    if args.sanity:
        families = ["sanity"]
    elif args.families:
        families = args.families
    elif args.full:
        families = list(FAMILIES)
    else:
        families = ["sanity", "affine-mono", "affine-multi", "deformable-mono"]
    n_affine = args.cases if args.cases is not None else (5 if args.full else 1)
    n_def = args.deformable_cases if args.deformable_cases is not None else (2 if args.full else 1)

    C.set_threads(args.threads)
    import numpy as np

    from _cases import sample_images

    fixed_labels = sample_images()[2].numpy()[0]
    available = {m: peer_available(m) for m in args.methods}
    for m, (ok, what) in available.items():
        print(f"{m:8s} {what if ok else 'not installed: skipped'}")
    cases = make_cases(families, n_affine, n_def, args.seed)
    results: list[dict] = []
    meta = {
        "benchmark": "peers",
        "mode": "sanity" if args.sanity else ("full" if args.full else "quick"),
        "families": families,
        "methods": {m: (what if ok else "not installed") for m, (ok, what) in available.items()},
        "cases": [{k: c[k] for k in ("family", "name", "matrix", "displacement_seed")} for c in cases],
        "machine": C.machine_info(args.threads, ["antspyx", "itk-elastix", "itk", "dipy"]),
    }
    t_all = time.perf_counter()

    def save():
        C.write_json({**meta, "wall_s": time.perf_counter() - t_all, "results": results}, args.json)

    tmp_ctx = tempfile.TemporaryDirectory(prefix="omnireg-peers-") if args.keep is None else None
    root = Path(tmp_ctx.name) if tmp_ctx else args.keep
    try:
        for case in cases:
            kc = build(case)
            folder = root / case["name"]
            write_case_files(kc, folder)
            base = {"family": case["family"], "case": case["name"]}
            for name, row in reference_rows(kc, fixed_labels).items():
                results.append({**base, "method": name, **row})
            for method in args.methods:
                ok, what = available[method]
                rec = {**base, "method": method}
                if not ok:
                    results.append({**rec, "status": "not installed"})
                    continue
                r = run_worker(method, folder, case["family"], args.threads, args.timeout)
                rec.update(r)
                if "error" not in r:
                    out = np.load(folder / f"{method}.npz")
                    mapping_ras = out["mapping_lps"] * np.asarray(LPS)[:, None, None, None]
                    rec.update(evaluate(kc, fixed_labels, mapping_ras, out["ones"] > 0.999, out["warped"]))
                    msg = (f"mean {rec['mean_mm']:.2f} mm, p95 {rec['p95_mm']:.2f} mm, Dice {rec['dice_mean']:.3f}, "
                           f"{rec['seconds']:.1f} s, consistency {rec['consistency_max_rel']:.1e}")
                else:
                    msg = "FAILED: " + r["error"]
                print(f"{case['name']:20s} {method:8s} {msg}", flush=True)
                results.append(rec)
                save()
    finally:
        if tmp_ctx:
            tmp_ctx.cleanup()
    save()
    header = ["family", "method", "n", "mean mm", "p95 mm", "worst mean", "Dice", "fold %", "time s", "peak MiB",
              "consistency / note"]
    print(f"\nKnown-truth cases: target error over brain voxels, {args.threads} threads per method")
    print(C.table(header, summary_rows(results, families, args.methods)))
    if "sanity" in families:
        san = [r for r in results
               if r["family"] == "sanity" and r["method"] in args.methods and r.get("status") != "not installed"]
        bad = [r for r in san if r.get("mean_mm") is None or r["mean_mm"] > 1.0]
        if not san:
            print("sanity: no method ran")
        elif bad:
            described = [f"{r['method']} " + (f"{r['mean_mm']:.2f} mm" if r.get("mean_mm") is not None else "failed")
                         for r in bad]
            print("SANITY: " + ", ".join(described)
                  + " (expected < 1 mm; a point-map sign error shows as about 15 mm)")
        else:
            print("sanity: every method recovered the translation within 1 mm (point-map conventions agree)")
    print(f"wrote {args.json} ({time.perf_counter() - t_all:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
