"""Registration outputs as ITK files: compact fields on their own grid that SimpleITK applies as omnireg
does, and inverse outputs whose round trip through the written files is the identity."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy.spatial.transform import Rotation

from omnireg.core import Grid, Image
from omnireg.io import load_image
from omnireg.optim.result import RegistrationResult
from omnireg.transforms import Affine, DisplacementField, StationaryVelocityField, compose, resample
from omnireg.transforms.files import (
    inverse_residual,
    load_inverse_chain,
    load_transform,
    save_inverse_outputs,
    save_transform_outputs,
)

FLIP = np.array([-1.0, -1.0, 1.0])


def rotation_3d(angles: tuple[float, float, float]) -> np.ndarray:
    return Rotation.from_euler("xyz", angles).as_matrix()


def _fixed_grid() -> Grid:
    return Grid((26, 24, 22), (1.5, 1.5, 1.5), (-18.0, -16.0, -15.0), rotation_3d((0.1, -0.05, 0.2)))


def _moving_grid() -> Grid:
    return Grid((22, 23, 20), (1.8, 1.7, 1.9), (-19.0, -20.0, -17.0), rotation_3d((-0.05, 0.1, 0.0)))


def _smooth(grid: Grid, amplitude: float) -> torch.Tensor:
    """A smooth world-mm vector field ``(1, 3, *S)`` on ``grid`` (float64), fading out towards the grid's
    border as a regularised registration field does (largest gradient about ``amplitude / 13 mm``)."""
    x = grid.points("world", dtype=torch.float64).movedim(-1, 0)
    u = torch.stack([torch.sin(x[1] / 15.0 + 0.3), torch.cos(x[2] / 15.0), torch.sin(x[0] / 15.0) * torch.cos(x[1] / 15.0)])
    vox = grid.points("voxel", dtype=torch.float64).movedim(-1, 0)
    for axis, size in enumerate(grid.shape):
        u = u * torch.sin(np.pi * (vox[axis] + 0.5) / size)
    return (amplitude * u)[None]


def _linear() -> Affine:
    m = np.eye(4)
    m[:3, :3] = rotation_3d((0.04, -0.03, 0.05)) @ np.diag([1.03, 0.98, 1.01])
    m[:3, 3] = [1.5, -2.0, 0.7]
    return Affine.from_matrix(torch.as_tensor(m), dtype=torch.float64, learnable=False)


def _result(deformable, fixed_grid: Grid) -> RegistrationResult:
    """A synthetic registration result ``T = L ∘ D`` (the engine is not run)."""
    linear = _linear()
    transform = linear if deformable is None else compose(linear, deformable)
    warped = Image(torch.zeros(1, *fixed_grid.shape), fixed_grid)
    return RegistrationResult(transform, linear, deformable, warped, [], {}, {}, 0.0, [], {})


def _sitk_points(tx: sitk.Transform, points_ras: np.ndarray) -> np.ndarray:
    return FLIP * np.array([tx.TransformPoint(tuple(FLIP * p)) for p in points_ras])


def _inside_points(grid: Grid, n: int, seed: int, margin: float = 0.0) -> torch.Tensor:
    """``n`` random world points whose continuous index lies in ``[margin, S - 1 - margin]`` of ``grid``."""
    u = torch.rand((n, grid.ndim), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    vox = margin + u * (torch.tensor(grid.shape, dtype=torch.float64) - 1 - 2 * margin)
    return grid.transform_points(vox, "voxel", "world")


# ---------------------------------------------------------------------------------------------- compact fields
def test_coarse_field_is_written_on_its_grid_float32_and_simpleitk_maps_points_like_omnireg(tmp_path):
    fixed = _fixed_grid()
    coarse = fixed.with_spacing(3.0)  # the grid the field was "optimised on"
    field = DisplacementField(_smooth(coarse, 3.0).float(), coarse, learnable=False)
    result = _result(field, fixed)
    assert save_transform_outputs(result, tmp_path) == ["linear.mat", "deformation.nii.gz"]
    nii = sitk.ReadImage(str(tmp_path / "deformation.nii.gz"))
    assert nii.GetSize() == coarse.shape and nii.GetPixelIDValue() == sitk.sitkVectorFloat32
    np.testing.assert_allclose(nii.GetSpacing(), coarse.spacing, atol=1e-6)
    with h5py.File(tmp_path / "transform.h5", "r") as h5:
        ds = h5["TransformGroup/2/TransformParameters"]
        assert ds.dtype == np.float32 and ds.compression == "gzip" and ds.size == 3 * coarse.numel
        np.testing.assert_array_equal(h5["TransformGroup/2/TransformFixedParameters"][:3], coarse.shape)
    tx = sitk.ReadTransform(str(tmp_path / "transform.h5"))
    pts = _inside_points(fixed, 400, seed=0)
    ours = result.transform(pts[None])[0].numpy()
    assert np.abs(_sitk_points(tx, pts.numpy()) - ours).max() < 0.01  # the bound; measured ~1e-5 mm
    # the displacement field file alone is applied by SimpleITK as omnireg applies the field
    dfield = sitk.DisplacementFieldTransform(sitk.Cast(nii, sitk.sitkVectorFloat64))
    np.testing.assert_allclose(_sitk_points(dfield, pts.numpy()), field(pts[None])[0].numpy(), atol=1e-4)


def test_border_rule_of_displacement_fields_is_itks(tmp_path):
    """Linear inside, border-clamped within half a voxel outside the outer voxel centres, zero beyond: as ITK."""
    coarse = _fixed_grid().with_spacing(3.0)
    field = DisplacementField(_smooth(coarse, 2.0) + 1.0, coarse, learnable=False)  # nowhere zero
    save_transform_outputs(_result(field, _fixed_grid()), tmp_path)
    itk = sitk.DisplacementFieldTransform(sitk.Cast(sitk.ReadImage(str(tmp_path / "deformation.nii.gz")), sitk.sitkVectorFloat64))
    shape = torch.tensor(coarse.shape, dtype=torch.float64)
    rng = torch.Generator().manual_seed(5)
    for offset, moved in ((-0.3, True), (-0.45, True), (-0.6, False), (-1.5, False)):
        vox = torch.rand((60, 3), generator=rng, dtype=torch.float64) * (shape - 1)
        axis = torch.randint(0, 3, (60,), generator=rng)
        high = torch.rand(60, generator=rng) < 0.5
        vox[torch.arange(60), axis] = torch.where(high, shape[axis] - 1 - offset, torch.full((60,), offset, dtype=torch.float64))
        pts = coarse.transform_points(vox, "voxel", "world")
        ours = field(pts[None])[0].numpy()
        np.testing.assert_allclose(_sitk_points(itk, pts.numpy()), ours, atol=1e-4)
        if moved:  # every point within the half voxel is displaced (by about 1 mm along each axis)
            assert np.abs(ours - pts.numpy()).min() > 0.5
        else:
            np.testing.assert_array_equal(ours, pts.numpy())


def test_simpleitk_resample_through_written_transform_agrees_with_omnireg_resample(tmp_path):
    """Images of the moving-space coordinates warped by sitk.Resample (transform.h5) and by omnireg's
    resample are the mapped points themselves (linear interpolation of a linear function is exact)."""
    fixed, moving = _fixed_grid(), _moving_grid()
    coarse = fixed.with_spacing(3.0)
    result = _result(DisplacementField(_smooth(coarse, 3.0).float(), coarse, learnable=False), fixed)
    save_transform_outputs(result, tmp_path)
    tx = sitk.ReadTransform(str(tmp_path / "transform.h5"))
    coords = moving.points("world", dtype=torch.float64).movedim(-1, 0)  # (3, *S_moving): RAS x, y, z
    ones = np.ones(moving.shape)
    ref = sitk.Image(list(fixed.shape), sitk.sitkFloat64)
    ref.SetSpacing(fixed.spacing)
    ref.SetOrigin(tuple(FLIP * np.asarray(fixed.origin)))
    ref.SetDirection(tuple((FLIP[:, None] * fixed.direction).reshape(-1)))

    def sitk_warp(data: np.ndarray) -> np.ndarray:
        img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
        img.SetSpacing(moving.spacing)
        img.SetOrigin(tuple(FLIP * np.asarray(moving.origin)))
        img.SetDirection(tuple((FLIP[:, None] * moving.direction).reshape(-1)))
        return sitk.GetArrayFromImage(sitk.Resample(img, ref, tx, sitk.sitkLinear, 0.0)).transpose(2, 1, 0)

    theirs = np.stack([sitk_warp(c.numpy()) for c in coords])
    ours = resample(Image(coords, moving), load_transform(tmp_path / "transform.h5"), onto=fixed).data.numpy()
    inside = (sitk_warp(ones) > 1 - 1e-9) & (resample(Image(torch.ones(1, *moving.shape, dtype=torch.float64), moving),
                                                        result.transform, onto=fixed).data[0].numpy() > 1 - 1e-9)
    assert inside.mean() > 0.5
    diff = np.linalg.norm(theirs - ours, axis=0)[inside]
    assert np.percentile(diff, 99) < 0.1 and diff.max() < 0.01  # the p99 bound; measured ~1e-5 mm
    # and both are the points the in-memory transform maps the fixed voxel centres to
    mapped = result.transform.transform_grid(fixed, dtype=torch.float64)[0].movedim(-1, 0).numpy()
    assert np.linalg.norm(theirs - mapped, axis=0)[inside].max() < 1e-3


def test_svf_is_written_as_its_integrated_displacement_on_the_velocity_grid(tmp_path):
    fixed = _fixed_grid()
    coarse = fixed.with_spacing(3.0)
    svf = StationaryVelocityField(_smooth(coarse, 4.0).float(), coarse, steps=7, learnable=False)
    result = _result(svf, fixed)
    save_transform_outputs(result, tmp_path)
    items = load_transform(tmp_path / "deformation.nii.gz")
    assert items.grid.same_as(coarse, atol=1e-4)
    tx = sitk.ReadTransform(str(tmp_path / "transform.h5"))
    pts = _inside_points(fixed, 300, seed=2)
    ours = result.transform(pts[None])[0].numpy()
    assert np.abs(_sitk_points(tx, pts.numpy()) - ours).max() < 0.01


def test_compact_field_is_many_times_smaller_than_a_full_resolution_float64_one(tmp_path):
    """A 1 mm image with a field on a 2 mm grid: the file is >= 4x smaller than float64 at 1 mm uncompressed."""
    fixed = Grid((48, 56, 48), (1.0, 1.0, 1.0), (-24.0, -28.0, -24.0))
    coarse = fixed.with_spacing(2.0)
    save_transform_outputs(_result(DisplacementField(_smooth(coarse, 3.0).float(), coarse, learnable=False), fixed), tmp_path)
    full_float64 = 3 * fixed.numel * 8
    assert (tmp_path / "transform.h5").stat().st_size * 4 <= full_float64
    assert (tmp_path / "deformation.nii.gz").stat().st_size * 4 <= full_float64


# ---------------------------------------------------------------------------------------------- inverse
def _round_trip(tmp_path, result, moving: Grid, fixed: Grid) -> tuple[np.ndarray, np.ndarray, dict]:
    """``|T(T^-1(y)) - y|`` through the written files, read by omnireg and by SimpleITK."""
    save_transform_outputs(result, tmp_path)
    moving_image_grid = moving
    inv = save_inverse_outputs(result, tmp_path, fixed=Image(torch.rand(1, *fixed.shape), fixed), moving_grid=moving_image_grid)
    assert inv.files == {"inverse": "inverse.h5", "inverse_warped": "inverse_warped.nii.gz"}
    assert load_image(tmp_path / "inverse_warped.nii.gz").grid.same_as(moving, atol=1e-4)
    forward, inverse = load_transform(tmp_path / "transform.h5"), load_transform(tmp_path / "inverse.h5")
    y = _inside_points(moving, 400, seed=3, margin=2.0)
    x = inverse(y[None])[0]
    vox = fixed.transform_points(x, "world", "voxel")
    keep = ((vox >= 1.0) & (vox <= torch.tensor(fixed.shape) - 2.0)).all(-1)  # T^-1(y) well inside the fixed image
    assert keep.sum() > 100
    ours = (forward(x[keep][None])[0] - y[keep]).norm(dim=-1).numpy()
    fwd, bwd = sitk.ReadTransform(str(tmp_path / "transform.h5")), sitk.ReadTransform(str(tmp_path / "inverse.h5"))
    yk = y[keep].numpy()
    theirs = np.linalg.norm(_sitk_points(fwd, _sitk_points(bwd, yk)) - yk, axis=1)
    return ours, theirs, inv.residual_mm


def test_svf_forward_then_inverse_through_the_written_files_is_the_identity(tmp_path):
    fixed, moving = _fixed_grid(), _moving_grid()
    coarse = fixed.with_spacing(3.0)
    svf = StationaryVelocityField(_smooth(coarse, 2.0).float(), coarse, steps=7, learnable=False)
    ours, theirs, residual = _round_trip(tmp_path, _result(svf, fixed), moving, fixed)
    assert ours.max() < 0.1 and theirs.max() < 0.1
    assert residual["method"].startswith("exp(-v)") and residual["points"] > 0 and residual["max"] < 0.1


def test_linear_forward_then_inverse_through_the_written_files_is_exact(tmp_path):
    fixed, moving = _fixed_grid(), _moving_grid()
    ours, theirs, residual = _round_trip(tmp_path, _result(None, fixed), moving, fixed)
    assert ours.max() < 1e-4 and theirs.max() < 1e-4
    assert residual["method"] == "matrix inverse" and residual["max"] < 1e-4
    assert not (tmp_path / "deformation.nii.gz").exists()


def test_displacement_field_inverse_is_a_fixed_point_with_its_residual_reported(tmp_path):
    fixed, moving = _fixed_grid(), _moving_grid()
    coarse = fixed.with_spacing(3.0)
    field = DisplacementField(_smooth(coarse, 2.0).float(), coarse, learnable=False)
    ours, theirs, residual = _round_trip(tmp_path, _result(field, fixed), moving, fixed)
    assert residual["method"] == "fixed-point iteration"
    # the reported figures are those of the written files, over the moving grid: random points agree
    assert 0.0 < residual["mean"] <= residual["max"] < 0.5
    assert ours.max() < residual["max"] + 0.05 and theirs.max() < residual["max"] + 0.05
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_inverse_residual_counts_the_points_mapped_into_the_fixed_field_of_view():
    fixed, moving = _fixed_grid(), _moving_grid()
    forward = _linear()
    exact = forward.inverse()
    res = inverse_residual(forward, exact, moving_grid=moving, fixed_grid=fixed)
    assert res["max"] < 1e-9
    x = exact(moving.points("world", dtype=torch.float64).reshape(1, -1, 3))[0]
    vox = fixed.transform_points(x, "world", "voxel")
    expected = int(((vox >= -0.5) & (vox <= torch.tensor(fixed.shape) - 0.5)).all(-1).sum())
    assert 0 < res["points"] == expected < moving.numel
    # an inverse off by 1 mm along R: every counted point is off by exactly 1 mm after the forward map
    shift = Affine.from_matrix(torch.linalg.inv(forward.matrix()[0]) @ _translation(1.0), learnable=False)
    off = inverse_residual(forward, shift, moving_grid=moving, fixed_grid=fixed)
    assert off["max"] == pytest.approx(1.0, abs=1e-9) and off["mean"] == pytest.approx(1.0, abs=1e-9)


def _translation(r_mm: float) -> torch.Tensor:
    m = torch.eye(4, dtype=torch.float64)
    m[0, 3] = r_mm
    return m


def test_apply_inverse_uses_the_registered_inverse_only_when_result_json_lists_it(tmp_path):
    fixed = _fixed_grid()
    coarse = fixed.with_spacing(3.0)
    result = _result(DisplacementField(_smooth(coarse, 3.0).float(), coarse, learnable=False), fixed)
    save_transform_outputs(result, tmp_path)
    save_inverse_outputs(result, tmp_path, fixed=Image(torch.rand(1, *fixed.shape), fixed), moving_grid=_moving_grid())
    spec = [str(tmp_path / "transform.h5")]
    _, forward, source = load_inverse_chain(spec, ndim=3)  # no result.json: each item is inverted here
    assert forward is not None and source == "fixed-point iteration"
    (tmp_path / "result.json").write_text('{"outputs": {"transform": "transform.h5"}}')  # a run without --inverse
    assert load_inverse_chain(spec, ndim=3)[1] is not None
    (tmp_path / "result.json").write_text('{"outputs": {"transform": "transform.h5", "inverse": "inverse.h5"}}')
    inverse, forward, source = load_inverse_chain(spec, ndim=3)
    assert forward is None and "inverse.h5" in source
    # both ways give the same map: the fixed point of the same float32 field
    y = _inside_points(_moving_grid(), 50, seed=8, margin=3.0)[None]
    computed = load_inverse_chain([f"[{tmp_path / 'linear.mat'},0]", str(tmp_path / "deformation.nii.gz")], ndim=3)[0]
    torch.testing.assert_close(inverse(y), computed(y), atol=1e-4, rtol=0)
