"""The label-map synthesiser keeps labels and geometry aligned, is seeded, and draws the contrasts it promises."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnireg.core import Grid
from omnireg.networks.registration import warp_voxels
from omnireg.training.labelmaps import LabelMapSet, NAMED_STRUCTURES, structure_lookup, t1_means
from omnireg.training.synthesis import (
    SynthesisConfig,
    draw_contrast,
    random_displacement,
    synthesize,
    synthesize_pair,
)


def _phantom(shape=(24, 28, 20)) -> np.ndarray:
    """Nested boxes with FreeSurfer labels: head 507, CSF 24, cortex 3, white matter 2, ventricle 4."""
    a = np.zeros(shape, dtype=np.int64)
    for value, m in ((507, 1), (24, 3), (3, 5), (2, 7), (4, 9)):
        a[m:-m, m:-m, m:-m] = value
    return a


@pytest.fixture
def maps() -> LabelMapSet:
    return LabelMapSet.from_arrays(["a"], [_phantom()], Grid((24, 28, 20), spacing=(2.0, 2.0, 2.0)))


def _gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_class_table_and_lookup(maps):
    assert maps.values.tolist() == [0, 2, 3, 4, 24, 507]
    assert maps.labels.dtype == torch.uint8
    back = maps.values[maps.labels.long()][0, 0].numpy()
    np.testing.assert_array_equal(back, _phantom())
    lut = structure_lookup(maps.values)
    named = list(NAMED_STRUCTURES)
    assert lut.tolist() == [0, 1 + named.index(2), 1 + named.index(3), 1 + named.index(4), 1 + named.index(24), 0]


def test_images_separate_the_labels_by_their_drawn_means(maps):
    """Without noise and blur, each label's image mean is an increasing function of its drawn mean."""
    cfg = SynthesisConfig(noise_max=0.0, blur_max_vox=0.0, bias_max=0.0, gamma_std=0.0, background_zero=0.0)
    g = torch.Generator().manual_seed(3)
    out = synthesize(maps.labels, maps.values, cfg, [g], deform=False)
    means, _ = draw_contrast(maps.values, cfg, torch.Generator().manual_seed(3))
    img, lab = out.image[0, 0], out.labels[0, 0].long()
    per_label = torch.stack([img[lab == k].mean() for k in range(len(maps.values))]).double()
    within = torch.stack([img[lab == k].std() for k in range(len(maps.values))])
    assert float(within.max()) < 1e-5  # constant within each label
    expected = (means - means.min()) / (means.max() - means.min())  # min-max normalised, gamma 1
    torch.testing.assert_close(per_label, expected, atol=1e-5, rtol=0)


def test_labels_and_image_share_the_deformation(maps):
    """The returned labels are the input labels pulled through the returned field, exactly; the image edges follow."""
    cfg = SynthesisConfig(deform_std_max_vox=3.0, deform_spacing_vox=4.0, rotation_max_deg=8, scale_max=0.05,
                          translation_max_vox=1.5, noise_max=0.0, blur_max_vox=0.0, bias_max=0.0, gamma_std=0.0,
                          background_zero=0.0)
    out = synthesize(maps.labels, maps.values, cfg, _gens(11))
    assert float(out.displacement.abs().max()) > 0.5
    assert out.labels.dtype == maps.labels.dtype
    expected = warp_voxels(maps.labels, out.displacement, interp="nearest")
    assert torch.equal(out.labels, expected)
    # the image is piecewise constant on the deformed labels (no noise, no blur)
    img, lab = out.image[0, 0], out.labels[0, 0].long()
    for k in torch.unique(lab).tolist():
        vals = img[lab == k]
        assert float(vals.max() - vals.min()) < 1e-5


def test_random_displacement_is_diffeomorphic_and_affine_is_exact():
    cfg = SynthesisConfig(deform_std_max_vox=0.0, rotation_max_deg=10, scale_max=0.1, translation_max_vox=2)
    u = random_displacement((9, 11, 7), cfg, torch.Generator().manual_seed(2))
    # a pure affine: second differences vanish
    for axis in range(3):
        d2 = u.diff(dim=2 + axis).diff(dim=2 + axis)
        assert float(d2.abs().max()) < 1e-4
    cfg = SynthesisConfig(deform_std_max_vox=2.0, deform_spacing_vox=4.0)
    u = random_displacement((20, 20, 20), cfg, torch.Generator().manual_seed(5)).double()
    jac = torch.stack([torch.stack(torch.gradient(u[0, c], dim=(0, 1, 2))) for c in range(3)])  # (3, 3, *S)
    det = torch.linalg.det((jac + torch.eye(3, dtype=torch.float64)[:, :, None, None, None]).permute(2, 3, 4, 0, 1))
    assert float(det.min()) > 0


def test_seeded_synthesis_is_reproducible_and_seeds_differ(maps):
    cfg = SynthesisConfig()
    a = synthesize(maps.labels, maps.values, cfg, _gens(7))
    b = synthesize(maps.labels, maps.values, cfg, _gens(7))
    c = synthesize(maps.labels, maps.values, cfg, _gens(8))
    assert torch.equal(a.image, b.image) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.image, c.image)
    two = synthesize(maps.labels.expand(2, -1, -1, -1, -1), maps.values, cfg, _gens(7, 8))
    assert torch.equal(two.image[:1], a.image) and torch.equal(two.image[1:], c.image)  # per-item seeds


def _label_mean(img: torch.Tensor, lab: torch.Tensor, values: torch.Tensor, fs: int) -> float:
    k = int((values == fs).nonzero())
    return float(img[lab == k].mean())


def test_t1_mode_keeps_the_t1_order_and_random_mode_does_not(maps):
    """t1: WM > cortex > CSF in every image; random: that order breaks in some images, and the moving and
    fixed contrasts of a pair are independent."""
    t1 = SynthesisConfig(mode="t1")
    rnd = SynthesisConfig(mode="random")
    broken = 0
    corr = []
    for seed in range(8):
        p = synthesize_pair(maps.labels, maps.labels, maps.values, t1, _gens(seed))
        for img, lab in ((p.moving, p.moving_labels), (p.fixed, p.fixed_labels)):
            wm, ctx, csf = (_label_mean(img[0, 0], lab[0, 0].long(), maps.values, v) for v in (2, 3, 24))
            assert wm > ctx > csf
        q = synthesize_pair(maps.labels, maps.labels, maps.values, rnd, _gens(seed))
        mm = [_label_mean(q.moving[0, 0], q.moving_labels[0, 0].long(), maps.values, v) for v in (2, 3, 4, 24)]
        ff = [_label_mean(q.fixed[0, 0], q.fixed_labels[0, 0].long(), maps.values, v) for v in (2, 3, 4, 24)]
        broken += not (mm[0] > mm[1] > mm[3])
        corr.append(np.corrcoef(mm, ff)[0, 1])
    assert broken >= 3
    assert min(corr) < 0.5  # some pairs have unrelated (even inverted) contrasts


def test_t1_fraction_draws_that_share_of_pairs_t1_like(maps):
    """random mode with t1_fraction: about that share of pairs has the T1 order in both images; 0 keeps the
    random stream of the plain random mode (identical images), 1 gives T1-like pairs only."""
    def t1_order(p) -> bool:
        return all(
            _label_mean(img[0, 0], lab[0, 0].long(), maps.values, 2) > _label_mean(img[0, 0], lab[0, 0].long(), maps.values, 3)
            > _label_mean(img[0, 0], lab[0, 0].long(), maps.values, 24)
            for img, lab in ((p.moving, p.moving_labels), (p.fixed, p.fixed_labels)))

    plain = synthesize_pair(maps.labels, maps.labels, maps.values, SynthesisConfig(mode="random"), _gens(3))
    zero = synthesize_pair(maps.labels, maps.labels, maps.values, SynthesisConfig(mode="random", t1_fraction=0.0), _gens(3))
    assert torch.equal(plain.moving, zero.moving) and torch.equal(plain.fixed, zero.fixed)
    always = SynthesisConfig(mode="random", t1_fraction=1.0)
    assert all(t1_order(synthesize_pair(maps.labels, maps.labels, maps.values, always, _gens(s))) for s in range(6))
    half = SynthesisConfig(mode="random", t1_fraction=0.5)
    share = np.mean([t1_order(synthesize_pair(maps.labels, maps.labels, maps.values, half, _gens(s))) for s in range(60)])
    # T1-like pairs (half) plus random pairs that happen to keep the order in both images (about 1/36 of them)
    assert 0.3 < share < 0.75
    with pytest.raises(ValueError, match="t1_fraction"):
        SynthesisConfig(t1_fraction=1.5)


def test_shared_contrast_fraction_gives_both_images_of_a_pair_one_random_contrast(maps):
    """shared_contrast_fraction 1: moving and fixed have the same class means (intra pair without deformation,
    blur, bias, gamma or noise: identical images); 0 keeps the plain random stream; the share is about right."""
    plain = synthesize_pair(maps.labels, maps.labels, maps.values, SynthesisConfig(mode="random"), _gens(3))
    zero = synthesize_pair(maps.labels, maps.labels, maps.values, SynthesisConfig(mode="random", shared_contrast_fraction=0.0),
                           _gens(3))
    assert torch.equal(plain.moving, zero.moving) and torch.equal(plain.fixed, zero.fixed)
    clean = dict(mode="random", noise_max=0.0, blur_max_vox=0.0, bias_max=0.0, gamma_std=0.0, deform_std_max_vox=0.0)

    def same(cfg, seed) -> bool:
        p = synthesize_pair(maps.labels, maps.labels, maps.values, cfg, _gens(seed))
        return bool(torch.allclose(p.moving, p.fixed, atol=1e-6))

    always = SynthesisConfig(**clean, shared_contrast_fraction=1.0)
    assert all(same(always, s) for s in range(4))
    assert not any(same(SynthesisConfig(**clean), s) for s in range(4))
    half = SynthesisConfig(**clean, shared_contrast_fraction=0.5)
    share = np.mean([same(half, s) for s in range(40)])
    assert 0.25 < share < 0.75
    with pytest.raises(ValueError, match="shared_contrast_fraction"):
        SynthesisConfig(shared_contrast_fraction=-0.1)


def test_t1_table_covers_the_named_structures():
    means, unknown = t1_means(list(NAMED_STRUCTURES))
    assert not bool(unknown.any())
    assert means.min() > 0.05


def test_bad_inputs_are_rejected(maps):
    with pytest.raises(TypeError, match="labels"):
        synthesize(maps.labels.float(), maps.values, SynthesisConfig(), _gens(0))
    with pytest.raises(ValueError, match="generators"):
        synthesize(maps.labels, maps.values, SynthesisConfig(), _gens(0, 1))
    with pytest.raises(ValueError, match="mode"):
        SynthesisConfig(mode="ct")
    with pytest.raises(ValueError, match="strip_prob"):
        SynthesisConfig(strip_prob=2.0)


def test_synthesis_in_2d(maps):
    lab2d = maps.labels[:, :, :, :, 10]
    out = synthesize(lab2d, maps.values, SynthesisConfig(rotation_max_deg=5), _gens(1))
    assert out.image.shape == lab2d.shape and out.displacement.shape == (1, 2, 24, 28)
    assert torch.equal(out.labels, warp_voxels(lab2d, out.displacement, interp="nearest"))
