"""DeepSim with a segmenter that means something: a tiny 2D segmenter trained inside the test (300 steps of
``train_segmenter`` on random-contrast images of phantom label maps), then what DeepSim does with it:
invariance to intensity changes (measured), and a registration across two contrasts that recovers a known
smooth deformation, through the engine and as a network-style loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from omnireg.core import Grid, Image
from omnireg.networks.registration import warp_voxels
from omnireg.similarity import DeepSim
from omnireg.training.labelmaps import LabelMapSet, read_prepared_index, structure_lookup, write_prepared_index
from omnireg.training.loop import FitConfig
from omnireg.training.registration import dice_per_structure
from omnireg.training.segmenter import SegmenterTrainConfig, segmenter_synthesis, train_segmenter
from omnireg.training.synthesis import SynthesisConfig, synthesize

pytestmark = pytest.mark.slow

SHAPE = (32, 32, 4)
CONTRAST = dict(noise_max=0.02, bias_max=0.1, gamma_std=0.1, background_zero=1.0)


def write_phantoms(folder, n: int = 8, seed: int = 0):
    """Prepared label maps of 2D phantoms (stacked 4 slices deep): an elliptic 'head' of cortex (3) around white
    matter (2) holding a ventricle (4) and a hippocampus (17), positions and radii drawn per subject."""
    from omnireg.io import save_image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    grid = Grid(SHAPE, spacing=(2.0, 2.0, 2.0))
    ii, jj = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    entries, names = {}, []
    for k in range(n):
        c = np.array(SHAPE[:2]) / 2 + rng.uniform(-2, 2, 2)
        r = rng.uniform(10, 13, 2)
        slab = np.zeros(SHAPE[:2], np.int16)
        slab[((ii - c[0]) / r[0]) ** 2 + ((jj - c[1]) / r[1]) ** 2 < 1] = 3
        slab[((ii - c[0]) / (r[0] - 3)) ** 2 + ((jj - c[1]) / (r[1] - 3)) ** 2 < 1] = 2
        for label, offset in ((4, (-3, 0)), (17, (4, 2))):
            cc, rr = c + np.array(offset) + rng.uniform(-2, 2, 2), rng.uniform(2, 3.5, 2)
            slab[((ii - cc[0]) / rr[0]) ** 2 + ((jj - cc[1]) / rr[1]) ** 2 < 1] = label
        name = f"p{k}"
        save_image(Image(torch.from_numpy(np.repeat(slab[..., None], SHAPE[2], 2))[None], grid), folder / f"{name}.nii.gz")
        names.append(name)
        entries[name] = {"file": f"{name}.nii.gz"}
    split = {"train": names[:-2], "validation": names[-2:], "test": []}
    write_prepared_index(folder, {"grid": grid.to_dict(), "split": split, "subjects": entries})
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    folder = write_phantoms(tmp_path_factory.mktemp("phantoms"))
    out = tmp_path_factory.mktemp("model") / "seg.pt"
    config = SegmenterTrainConfig(
        ndim=2, model_options={"enc_channels": [8, 16, 16], "dec_channels": [16, 16, 8, 8]},
        synthesis=segmenter_synthesis("random", deform_spacing_vox=4.0), batch_size=4, val_every=100, slice_margin=0.0,
        ce_weight=0.0,  # the soft Dice alone, as when the figures below (and in the README) were measured
        fit=FitConfig(steps=300, lr=3e-3, warmup=10, seed=0, checkpoint_every=1000, weight_decay=0.0))
    meta = train_segmenter(config, out, label_maps=folder)
    maps = LabelMapSet.load(folder, read_prepared_index(folder)["split"]["validation"])
    return str(out), meta, maps


def test_the_segmenter_learns_the_phantoms(trained):
    _, meta, _ = trained
    dice = [r["dice"] for r in meta["validation_history"]]
    assert dice[0] < dice[-1] and dice[-1] > 0.55, dice  # measured 0.51, 0.66, 0.69


def _image(maps, subject: int, seed: int, labels=None) -> torch.Tensor:
    source = maps.labels[subject : subject + 1, :, :, :, 2] if labels is None else labels
    return synthesize(source, maps.values, SynthesisConfig(mode="random", **CONTRAST), [torch.Generator().manual_seed(seed)],
                      deform=False).image


def test_intensity_changes_measured_against_a_two_voxel_shift(trained):
    """Affine intensity changes give exactly 1 (robust normalisation); with the decoder features (the default)
    monotone non-linear changes score above a 2-voxel shift of the same image (measured 0.97 / 0.98 against
    0.89), the encoder levels (the reference's choice) score lower (x^2: 0.89)."""
    weights, _, maps = trained
    dec, enc = DeepSim(weights=weights), DeepSim(weights=weights, levels=(0, 1, 2))
    rows = []
    for subject in range(2):
        for seed in range(4):
            x = _image(maps, subject, seed)
            shifted = torch.roll(x, 2, dims=2)
            torch.testing.assert_close(dec(x, 0.5 * x + 0.2, spacing=2.0), torch.ones(1), rtol=0, atol=1e-5)
            rows.append([float(dec(x, x**2, spacing=2.0)), float(dec(x, x.sqrt(), spacing=2.0)),
                         float(dec(x, shifted, spacing=2.0)), float(enc(x, x**2, spacing=2.0))])
    square, root, shift, enc_square = np.mean(rows, 0)
    assert square > shift and root > shift, (square, root, shift)
    assert enc_square < square, (enc_square, square)


def _deformed_pair(maps):
    """A phantom in a T1-like contrast (fixed) and, deformed by a known smooth field of up to 2 voxels, in a random
    contrast (moving), with their structure labels."""
    labels = maps.labels[0:1, :, :, :, 2]
    ii, jj = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    u = torch.stack([2.0 * torch.sin(2 * math.pi * jj / 32), 1.5 * torch.cos(2 * math.pi * ii / 32)])[None]
    moved = warp_voxels(labels, u, interp="nearest")
    fixed = synthesize(labels, maps.values, SynthesisConfig(mode="t1", **CONTRAST), [torch.Generator().manual_seed(1)],
                       deform=False).image
    moving = _image(maps, 0, 2, labels=moved)
    lut = structure_lookup(maps.values)
    return fixed, moving, lut[labels.long()], lut[moved.long()]


def _dice(a, b) -> float:
    return float(torch.nanmean(dice_per_structure(a, b, 5)))


def test_engine_registration_across_contrasts_recovers_a_known_deformation(trained):
    from omnireg import transforms as T
    from omnireg.optim import register

    weights, _, maps = trained
    fixed, moving, fixed_labels, moving_labels = _deformed_pair(maps)
    grid = Grid((32, 32), spacing=(2.0, 2.0))
    cfg = {"init": "none", "stages": [{"transform": "bspline", "metric": "deepsim", "metric_options": {"weights": weights},
                                       "shrink": [1], "iterations": [150], "control_spacing_mm": 8.0}]}
    result = register(Image(fixed[0], grid), Image(moving[0], grid), config=cfg)
    warped = T.resample(Image(moving_labels[0].to(torch.int16), grid), result.transform, onto=grid, interp="nearest")
    before, after = _dice(moving_labels, fixed_labels), _dice(warped.data[None], fixed_labels)
    assert after > before + 0.04, (before, after)  # measured 0.68 -> 0.75 (MI: 0.87, NCC: 0.20)


def test_deepsim_as_a_loss_recovers_a_known_deformation_across_contrasts(trained):
    weights, _, maps = trained
    fixed, moving, fixed_labels, moving_labels = _deformed_pair(maps)
    measure = DeepSim(weights=weights)
    coarse = torch.zeros(1, 2, 6, 6, requires_grad=True)
    opt = torch.optim.Adam([coarse], lr=0.1)
    for _ in range(150):
        u = F.interpolate(coarse, size=(32, 32), mode="bicubic", align_corners=True)
        smooth = sum((u.diff(dim=a) ** 2).mean() for a in (2, 3))
        loss = measure.loss(fixed, warp_voxels(moving, u), spacing=2.0).mean() + 0.01 * smooth
        opt.zero_grad()
        loss.backward()
        opt.step()
    u = F.interpolate(coarse.detach(), size=(32, 32), mode="bicubic", align_corners=True)
    before, after = _dice(moving_labels, fixed_labels), _dice(warp_voxels(moving_labels, u, interp="nearest"), fixed_labels)
    assert after > before + 0.08, (before, after)  # measured 0.68 -> 0.81
    assert all(p.grad is None for p in measure.network(2).parameters())
