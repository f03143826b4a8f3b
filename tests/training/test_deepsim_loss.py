"""DeepSim as a training loss of registration networks: built from the loss spec by name (alone or in weighted
sums), gradients reach the registration network and never the frozen segmenter; `omnireg train registration
--loss deepsim:2,ncc:1` runs."""

from __future__ import annotations

import pytest
import torch

from omnireg.cli.main import main
from omnireg.networks.registration import NetworkOutput, warp_voxels
from omnireg.networks.segmenter import Segmenter, SegmenterConfig
from omnireg.networks.store import load_model, save_model
from omnireg.similarity import DeepSim
from omnireg.training.losses import RegistrationBatch, RegistrationLoss

TINY_SEG = {"enc_channels": (4, 8, 8), "dec_channels": (8, 8, 4, 4)}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def seg_weights(tmp_path):
    torch.manual_seed(0)
    return str(save_model(tmp_path / "seg3d.pt", Segmenter(SegmenterConfig(ndim=3, spacing_mm=2.0, **TINY_SEG)), kind="segmenter"))


def test_weighted_sum_with_deepsim_is_the_weighted_sum_of_the_measures(seg_weights):
    g = torch.Generator().manual_seed(0)
    fixed, moving = torch.rand(2, 1, 12, 14, 10, generator=g), torch.rand(2, 1, 12, 14, 10, generator=g)
    u = (0.5 * torch.randn(2, 3, 12, 14, 10, generator=g)).requires_grad_(True)
    loss = RegistrationLoss("deepsim:2,ncc:1", "", similarity_options={"deepsim": {"weights": seg_weights}})
    assert isinstance(loss.measures["deepsim"], DeepSim)
    total, terms = loss(NetworkOutput(u, None, None, []), RegistrationBatch(moving, fixed, spacing=(2.0, 2.0, 2.0)))
    warped = warp_voxels(moving, u)
    ds = DeepSim(weights=seg_weights).loss(fixed, warped, spacing=(2.0, 2.0, 2.0)).mean()
    torch.testing.assert_close(terms["deepsim"], ds)
    torch.testing.assert_close(total, 2 * terms["deepsim"] + terms["ncc"])
    total.backward()
    assert u.grad is not None and u.grad.abs().sum() > 0 and torch.isfinite(u.grad).all()
    seg = loss.measures["deepsim"].network(3)
    assert all(p.grad is None for p in seg.parameters())
    # the segmenter is not a parameter of the loss (it is never trained nor moved with it)
    assert not any(p is q for p in loss.parameters() for q in seg.parameters())


def test_train_registration_cli_with_a_deepsim_loss(tiny_label_maps, seg_weights, tmp_path):
    out = tmp_path / "vm.pt"
    argv = ["-q", "train", "registration", "--model", "voxelmorph-diff", "--label-maps", str(tiny_label_maps), "--out", str(out),
            "--loss", "deepsim:2,ncc:1", "--similarity-options", '{"deepsim": {"weights": "%s"}}' % seg_weights,
            "--steps", "2", "--val-every", "2", "--warmup", "1", "--model-options", '{"enc_channels": [4, 8], "dec_channels": [8, 8, 4]}']
    assert main(argv) == 0
    _, meta = load_model(out)
    assert meta["training"]["loss"] == "deepsim:2,ncc:1" and meta["steps_done"] == 2
    assert meta["training"]["similarity_options"]["deepsim"]["weights"] == seg_weights
