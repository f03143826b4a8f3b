"""Registration losses: spec parsing, every similarity as a batched training loss, Dice, regularisers in mm,
deep supervision and the symmetric loss."""

from __future__ import annotations

import pytest
import torch

from omnireg.networks.registration import NetworkOutput, warp_voxels
from omnireg.regularizers import diffusion_penalty
from omnireg.training.losses import LossTerm, RegistrationBatch, RegistrationLoss, format_spec, parse_spec, soft_dice_loss

SIMILARITIES = ["mse", "ncc", "lncc", "mi", "nmi", "mind", "ngf"]


def _blobs(n: int, shape=(12, 14, 10), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, *[s // 3 for s in shape], generator=g)
    return torch.nn.functional.interpolate(x, size=shape, mode="trilinear", align_corners=True)


def test_parse_spec_weights_defaults_and_round_trip():
    terms = parse_spec("deepsim:2, NCC:1,mse", what="loss")
    assert terms == [LossTerm("deepsim", 2.0), LossTerm("ncc", 1.0), LossTerm("mse", 1.0)]
    assert parse_spec(format_spec(terms), what="loss") == terms
    assert parse_spec("none", what="reg") == [] and parse_spec("", what="reg") == []


@pytest.mark.parametrize("spec, message", [
    ("ncc:x", "not a number"), ("ncc:-1", ">= 0"), ("ncc,ncc:2", "twice"), (",ncc", "empty term"), ("foo", "unknown term"),
])
def test_parse_spec_rejects_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(spec, what="loss", allowed=["ncc", "mse"])


@pytest.mark.parametrize("name", SIMILARITIES)
def test_each_similarity_trains_on_batches_with_per_item_means(name):
    """Finite, non-zero gradients in the displacement; the batch loss is the mean of the items' losses
    (what makes data-parallel gradient averaging equal to one large batch)."""
    fixed, moving = _blobs(2, seed=1), _blobs(2, seed=2)
    u = (0.3 * torch.randn(2, 3, 12, 14, 10, generator=torch.Generator().manual_seed(3))).requires_grad_(True)
    loss = RegistrationLoss(name, "")
    total, terms = loss(NetworkOutput(u), RegistrationBatch(moving, fixed, spacing=(2.0, 2.0, 2.0)))
    total.backward()
    assert torch.isfinite(u.grad).all() and float(u.grad.abs().max()) > 0
    with torch.no_grad():
        parts = [loss(NetworkOutput(u[i:i + 1]), RegistrationBatch(moving[i:i + 1], fixed[i:i + 1], spacing=(2.0, 2.0, 2.0)))[0]
                 for i in range(2)]
    torch.testing.assert_close(total.detach(), (parts[0] + parts[1]) / 2, rtol=1e-5, atol=1e-6)
    assert set(terms) == {name}


def test_loss_is_lower_at_the_true_displacement():
    fixed = torch.zeros(1, 1, 12, 14, 10)
    fixed[..., 3:-3, 3:-3, 3:-3] = _blobs(1, shape=(6, 8, 4), seed=4) + 0.5  # zero border: nothing leaves the grid
    true = torch.zeros(1, 3, 12, 14, 10)
    true[:, 1] = 1.5  # moving(x) = fixed(x - 1.5 e_1): the pull displacement that aligns it is +1.5
    moving = warp_voxels(fixed, -true, padding="border")
    for name in ("mse", "lncc", "mi"):
        loss = RegistrationLoss(name, "")
        batch = RegistrationBatch(moving, fixed, spacing=(1.0, 1.0, 1.0))
        assert float(loss(NetworkOutput(true), batch)[0]) < float(loss(NetworkOutput(torch.zeros_like(true)), batch)[0])


def test_soft_dice_is_zero_for_equal_maps_and_exact_for_halves():
    lab = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    lab[..., :2] = 1
    oh = torch.nn.functional.one_hot(lab[:, 0], 3).movedim(-1, 1).float()
    assert float(soft_dice_loss(oh, oh)) == pytest.approx(0.0, abs=1e-6)
    shifted = torch.zeros_like(lab)
    shifted[..., 1:3] = 1  # overlap 4 of 8 + 8 voxels: Dice 0.5; class 2 absent from both: left out
    oh2 = torch.nn.functional.one_hot(shifted[:, 0], 3).movedim(-1, 1).float()
    assert float(soft_dice_loss(oh2, oh)) == pytest.approx(0.5, abs=1e-5)


def test_dice_term_needs_labels_and_vanishes_at_alignment():
    lab = torch.zeros(2, 1, 8, 8, 8, dtype=torch.long)
    lab[:, :, 2:6, 2:6, 2:6] = 1
    lab[:, :, 3:5, 3:5, 3:5] = 2
    img = lab.float()
    loss = RegistrationLoss("dice", "", classes=3)
    value, _ = loss(NetworkOutput(torch.zeros(2, 3, 8, 8, 8)), RegistrationBatch(img, img, lab, lab, (1.0,) * 3))
    assert float(value) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="label maps"):
        loss(NetworkOutput(torch.zeros(2, 3, 8, 8, 8)), RegistrationBatch(img, img, None, None, (1.0,) * 3))
    with pytest.raises(ValueError, match="classes"):
        RegistrationLoss("dice", "")


def test_regulariser_acts_on_the_field_in_mm():
    """u_vox(x) = a * i along axis 1 on a 2 mm grid is u_mm = a * x_mm: diffusion a^2, whatever the spacing."""
    u = torch.zeros(1, 3, 6, 7, 5)
    u[:, 1] = 0.3 * torch.arange(6.0)[:, None, None]
    x = _blobs(1, shape=(6, 7, 5))
    loss = RegistrationLoss("mse:0", "diffusion:2")
    total, terms = loss(NetworkOutput(u), RegistrationBatch(x, x, spacing=(2.0, 2.0, 2.0)))
    assert float(terms["reg_diffusion"]) == pytest.approx(0.09, rel=1e-5)
    assert float(total) == pytest.approx(0.18, rel=1e-5)
    ref = diffusion_penalty(u * 2.0, (2.0, 2.0, 2.0))
    assert float(terms["reg_diffusion"]) == pytest.approx(float(ref), rel=1e-6)


def test_deep_supervision_mixes_the_coarse_scale():
    fixed, moving = _blobs(1, shape=(8, 8, 8), seed=5), _blobs(1, shape=(8, 8, 8), seed=6)
    u = 0.2 * torch.ones(1, 3, 8, 8, 8)
    coarse = 0.1 * torch.ones(1, 3, 4, 4, 4)
    batch = RegistrationBatch(moving, fixed, spacing=(1.0,) * 3)
    full = float(RegistrationLoss("mse", "")(NetworkOutput(u), batch)[0])
    pool = lambda x: torch.nn.functional.avg_pool3d(x, 2)  # noqa: E731
    small = float(RegistrationLoss("mse", "")(NetworkOutput(coarse), RegistrationBatch(pool(moving), pool(fixed), spacing=(2.0,) * 3))[0])
    mixed = float(RegistrationLoss("mse", "", deep_supervision=0.3)(NetworkOutput(u, scales=[coarse]), batch)[0])
    assert mixed == pytest.approx(0.7 * full + 0.3 * small, rel=1e-5)


def test_symmetric_loss_averages_both_directions():
    fixed, moving = _blobs(1, seed=7), _blobs(1, seed=8)
    u, inv = 0.5 * torch.ones(1, 3, 12, 14, 10), -0.5 * torch.ones(1, 3, 12, 14, 10)
    fwd = float(RegistrationLoss("ncc", "")(NetworkOutput(u), RegistrationBatch(moving, fixed, spacing=(1.0,) * 3))[0])
    bwd = float(RegistrationLoss("ncc", "")(NetworkOutput(inv), RegistrationBatch(fixed, moving, spacing=(1.0,) * 3))[0])
    sym = RegistrationLoss("ncc", "", symmetric=True)
    assert float(sym(NetworkOutput(u, inverse=inv), RegistrationBatch(moving, fixed, spacing=(1.0,) * 3))[0]) == pytest.approx((fwd + bwd) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="inverse"):
        sym(NetworkOutput(u), RegistrationBatch(moving, fixed, spacing=(1.0,) * 3))
