"""Composite ITK .h5 files: the order convention, SimpleITK agreement, B-spline conversion, dispatch."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from omnireg.core import Grid
from omnireg.io import (
    DisplacementItem,
    LinearItem,
    TransformKind,
    read_composite_h5,
    read_transform_file,
    write_composite_h5,
)


def test_itk_composite_applies_the_last_transform_first():
    """Pin of ITK's convention that omnireg's item lists follow: CompositeTransform([A, B])(p) == A(B(p))."""
    a = sitk.TranslationTransform(3, (1.0, 0.0, 0.0))
    b = sitk.ScaleTransform(3, (2.0, 2.0, 2.0))
    p = (1.0, 1.0, 1.0)
    composite = sitk.CompositeTransform([a, b])
    assert composite.TransformPoint(p) == a.TransformPoint(b.TransformPoint(p)) == (3.0, 2.0, 2.0)
    assert composite.TransformPoint(p) != b.TransformPoint(a.TransformPoint(p))


def _items(grid: Grid):
    m1 = np.eye(grid.ndim + 1)
    m1[: grid.ndim, grid.ndim] = np.arange(1, grid.ndim + 1) * 3.0
    m2 = np.eye(grid.ndim + 1)
    c, s = np.cos(0.3), np.sin(0.3)
    m2[:2, :2] = [[c, -s], [s, c]]
    m2[:2, :2] *= 1.2
    u = torch.randn((grid.ndim, *grid.shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return [("linear", m1), ("displacement", u, grid), ("linear", m2)]


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_simpleitk_applies_written_composite_last_item_first(tmp_path, make_grid, to_lps, ndim, precision):
    grid = make_grid(40 + ndim, ndim)
    items = _items(grid)
    (_, m1), (_, u, _), (_, m2) = items
    write_composite_h5(items, tmp_path / "c.h5", precision=precision)
    u = u.to(getattr(torch, precision)).double()  # the values the file holds
    tx = sitk.ReadTransform(str(tmp_path / "c.h5"))
    # choose y so that m2 @ y is the voxel centre x: there the field needs no interpolation
    x_all = grid.points("world", dtype=torch.float64).numpy()
    m2_inv = np.linalg.inv(m2)
    for idx in [(0,) * ndim, (1,) * ndim, (2, 1, 0)[:ndim]]:
        x = x_all[idx]
        y = m2_inv[:ndim, :ndim] @ x + m2_inv[:ndim, ndim]
        expected = m1[:ndim, :ndim] @ (x + u[(slice(None), *idx)].numpy()) + m1[:ndim, ndim]  # m1(u(m2(y)))
        np.testing.assert_allclose(to_lps(np.asarray(tx.TransformPoint(tuple(to_lps(y))))), expected, atol=1e-9)
    back = read_composite_h5(tmp_path / "c.h5")
    assert [it.kind for it in back] == [TransformKind.LINEAR, TransformKind.DISPLACEMENT, TransformKind.LINEAR]
    assert all(it.ndim == ndim for it in back)
    assert isinstance(back[0], LinearItem) and isinstance(back[1], DisplacementItem)
    np.testing.assert_allclose(back[0].matrix, m1, atol=1e-12)
    np.testing.assert_allclose(back[2].matrix, m2, atol=1e-12)
    assert back[1].grid.same_as(grid, atol=1e-9)
    torch.testing.assert_close(back[1].field, u, rtol=0, atol=0)
    with h5py.File(tmp_path / "c.h5", "r") as h5:
        assert h5["TransformGroup/2/TransformParameters"].dtype == np.dtype(precision)
        assert h5["TransformGroup/1/TransformParameters"].dtype == np.float64  # linear parameters stay exact
    # the items read back can be written again (named tuples are accepted like plain tuples)
    write_composite_h5(back, tmp_path / "again.h5")
    assert len(read_transform_file(tmp_path / "again.h5")) == 3


def test_field_on_a_coarse_grid_keeps_its_own_geometry_compressed_float32(tmp_path, make_grid, to_lps):
    """ITK's fixed parameters of a field are the field's grid (size, LPS origin, spacing, LPS direction),
    not the image it is applied to; the field is stored float32, chunked, gzip-compressed, and SimpleITK
    interpolates it between its voxel centres like omnireg."""
    from omnireg.transforms import DisplacementField

    grid = make_grid(7, 3, shape=(9, 8, 7))  # oblique, anisotropic, with a reflection
    coarse = grid.with_spacing(np.asarray(grid.spacing) * 2.0)
    x = coarse.points("world", dtype=torch.float64).movedim(-1, 0)
    u = torch.stack([torch.sin(x[1] / 7.0), torch.cos(x[2] / 5.0), 0.3 * torch.sin(x[0] / 4.0)]) * 2.0
    write_composite_h5([("displacement", u, coarse)], tmp_path / "f.h5")
    with h5py.File(tmp_path / "f.h5", "r") as h5:
        ds = h5["TransformGroup/1/TransformParameters"]
        assert ds.dtype == np.float32 and ds.compression == "gzip" and ds.chunks is not None
        assert h5["TransformGroup/1/TransformType"][0] == b"DisplacementFieldTransform_float_3_3"
        fixed = h5["TransformGroup/1/TransformFixedParameters"][()]
    flip = np.array([-1.0, -1.0, 1.0])
    np.testing.assert_array_equal(fixed[:3], coarse.shape)
    np.testing.assert_allclose(fixed[3:6], flip * np.asarray(coarse.origin), atol=1e-12)
    np.testing.assert_allclose(fixed[6:9], coarse.spacing, atol=1e-12)
    np.testing.assert_allclose(fixed[9:].reshape(3, 3), flip[:, None] * coarse.direction, atol=1e-12)
    tx = sitk.ReadTransform(str(tmp_path / "f.h5"))
    dense = DisplacementField(u.float()[None], coarse, learnable=False)
    # points between the coarse voxel centres, within the field
    vox = torch.rand((200, 3), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    vox = vox * (torch.tensor(coarse.shape, dtype=torch.float64) - 1)
    pts = coarse.transform_points(vox, "voxel", "world")
    ours = dense(pts[None])[0].numpy()
    theirs = to_lps(np.array([tx.TransformPoint(tuple(to_lps(p))) for p in pts.numpy()]))
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-9)


def test_reads_composite_written_by_simpleitk(tmp_path, to_lps):
    euler = sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.1, 0.2, 0.3, (4.0, 5.0, 6.0))
    field = sitk.Image([4, 5, 6], sitk.sitkVectorFloat64, 3)
    field.SetOrigin((-3.0, 2.0, 1.0))
    field.SetSpacing((1.5, 1.0, 2.0))
    arr = np.random.default_rng(2).normal(size=(6, 5, 4, 3))
    vec = sitk.GetImageFromArray(arr, isVector=True)
    vec.CopyInformation(field)
    disp = sitk.DisplacementFieldTransform(sitk.Image(vec))
    sitk.WriteTransform(sitk.CompositeTransform([euler, disp]), str(tmp_path / "s.h5"))
    (lin, dis) = read_composite_h5(tmp_path / "s.h5")
    # voxel (1, 2, 3) of the field: ITK maps it to euler(p + d)
    p_lps = np.asarray(vec.TransformIndexToPhysicalPoint((1, 2, 3)))
    expected = to_lps(np.asarray(euler.TransformPoint(tuple(p_lps + arr[3, 2, 1]))))
    x = to_lps(p_lps)
    got = lin.matrix[:3, :3] @ (x + dis.field[:, 1, 2, 3].numpy()) + lin.matrix[:3, 3]
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_bspline_transform_is_read_as_sampled_displacement_field(tmp_path, to_lps):
    ref = sitk.Image([8, 7, 6], sitk.sitkFloat32)
    ref.SetSpacing((2.0, 1.5, 1.0))
    ref.SetOrigin((10.0, -5.0, 3.0))
    bs = sitk.BSplineTransformInitializer(ref, [2, 2, 2])
    n = len(bs.GetParameters())
    bs.SetParameters(tuple(np.random.default_rng(4).normal(size=n)))
    sitk.WriteTransform(bs, str(tmp_path / "b.tfm"))
    (item,) = read_transform_file(tmp_path / "b.tfm", bspline_oversampling=2)
    assert item.kind == "displacement" and item.grid.shape == (4, 4, 4)
    x = item.grid.points("world", dtype=torch.float64).numpy()
    for idx in [(0, 0, 0), (1, 2, 3), (3, 3, 3)]:
        expected = to_lps(np.asarray(bs.TransformPoint(tuple(to_lps(x[idx])))))
        np.testing.assert_allclose(x[idx] + item.field[(slice(None), *idx)].numpy(), expected, atol=1e-9)


def test_composite_errors(tmp_path):
    g2, g3 = Grid((3, 3)), Grid((3, 3, 3))
    with pytest.raises(ValueError, match="one dimension"):
        write_composite_h5([("linear", np.eye(3)), ("displacement", torch.zeros(3, 3, 3, 3), g3)], tmp_path / "x.h5")
    with pytest.raises(ValueError, match="items"):
        write_composite_h5([], tmp_path / "x.h5")
    with pytest.raises(ValueError, match=r"items\[0\]\[0\]"):
        write_composite_h5([("rigid", np.eye(3))], tmp_path / "x.h5")
    with pytest.raises(ValueError, match="extension"):
        write_composite_h5([("linear", np.eye(3))], tmp_path / "x.tfm")
    write_composite_h5([("displacement", torch.zeros(2, 3, 3), g2)], tmp_path / "x.h5")
    with pytest.raises(FileExistsError, match="x.h5"):
        write_composite_h5([("linear", np.eye(3))], tmp_path / "x.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5"]
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match=r"bad\.h5"):
        read_composite_h5(tmp_path / "bad.h5")
    with pytest.raises(FileNotFoundError, match="gone.h5"):
        read_transform_file(tmp_path / "gone.h5")
