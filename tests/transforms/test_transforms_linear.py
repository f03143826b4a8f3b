"""Linear transforms: matrices, parameterisation, conversions, inverses, flat parameters, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from omnireg.transforms import Affine, Identity, Rigid, Similarity, Translation, rotation_matrix

D64 = torch.float64


def _explicit(a: torch.Tensor, c: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x - c[:, None]) @ a.transpose(-1, -2) + c[:, None] + t[:, None]


@pytest.mark.parametrize("rot", [[0.0, 0.0, 0.0], [1e-5, -2e-5, 3e-6], [0.3, -0.5, 0.8], [0.0, 0.0, 3.0]])
def test_rotation_matrix_3d_is_orthonormal_and_matches_scipy(rot):
    from scipy.spatial.transform import Rotation

    r = torch.tensor([rot], dtype=D64)
    m = rotation_matrix(r)[0]
    assert torch.allclose(m @ m.T, torch.eye(3, dtype=D64), atol=1e-12)
    assert torch.linalg.det(m).item() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(m.numpy(), Rotation.from_rotvec(rot).as_matrix(), atol=1e-12)


def test_rotation_matrix_2d_turns_first_axis_towards_second():
    m = rotation_matrix(torch.tensor([[math.pi / 2]], dtype=D64))[0]
    np.testing.assert_allclose((m @ torch.tensor([1.0, 0.0], dtype=D64)).numpy(), [0.0, 1.0], atol=1e-12)


def test_rotation_matrix_gradcheck_at_zero_and_away():
    for r in (torch.zeros(1, 3, dtype=D64), torch.tensor([[0.4, -0.2, 0.9]], dtype=D64), torch.tensor([[0.7]], dtype=D64)):
        assert torch.autograd.gradcheck(rotation_matrix, (r.requires_grad_(),))


@pytest.mark.parametrize("ndim", [2, 3])
def test_linear_transforms_follow_the_centered_formula(ndim):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, ndim, generator=g, dtype=D64) * 20
    c = torch.randn(2, ndim, generator=g, dtype=D64) * 10
    t = torch.randn(2, ndim, generator=g, dtype=D64)
    nr = 1 if ndim == 2 else 3
    r = torch.randn(2, nr, generator=g, dtype=D64) * 0.3
    s = torch.tensor([[1.2], [0.8]], dtype=D64)
    a = torch.randn(2, ndim, ndim, generator=g, dtype=D64) * 0.2 + torch.eye(ndim, dtype=D64)
    eye = torch.eye(ndim, dtype=D64).expand(2, ndim, ndim)
    cases = [
        (Translation(ndim, center=c, translation=t, dtype=D64), eye),
        (Rigid(ndim, center=c, rotation=r, translation=t, dtype=D64), rotation_matrix(r)),
        (Similarity(ndim, center=c, rotation=r, scale=s, translation=t, dtype=D64), s[:, :, None] * rotation_matrix(r)),
        (Affine(ndim, center=c, linear=a, translation=t, dtype=D64), a),
    ]
    for tr, lin in cases:
        assert tr.batch_size == 2 and tr.is_linear
        torch.testing.assert_close(tr(x), _explicit(lin, c, t, x), rtol=0, atol=1e-10)
        m = tr.matrix()
        assert m.shape == (2, ndim + 1, ndim + 1)
        torch.testing.assert_close(m[:, ndim], torch.eye(ndim + 1, dtype=D64)[ndim].expand(2, -1))


def test_rigid_3d_rotation_vector_about_superior_axis_turns_right_to_anterior():
    tr = Rigid(3, rotation=[0.0, 0.0, math.pi / 2], dtype=D64)
    out = tr(torch.tensor([[[1.0, 0.0, 0.0]]], dtype=D64))
    torch.testing.assert_close(out, torch.tensor([[[0.0, 1.0, 0.0]]], dtype=D64))


def test_center_is_a_fixed_point_of_the_linear_part():
    c = torch.tensor([10.0, -4.0, 7.0], dtype=D64)
    tr = Similarity(3, center=c, rotation=[0.3, 0.2, -0.1], scale=1.3, dtype=D64)
    torch.testing.assert_close(tr(c[None, None]), c[None, None])


def test_identity_maps_points_to_themselves_exactly():
    x = torch.randn(3, 5, 3)
    assert torch.equal(Identity(3)(x), x)
    assert torch.equal(Identity(2, 3).matrix(), torch.eye(3).expand(3, 3, 3))


@pytest.mark.parametrize("cls", [Translation, Rigid, Similarity, Affine])
@pytest.mark.parametrize("ndim", [2, 3])
def test_inverse_round_trip_of_linear_transforms(cls, ndim):
    g = torch.Generator().manual_seed(1)
    tr = cls(ndim, center=torch.randn(ndim, generator=g) * 10)
    tr.set_flat_parameters(torch.randn(tr.num_parameters, generator=g) * 0.2 + (torch.arange(tr.num_parameters) == 0) * 0.1)
    if cls is Affine:
        tr.set_flat_parameters(tr.get_flat_parameters().detach() + torch.cat([torch.eye(ndim).flatten(), torch.zeros(ndim)]))
    inv = tr.inverse()
    assert isinstance(inv, Affine)
    x = torch.randn(1, 20, ndim, generator=g) * 30
    torch.testing.assert_close(inv(tr(x)), x, rtol=0, atol=1e-4)
    torch.testing.assert_close(tr(inv(x)), x, rtol=0, atol=1e-4)


def test_inverse_is_exact_in_float64():
    tr = Rigid(3, center=[1.0, 2.0, 3.0], rotation=[0.5, -0.4, 0.3], translation=[5.0, -2.0, 1.0], dtype=D64)
    x = torch.randn(1, 10, 3, dtype=D64) * 50
    torch.testing.assert_close(tr.inverse()(tr(x)), x, rtol=0, atol=1e-12)


def test_from_matrix_round_trips_with_and_without_center():
    m = torch.tensor([[1.1, 0.1, 0.0, 3.0], [-0.2, 0.9, 0.1, -1.0], [0.05, 0.0, 1.2, 2.0], [0, 0, 0, 1]], dtype=D64)
    for center in (None, [4.0, -3.0, 2.0]):
        a = Affine.from_matrix(m, center=center)
        assert a.dtype == D64 and a.batch_size == 1
        torch.testing.assert_close(a.matrix()[0], m)


def test_from_matrix_keeps_the_graph_when_not_learnable():
    m = torch.eye(4, dtype=D64).requires_grad_()
    a = Affine.from_matrix(m * 2, learnable=False)
    a(torch.ones(1, 1, 3, dtype=D64)).sum().backward()
    assert m.grad is not None and m.grad.abs().sum() > 0


def test_affine_from_rigid_and_rigid_from_affine_are_exact_for_rigid_motion():
    rig = Rigid(3, center=[5.0, 5.0, 5.0], rotation=[0.1, -0.2, 0.3], translation=[1.0, 2.0, 3.0], dtype=D64)
    aff = Affine.from_transform(rig)
    torch.testing.assert_close(aff.matrix(), rig.matrix())
    torch.testing.assert_close(aff.center, rig.center)
    back = Rigid.from_transform(aff)
    torch.testing.assert_close(back.rotation, rig.rotation)
    torch.testing.assert_close(back.translation, rig.translation)
    assert torch.allclose(rig.as_affine().matrix(), rig.matrix())


def test_similarity_from_affine_recovers_scale_and_rotation():
    sim = Similarity(2, rotation=0.4, scale=1.5, translation=[1.0, -1.0], dtype=D64)
    back = Similarity.from_transform(sim.as_affine(), center=[3.0, 4.0])
    torch.testing.assert_close(back.matrix(), sim.matrix())
    torch.testing.assert_close(back.scale, torch.tensor([[1.5]], dtype=D64))


def test_rigid_from_affine_with_shear_keeps_the_image_of_the_center():
    m = torch.tensor([[1.0, 0.3, 2.0], [0.0, 1.0, -1.0], [0, 0, 1]], dtype=D64)
    aff = Affine.from_matrix(m, center=[2.0, 2.0])
    rig = Rigid.from_transform(aff)
    c = torch.tensor([[[2.0, 2.0]]], dtype=D64)
    torch.testing.assert_close(rig(c), aff(c))
    r = rig.linear_part()[0]
    torch.testing.assert_close(r @ r.T, torch.eye(2, dtype=D64))


def test_flat_parameters_order_and_round_trip():
    sim = Similarity(3, batch_size=2)
    assert sim.num_parameters == 7
    vals = torch.arange(14, dtype=torch.float32).reshape(2, 7) / 10
    sim.set_flat_parameters(vals)
    torch.testing.assert_close(sim.get_flat_parameters(), vals)
    torch.testing.assert_close(sim.rotation, vals[:, :3])
    torch.testing.assert_close(sim.log_scale, vals[:, 3:4])
    torch.testing.assert_close(sim.translation, vals[:, 4:])
    sim.set_flat_parameters(vals[0])  # (K,) for every element
    torch.testing.assert_close(sim.get_flat_parameters(), vals[0].expand(2, 7))
    aff = Affine(2)
    assert aff.num_parameters == 6
    torch.testing.assert_close(aff.get_flat_parameters()[0], torch.tensor([1.0, 0, 0, 1, 0, 0]))
    with pytest.raises(ValueError, match="values"):
        aff.set_flat_parameters(torch.zeros(5))


def test_parameter_scales_map_radians_to_mm():
    torch.testing.assert_close(Rigid(3).parameter_scales(80.0), torch.tensor([80.0, 80, 80, 1, 1, 1]))
    torch.testing.assert_close(Similarity(2).parameter_scales(10.0), torch.tensor([10.0, 10, 1, 1]))
    torch.testing.assert_close(Translation(2).parameter_scales(10.0), torch.tensor([1.0, 1]))
    with pytest.raises(ValueError, match="radius_mm"):
        Rigid(3).parameter_scales(0.0)


def test_batch_broadcasting_of_points_and_transforms():
    tr = Translation(3, translation=torch.tensor([[1.0, 0, 0], [0, 2.0, 0]]))
    out = tr(torch.zeros(1, 4, 5, 3))
    assert out.shape == (2, 4, 5, 3)
    assert torch.equal(out[1, 0, 0], torch.tensor([0.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="batch"):
        tr(torch.zeros(3, 4, 3))


def test_validation_errors_name_the_argument():
    with pytest.raises(ValueError, match="rotation"):
        Rigid(3, rotation=[0.1, 0.2])
    with pytest.raises(ValueError, match="ndim"):
        Rigid(4)
    with pytest.raises(ValueError, match="scale"):
        Similarity(2, scale=-1.0)
    with pytest.raises(ValueError, match="points"):
        Rigid(3)(torch.zeros(4, 3))
    with pytest.raises(TypeError, match="points"):
        Rigid(3)(np.zeros((1, 4, 3)))
    with pytest.raises(ValueError, match="matrix"):
        Affine.from_matrix(torch.eye(5))


def test_points_dtype_is_kept():
    tr = Rigid(3, rotation=[0.1, 0.0, 0.0])
    assert tr(torch.zeros(1, 2, 3, dtype=D64)).dtype == D64


def test_gradcheck_of_mapped_points_wrt_parameters():
    x = torch.randn(1, 6, 3, dtype=D64) * 10

    def f(rot, trans):
        return Rigid(3, rotation=rot, translation=trans, center=[1.0, 2.0, 3.0], learnable=False, dtype=D64)(x)

    assert torch.autograd.gradcheck(f, (torch.zeros(1, 3, dtype=D64, requires_grad=True), torch.zeros(1, 3, dtype=D64, requires_grad=True)))
    assert torch.autograd.gradcheck(f, (torch.tensor([[0.3, 0.1, -0.2]], dtype=D64, requires_grad=True), torch.ones(1, 3, dtype=D64, requires_grad=True)))


def test_parameters_receive_gradients_and_clone_detach_copy_them():
    tr = Affine(2)
    tr(torch.ones(1, 3, 2)).sum().backward()
    assert tr.linear.grad is not None and tr.translation.grad is not None
    cl = tr.clone()
    with torch.no_grad():
        cl.translation.add_(1.0)
    assert torch.equal(tr.translation, torch.zeros(1, 2))
    det = tr.detach()
    assert not any(p.requires_grad for p in det.parameters())
    assert all(p.requires_grad for p in tr.parameters())
