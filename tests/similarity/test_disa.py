"""The DISA similarity: the feature dot product, masks, the dense form, model selection errors."""

import pytest
import torch

from omnireg.networks.disa import DISAConfig, DISANet, extract_features
from omnireg.networks.store import save_model
from omnireg.similarity import DISA, feature_dot, get_similarity


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("disa")
    out = {}
    for d in (2, 3):
        torch.manual_seed(d)
        out[d] = save_model(root / f"disa{d}.pt", DISANet(DISAConfig(ndim=d, patch_spacing_mm=2.0)), kind="disa")
    return out


def _unit(shape, seed):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(*shape, generator=g, dtype=torch.float64)
    return f / f.norm(dim=1, keepdim=True)


def test_feature_dot_of_unit_features_with_themselves_is_one():
    f = _unit((2, 16, 5, 6, 7), 0)
    torch.testing.assert_close(feature_dot(f, f), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(feature_dot(f, -f), -torch.ones(2, dtype=torch.float64))


def test_feature_dot_is_a_weighted_mean_that_ignores_zero_weight_voxels():
    a, b = _unit((1, 4, 6, 6), 1), _unit((1, 4, 6, 6), 2)
    w = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    w[..., :3, :] = 2.0
    expected = (a * b).sum(1)[..., :3, :].mean()
    torch.testing.assert_close(feature_dot(a, b, mask=w)[0], expected)
    b2 = b.clone()
    b2[..., 3:, :] = 100.0  # values where the weight is 0 do not matter
    torch.testing.assert_close(feature_dot(a, b2, mask=w), feature_dot(a, b, mask=w))


def test_feature_dot_gradcheck():
    a = _unit((2, 3, 4, 5), 3).requires_grad_()
    b = _unit((2, 3, 4, 5), 4).requires_grad_()
    w = torch.rand(2, 1, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(lambda x, y: feature_dot(x, y, mask=w), (a, b))


def test_dense_form_is_the_mean_dot_product_of_the_feature_maps(model_files):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(1, 1, 24, 20, 28, generator=g), torch.rand(1, 1, 24, 20, 28, generator=g)
    measure = get_similarity("disa", weights=str(model_files[3]))
    net = measure.model(3)
    expected = feature_dot(extract_features(net, x), extract_features(net, y))
    torch.testing.assert_close(measure(x, y, spacing=(2.0, 2.0, 2.0)), expected)
    assert -1.0 <= float(measure(x, y, spacing=(2.0, 2.0, 2.0))) <= 1.0


def test_dense_form_mask_is_read_at_the_stride_4_positions(model_files):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(1, 1, 24, 24, generator=g), torch.rand(1, 1, 24, 24, generator=g)
    measure = DISA(weights=str(model_files[2]))
    net = measure.model(2)
    fx, fy = extract_features(net, x), extract_features(net, y)
    mask = torch.zeros(1, 1, 24, 24)
    mask[..., :12, :] = 1
    expected = (fx * fy).sum(1)[..., :3, :].mean()
    torch.testing.assert_close(measure(x, y, mask=mask, spacing=(2.0, 2.0))[0], expected)


def test_dense_form_is_differentiable_in_the_moving_image(model_files):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 1, 16, 16, generator=g, dtype=torch.float64)
    y = torch.rand(1, 1, 16, 16, generator=g, dtype=torch.float64).requires_grad_()
    measure = DISA(weights=str(model_files[2]))
    assert torch.autograd.gradcheck(lambda m: measure(x, m, spacing=(2.0, 2.0)), (y,), atol=1e-5)
    with pytest.raises(ValueError, match="image_spacing_mm=None"):
        DISA(weights=str(model_files[2]), image_spacing_mm=1.0)(x, y, spacing=(2.0, 2.0))


def test_fine_images_are_resampled_to_the_model_spacing(model_files):
    from omnireg.core import Grid

    measure = DISA(weights=str(model_files[3]))
    grid = Grid((40, 36, 32), spacing=(0.5, 0.5, 0.5))
    feats, fgrid = measure.feature_level(torch.rand(1, 1, 40, 36, 32), grid)
    assert fgrid.spacing == pytest.approx((4.0, 4.0, 4.0)) and feats.shape[2:] == (5, 5, 4)  # resampled to 1 mm
    feats, fgrid = DISA(weights=str(model_files[3]), resample=False).feature_level(torch.rand(1, 1, 40, 36, 32), grid)
    assert fgrid.spacing == pytest.approx((2.0, 2.0, 2.0))
    feats, fgrid = DISA(weights=str(model_files[3]), upsample=True).feature_level(torch.rand(1, 1, 40, 36, 32), grid)
    assert fgrid == grid and feats.shape == (1, 16, 40, 36, 32)
    coarse = Grid((20, 18, 16), spacing=(2.0, 2.0, 2.0))
    feats, fgrid = DISA(weights=str(model_files[3]), image_spacing_mm=1.0).feature_level(torch.rand(1, 1, 20, 18, 16), coarse)
    assert fgrid.spacing == pytest.approx((4.0, 4.0, 4.0)) and feats.shape[2:] == (10, 9, 8)  # upsampled to 1 mm
    feats, fgrid = DISA(weights=str(model_files[3]), moving_stride=2).feature_level(torch.rand(1, 1, 20, 18, 16), coarse, moving=True)
    assert fgrid.spacing == pytest.approx((4.0, 4.0, 4.0)) and feats.shape[1:] == (17, 10, 9, 8)  # + the norm channel
    for bad in ({"moving_stride": 3}, {"image_spacing_mm": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DISA(**bad)


def test_model_of_the_wrong_dimension_is_a_clear_error(model_files):
    with pytest.raises(ValueError, match=r"weights: .*2D DISA model, the images are 3D"):
        DISA(weights=str(model_files[2]))(torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 8))
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        DISA(weights="nothere.pt")(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))


# ---------------------------------------------------------------------------------------------- shipped models
def _sample_case_2d():
    import numpy as np

    from omnireg.data import sample_path
    from omnireg.io import load_image
    from omnireg.training.synthetic import affine_matrix, make_known_case

    t1, pd = load_image(sample_path("t1_2d")), load_image(sample_path("pd_2d"))
    mask = t1.data[0] > 0.1 * t1.data.max()
    centre = t1.grid.transform_points(np.argwhere(mask.numpy()).mean(0), "voxel", "world")
    m = affine_matrix(ndim=2, rotation_deg=(12.0,), translation_mm=(8.0, -6.0), scale=(1.06, 0.95), center=centre)
    return make_known_case(t1, matrix=m, moving_source=pd, bias=0.2, noise=0.02, seed=3), mask


def test_shipped_2d_model_recovers_a_known_affine_between_t1_and_pd():
    from omnireg.optim import preset, register

    case, mask = _sample_case_2d()
    cfg = preset("multimodal-affine")
    for st in cfg.stages:
        st.metric, st.metric_options, st.shrink, st.iterations, st.smoothing_mm = "disa", {}, [2, 1], [60, 30], None
    before = float(case.target_error(lambda x: x, mask=mask).mean())
    res = register(case.fixed, case.moving, config=cfg)
    err = float(case.target_error(res.transform, mask=mask).mean())
    assert before > 10.0 and err < 1.5, (before, err)  # 1 mm pixels
    assert res.metric_after["disa"] > res.metric_before["disa"]


def test_norm_restore_rescales_interpolated_vectors_to_the_interpolated_norm():
    from omnireg.similarity.disa import DISAFeatures, norm_restore

    a, b = torch.tensor([0.6, 0.0]), torch.tensor([0.0, 0.8])
    stack = torch.stack([torch.cat([a, a.norm()[None]]), torch.cat([b, b.norm()[None]])], dim=1).reshape(1, 3, 2, 1)
    mid = 0.5 * (stack[:, :, :1] + stack[:, :, 1:])  # linear interpolation half-way between two nodes
    out = norm_restore(mid)
    torch.testing.assert_close(out.norm(dim=1).reshape(()), torch.tensor(0.7))  # plain interpolation: 0.5
    torch.testing.assert_close(out[:, :, 0, 0] / 0.7, torch.tensor([[0.6, 0.8]]))  # direction kept
    torch.testing.assert_close(norm_restore(stack), stack[:, :2])  # identity at the nodes
    fixed = torch.tensor([0.6, 0.8]).reshape(1, 2, 1, 1)
    torch.testing.assert_close(DISAFeatures()(fixed, mid), torch.tensor([0.7]))


def test_interpolated_moving_features_are_not_biased_towards_the_feature_lattice():
    """Moving grid one voxel larger on the low side: the stride-4 lattices coincide at a shift of -1 voxel."""
    import numpy as np

    from omnireg.core import Grid, sample
    from omnireg.core.intensity import robust_normalize
    from omnireg.data import sample_path
    from omnireg.io import load_image

    t1, t2 = load_image(sample_path("t1")), load_image(sample_path("t2w"))
    g = t1.grid
    mg = Grid(tuple(s + 1 for s in g.shape), g.spacing, tuple(g.transform_points(-np.ones(3), "voxel", "world").tolist()), g.direction)
    pts = g.transform_points(mg.points("world", dtype=torch.float64), "world", "voxel")
    mdata = sample(robust_normalize(t2.batch().float()), pts[None].float(), interp="linear", padding="zeros")
    shifts = np.linspace(-1.5, 1.5, 13)  # voxels along the diagonal
    best = {}
    for restore in (False, True):
        m = DISA(norm_restore=restore)
        ff, fgrid = m.feature_level(robust_normalize(t1.batch().float()), g)
        mf, mgrid = m.feature_level(mdata, mg, moving=True)
        assert mf.shape[1] == 16 + restore
        nodes = fgrid.points("world", dtype=torch.float64)
        vals = []
        for k in shifts:
            step = torch.tensor(g.direction, dtype=torch.float64) @ torch.full((3,), k * g.spacing[0], dtype=torch.float64)
            vox = mgrid.transform_points(nodes + step, "world", "voxel")
            vals.append(float(m.feature_similarity()(ff, sample(mf, vox[None].float(), interp="linear", padding="zeros"))))
        best[restore] = shifts[int(np.argmax(vals))]
    assert best[False] == -1.0  # plain interpolation: the optimum is where the lattices coincide
    assert abs(best[True]) <= 0.25, best  # norm_restore: at the true alignment


def test_scores_equal_forward_with_the_fixed_features_computed_once(monkeypatch, tmp_path):
    """DISA.scores (the engine's before/after similarity) = forward per moving image, one fixed extraction."""
    torch.manual_seed(0)
    path = save_model(tmp_path / "m.pt", DISANet(DISAConfig(ndim=2, patch_spacing_mm=2.0)), kind="disa")
    metric = DISA(weights=str(path))
    g = torch.Generator().manual_seed(1)
    f = torch.rand((1, 1, 40, 36), generator=g)
    ms = [torch.rand((1, 1, 40, 36), generator=g) for _ in range(2)]
    ws = [None, (torch.rand((1, 1, 40, 36), generator=g) > 0.4).float()]
    expected = [metric(f, m, mask=w, spacing=(2.0, 2.0)) for m, w in zip(ms, ws)]
    calls = []
    real = metric.feature_level
    monkeypatch.setattr(metric, "feature_level", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = metric.scores(f, ms, ws, spacing=(2.0, 2.0))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len(calls) == 3  # the fixed image once, each moving image once
    with pytest.raises(ValueError, match="masks"):
        metric.scores(f, ms, ws[:1])
