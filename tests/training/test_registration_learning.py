"""Guards for issue 17's "the field stays zero" report: the default VoxelMorph networks learn a Dice loss, and the
validation Dice is computed with the predicted field (not the identity)."""

from __future__ import annotations

import pytest
import torch

from omnireg.networks.registration import NetworkOutput
from omnireg.networks.voxelmorph import VoxelMorph, VoxelMorphConfig
from omnireg.training.losses import RegistrationBatch, RegistrationLoss
from omnireg.training.registration import validate_registration


def _disc_labels(shape: tuple[int, int], centre: tuple[float, float]) -> torch.Tensor:
    """``(1, 1, *shape)`` labels: 1 in a ring, 2 in an inner disc, 0 outside."""
    i, j = torch.meshgrid(torch.arange(shape[0]).float(), torch.arange(shape[1]).float(), indexing="ij")
    r2 = (i - centre[0]) ** 2 + (j - centre[1]) ** 2
    lab = torch.zeros(shape, dtype=torch.long)
    lab[r2 < 81] = 1
    lab[r2 < 16] = 2
    return lab[None, None]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("kind", ["voxelmorph", "voxelmorph-diff"])
def test_default_width_network_learns_a_dice_loss_with_a_non_zero_field(kind, one_thread):
    # the training loss of the GPU run (dice + diffusion:1) on one pair whose structures are 2 voxels apart per axis
    torch.manual_seed(0)
    ml, fl = _disc_labels((32, 32), (18.0, 14.0)), _disc_labels((32, 32), (16.0, 16.0))
    batch = RegistrationBatch(ml.float() / 2, fl.float() / 2, ml, fl, (1.0, 1.0))
    net = VoxelMorph(VoxelMorphConfig.from_kind(kind, ndim=2))  # the default (VoxelMorph) widths and initialisation
    loss = RegistrationLoss("dice", "diffusion:1", classes=3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    first = None
    for _ in range(15):
        total, terms = loss(net(batch.moving, batch.fixed), batch)
        first = float(terms["dice"].detach()) if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    with torch.no_grad():
        out = net(batch.moving, batch.fixed)
        _, terms = loss(out, batch)
    assert float(terms["dice"]) < 0.6 * first, (first, float(terms["dice"]))
    # the structures are 2 voxels apart: the field must move by about that, not stay near zero
    assert float(out.displacement.abs().amax()) > 1.0


class _ConstantShift(torch.nn.Module):
    """A stand-in network that predicts one constant voxel displacement."""

    def __init__(self, shift: tuple[float, float]) -> None:
        super().__init__()
        self.shift = torch.tensor(shift)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> NetworkOutput:
        u = self.shift.view(1, 2, 1, 1).expand(moving.shape[0], 2, *moving.shape[2:]).clone()
        return NetworkOutput(displacement=u)


def test_validation_dice_uses_the_predicted_field():
    ml, fl = _disc_labels((32, 32), (18.0, 14.0)), _disc_labels((32, 32), (16.0, 16.0))
    pairs = [RegistrationBatch(ml.float() / 2, fl.float() / 2, ml, fl, (1.0, 1.0))]
    # fixed(x) = moving(x + (2, -2)): that constant field aligns the maps exactly
    right = validate_registration(_ConstantShift((2.0, -2.0)), pairs, classes=3)
    assert right["dice"] == 1.0 and right["dice_identity"] < 0.9
    zero = validate_registration(_ConstantShift((0.0, 0.0)), pairs, classes=3)
    assert zero["dice"] == zero["dice_identity"] == right["dice_identity"]
    wrong = validate_registration(_ConstantShift((-2.0, 2.0)), pairs, classes=3)
    assert wrong["dice"] < zero["dice"]
