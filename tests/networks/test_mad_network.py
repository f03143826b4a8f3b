"""The MAD distance network: shapes, save/load round trip, and the shipped weights on held-out data."""

import pytest
import torch

from omnireg.data import sample_path
from omnireg.networks.mad import MADConfig, MADNet, structure_features
from omnireg.networks.store import load_model, packaged_weights, save_model


@pytest.mark.parametrize("ndim, size", [(2, 24), (3, 16)])
def test_output_is_one_non_negative_distance_per_pair(ndim, size):
    net = MADNet(MADConfig(ndim=ndim, patch_size=size))
    x = torch.rand(5, 2, *([size] * ndim), generator=torch.Generator().manual_seed(0))
    y = net(x)
    assert y.shape == (5,) and bool((y >= 0).all())


def test_wrong_input_shape_names_the_expected_one():
    net = MADNet(MADConfig(ndim=3, patch_size=16))
    with pytest.raises(ValueError, match=r"pair: expected shape \(N, 2, 16, 16, 16\)"):
        net(torch.zeros(1, 2, 16, 16))
    with pytest.raises(ValueError, match="ndim"):
        MADConfig(ndim=4)


def test_structure_features_ignore_brightness_and_contrast_of_each_patch():
    g = torch.Generator().manual_seed(1)
    pair = torch.rand(3, 2, 12, 12, generator=g)
    scaled = pair * torch.tensor([3.0, 0.5]).view(1, 2, 1, 1) + torch.tensor([0.2, -1.0]).view(1, 2, 1, 1)
    a = structure_features(pair, floor=0.0)
    b = structure_features(scaled, floor=0.0)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_save_load_round_trip_gives_the_same_predictions(tmp_path):
    torch.manual_seed(0)
    net = MADNet(MADConfig(ndim=2, patch_size=16, widths=(4, 8, 8, 8))).eval()
    path = save_model(tmp_path / "m.pt", net, kind="mad", meta={"note": "test"})
    loaded, meta = load_model(path, kind="mad")
    x = torch.rand(4, 2, 16, 16, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(loaded(x), net(x))
    assert meta["note"] == "test" and loaded.config == net.config


@pytest.fixture(scope="module")
def shipped_report():
    """Validation of the shipped weights on the bundled sample (held out from training), both dimensions."""
    from omnireg.similarity.mad import load_mad_model
    from omnireg.training.mad import MADTrainConfig, load_mad_volume, mad_validation

    out = {}
    for ndim, (a, b) in {3: ("t1", "t2w"), 2: ("t1_2d", "pd_2d")}.items():
        packaged_weights(f"mad_{ndim}d")  # raises if not shipped
        model = load_mad_model(None, ndim)
        c = model.config
        cfg = MADTrainConfig(network=c)
        load = lambda n: load_mad_volume(sample_path(n), spacing_mm=cfg.spacing)  # noqa: E731
        va, vb = load(a), load(b)
        out[ndim] = mad_validation(model, volumes=[va], pairs=[(va, vb)], config=cfg, per_distance=16, appearances=4)
    return out


@pytest.mark.parametrize("ndim", [3, 2])
def test_shipped_weights_on_a_held_out_real_pair_small_at_identical_positions_and_growing_with_offset(shipped_report, ndim):
    # the bundled aligned two-contrast pair (3D: T1 vs synthetic T2w; 2D: T1 vs PD), never trained on
    summary = next(iter(shipped_report[ndim]["pairs"].values()))
    curve = {round(r["true_mm"]): r["pred_mean_mm"] for r in summary["curve"]}
    assert curve[0] < 5.0, curve
    assert curve[16] > curve[0] + 5.0, curve
    assert curve[32] > curve[4] + 5.0, curve
    assert summary["spearman"] > 0.6, summary["spearman"]


@pytest.mark.parametrize("ndim", [3, 2])
def test_shipped_weights_on_random_convolutions_of_a_held_out_image_grow_with_offset(shipped_report, ndim):
    # the bundled T1 under 4 pairs of unseen random-convolution appearances (harder than real contrasts:
    # some appearances hide most structure, so the median is used at distance 0)
    summary = next(iter(shipped_report[ndim]["volumes"].values()))
    pts = next(v for k, v in shipped_report[ndim]["points"].items() if k.startswith("volumes:"))
    true, pred = torch.tensor(pts["true"]), torch.tensor(pts["pred"])
    curve = {round(r["true_mm"]): r["pred_mean_mm"] for r in summary["curve"]}
    assert float(pred[true == 0].median()) < 8.0, curve
    assert curve[16] > curve[0] + 3.0, curve
    assert curve[32] > curve[4] + 5.0, curve
    assert summary["spearman"] > 0.5, summary["spearman"]
