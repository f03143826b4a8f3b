"""Recovery of known transforms on cases made from the bundled sample (the issue's acceptance tests).

Affine within ±10°, ±10 mm, ±8 % scale: mean target error over the brain under 0.5 voxel mono-modal (NCC)
and under 1 voxel multi-modal (MI, NMI, LC2, MIND; moving image = a different contrast, or a non-monotone
T2-like remap, with a bias field and noise). A smooth deformation of up to 6 mm: mean end-point error under
1 voxel and no folding.
"""

import numpy as np
import pytest
import torch

from omnireg.evaluation import jacobian_statistics
from omnireg.optim import preset, register
from omnireg.training.synthetic import affine_matrix, make_known_case, smooth_displacement


def fast(config, *, levels=(4, 2, 1), iterations=(40, 25, 15)):
    """Shorten every stage of a config (fewer levels/iterations) for tests."""
    for st in config.stages:
        st.shrink = list(levels)
        st.iterations = list(iterations)
        st.smoothing_mm = None
    return config


TRUE_AFFINE = dict(rotation_deg=(8.0, -6.0, 10.0), translation_mm=(8.0, -10.0, 6.0), scale=(1.07, 0.93, 1.04))


def _affine_case(fixed, moving_source, **kw):
    m = affine_matrix(ndim=3, **TRUE_AFFINE)
    return make_known_case(fixed, matrix=m, moving_source=moving_source, **kw)


@pytest.mark.slow
def test_mono_modal_affine_recovered_to_half_a_voxel_with_ncc(brain3mm):
    t1, _, mask = brain3mm
    case = _affine_case(t1, None)
    cfg = fast(preset("affine"))
    for st in cfg.stages:  # the presets use MI: this test is about NCC
        st.metric, st.metric_options = "ncc", {}
    res = register(case.fixed, case.moving, config=cfg)
    err = case.target_error(res.transform, mask=mask)
    voxel = max(t1.grid.spacing)
    assert float(err.mean()) < 0.5 * voxel, float(err.mean())
    assert res.metric_after["ncc"] > res.metric_before["ncc"]


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["mi", "nmi", "lc2", "mind"])
def test_multi_modal_affine_recovered_within_one_voxel(brain4mm, brain3mm, metric):
    # MIND's descriptors (patch radius and dilation of 2 voxels) need voxels of a few mm: 3 mm, two levels
    t1, t2, mask = brain3mm if metric == "mind" else brain4mm
    case = _affine_case(t1, t2, bias=0.2, noise=0.02, seed=3)
    cfg = fast(preset("multimodal-affine"), **({"levels": (2, 1), "iterations": (40, 20)} if metric == "mind" else {}))
    for st in cfg.stages:
        st.metric = metric
        st.metric_options = {"bins": 24} if metric in ("mi", "nmi") else {}
    res = register(case.fixed, case.moving, config=cfg)
    err = case.target_error(res.transform, mask=mask)
    assert float(err.mean()) < max(t1.grid.spacing), (metric, float(err.mean()))


@pytest.mark.slow
def test_non_monotone_remap_affine_recovered_with_mi(brain4mm):
    t1, _, mask = brain4mm
    case = _affine_case(t1, None, remap=True, bias=0.2, noise=0.02, seed=5)
    res = register(case.fixed, case.moving, config=fast(preset("multimodal-affine")))
    err = case.target_error(res.transform, mask=mask)
    assert float(err.mean()) < max(t1.grid.spacing), float(err.mean())


@pytest.mark.slow
def test_smooth_deformation_recovered_without_folding(brain3mm):
    t1, _, mask = brain3mm
    u = smooth_displacement(t1.grid, max_mm=6.0, smoothness_mm=20.0, generator=torch.Generator().manual_seed(3))
    case = make_known_case(t1, matrix=np.eye(4), displacement=u)
    cfg = preset("deformable")
    cfg.stages = cfg.stages[-1:]
    cfg.init = "none"
    fast(cfg, levels=(2, 1), iterations=(60, 40))
    res = register(case.fixed, case.moving, config=cfg)
    before = case.target_error(lambda x: x, mask=mask).mean()
    err = case.target_error(res.transform, mask=mask)
    assert float(err.mean()) < max(t1.grid.spacing), float(err.mean())
    assert float(err.mean()) < 0.5 * float(before)
    stats = jacobian_statistics(res.deformable, t1.grid)
    assert stats.nonpositive_count == 0, stats


@pytest.mark.slow
def test_same_seed_same_result(brain4mm):
    t1, t2, _ = brain4mm
    case = _affine_case(t1, t2, bias=0.1, noise=0.02)
    cfg = fast(preset("multimodal-affine"), levels=(4, 2), iterations=(20, 10))
    a = register(case.fixed, case.moving, config=cfg).linear.matrix()
    b = register(case.fixed, case.moving, config=cfg).linear.matrix()
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.slow
def test_disa_stages_followed_by_one_exact_lc2_stage_recover_a_known_affine_to_lc2_precision():
    """The bundled 2 mm T1 vs synthetic T2w (bias, noise; moving field of view 50 mm larger per side) with the
    ``disa+lc2`` configuration of ``benchmarks/disa.py`` (the README's precision recipe with the benchmark's
    iterations): DISA rigid + affine stages (moments, global search, levels 2x and 1x) then one full-resolution
    affine LC2 stage. Measured there (same case): DISA alone ends 2.3 mm off (its objective's optimum lies
    there), with the LC2 stage 0.14 mm (LC2 alone 0.14 mm)."""
    from omnireg.data import sample_path
    from omnireg.io import load_image
    from omnireg.optim import StageConfig

    t1, t2, labels = (load_image(sample_path(n)) for n in ("t1", "t2w", "labels"))
    mask = labels.data[0] > 0
    centre = t1.grid.transform_points(np.argwhere(mask.numpy()).mean(0), "voxel", "world")
    case = make_known_case(t1, matrix=affine_matrix(ndim=3, center=centre, **TRUE_AFFINE), moving_source=t2,
                           moving_grid=t1.grid.padded(50.0), bias=0.2, noise=0.02, seed=0)
    cfg = preset("multimodal-affine")
    for st in cfg.stages:
        st.metric, st.metric_options, st.shrink, st.iterations, st.smoothing_mm = "disa", {}, [2, 1], [60, 30], None
    cfg.stages.append(StageConfig(transform="affine", metric="lc2", shrink=[1], iterations=[20]))
    res = register(case.fixed, case.moving, config=cfg.validate())
    err = float(case.target_error(res.transform, mask=mask).detach().mean())
    assert err < 0.5, err
    assert set(res.metric_after) == {"lc2"}
