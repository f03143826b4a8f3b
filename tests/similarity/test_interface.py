"""Properties shared by every measure: registry, shapes, dtypes, batching, masks, validation, gradients."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

import omnireg.similarity as S
from omnireg.similarity import Metric, SimilarityMeasure, get_similarity, register_similarity

# small options so that every case runs on 12^2 / 10^3 images
CASES = {
    "mse": {},
    "ncc": {},
    "lncc": {"window": 5},
    "mi": {"bins": 12},
    "nmi": {"bins": 12},
    "ngf": {},
    "lc2": {"radius": 2},
    "mind": {"radius": 1, "dilation": 1},
}
NAMES = sorted(CASES)
BUILTIN = ["mse", "ncc", "lncc", "mi", "nmi", "ngf", "lc2", "mind"]


def measure(name: str, **extra) -> SimilarityMeasure:
    return get_similarity(name, **{**CASES[name], **extra})


def pair(field, shape, dtype=torch.float64, seed=0):
    f = field(shape, seed=seed, dtype=dtype)
    m = (f + 0.3 * field(shape, seed=seed + 100, dtype=dtype)) ** 2  # related but not identical
    return f, m


# ------------------------------------------------------------------------------------------ registry
def test_registry_lists_every_builtin_measure():
    assert set(BUILTIN) <= set(S.available_similarities())
    assert {m.value for m in Metric} >= set(BUILTIN) | {"disa", "mad", "deepsim"}


@pytest.mark.parametrize("name", BUILTIN)
def test_get_similarity_accepts_enum_and_string(name):
    a = get_similarity(name)
    b = get_similarity(Metric(name))
    c = get_similarity(name.upper())
    assert type(a) is type(b) is type(c)
    assert isinstance(a, SimilarityMeasure) and a.metric == name


def test_unknown_name_raises_value_error_listing_registered_names():
    with pytest.raises(ValueError, match="name: expected one of .*'mse'"):
        get_similarity("not-a-metric")


def test_learned_name_not_registered_yet_says_so(monkeypatch):
    from omnireg.similarity import base

    monkeypatch.delitem(base._REGISTRY, "deepsim")  # as before its module is imported
    assert "deepsim" not in S.available_similarities()
    with pytest.raises(ValueError, match="not registered yet"):
        get_similarity(Metric.DEEPSIM)


def test_learned_measures_are_registered_on_import():
    assert {"disa", "mad", "deepsim"} <= set(S.available_similarities())


def test_register_similarity_hook_and_overwrite_guard():
    class Dummy(SimilarityMeasure):
        def __init__(self, *, scale=1.0):
            super().__init__()
            self.scale = scale

        def forward(self, fixed, moving, mask=None, *, spacing=None):
            return -self.scale * S.mse(fixed, moving, mask=mask)

    register_similarity("test-dummy-measure", Dummy)
    try:
        m = get_similarity("test-dummy-measure", scale=2.0)
        x = torch.zeros(1, 1, 4, 4)
        assert torch.equal(m.loss(x, x + 1), torch.tensor([-2.0]))
        with pytest.raises(ValueError, match="already registered"):
            register_similarity("test-dummy-measure", lambda **kw: Dummy(**kw))
        with pytest.raises(TypeError, match="factory"):
            register_similarity("test-other", 3)
    finally:
        S.base._REGISTRY.pop("test-dummy-measure", None)


def test_invalid_option_names_the_argument():
    with pytest.raises(ValueError, match="kernel"):
        get_similarity("lncc", kernel="triangle")
    with pytest.raises(ValueError, match="bins"):
        get_similarity("mi", bins=2)
    with pytest.raises(ValueError, match="eps"):
        get_similarity("ngf", eps=0.0)
    with pytest.raises(ValueError, match="alpha"):
        get_similarity("lc2", alpha=-1.0)
    with pytest.raises(ValueError, match="radius"):
        get_similarity("lc2", radius=0)
    with pytest.raises(ValueError, match="window_unit"):
        get_similarity("lncc", window_unit="inch")
    with pytest.raises(TypeError, match="generator"):
        get_similarity("mi", generator=3)


# ------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(12, 13), (9, 10, 11)])
def test_output_shape_dtype_and_loss_is_negative_similarity(name, shape, field):
    f, m = pair(field, shape, dtype=torch.float32)
    mod = measure(name)
    sim = mod(f, m)
    assert sim.shape == (1,) and sim.dtype == torch.float32 and torch.isfinite(sim).all()
    assert torch.equal(mod.loss(f, m), -sim)
    f64, m64 = f.double(), m.double()
    sim64 = mod(f64, m64)
    assert sim64.dtype == torch.float64
    torch.testing.assert_close(sim64.float(), sim, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(12, 13), (9, 10, 11)])
def test_batch_of_two_equals_separate_calls(name, shape, field):
    f1, m1 = pair(field, shape, seed=1)
    f2, m2 = pair(field, shape, seed=2)
    w1 = (field(shape, seed=3) > 0.2).double()
    w2 = torch.ones_like(w1)
    mod = measure(name)
    batch = mod(torch.cat([f1, f2]), torch.cat([m1, m2]), torch.cat([w1, w2]))
    single = torch.cat([mod(f1, m1, w1), mod(f2, m2, w2)])
    torch.testing.assert_close(batch, single, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_batch_one_fixed_is_broadcast(name, field):
    f, m1 = pair(field, (12, 12), seed=1)
    m2 = pair(field, (12, 12), seed=2)[1]
    mod = measure(name)
    out = mod(f, torch.cat([m1, m2]))
    torch.testing.assert_close(out, torch.cat([mod(f, m1), mod(f, m2)]))


@pytest.mark.parametrize("name", NAMES)
def test_identical_images_score_at_least_as_well_as_different_ones(name, field):
    f, m = pair(field, (14, 14))
    mod = measure(name)
    assert mod(f, f) >= mod(f, m)


# ------------------------------------------------------------------------------------------ maximal at zero shift
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(16, 17), (12, 12, 13)])
def test_maximal_at_zero_shift(name, shape, crops, shifts):
    fixed, moved = crops(shape, shifts(len(shape)), margin=3, seed=5)
    mod = measure(name)
    at_zero = mod(fixed, fixed)
    for s, m in zip(shifts(len(shape)), moved):
        assert at_zero > mod(fixed, m), f"{name}: shift {s} scores {float(mod(fixed, m))} >= {float(at_zero)}"


# ------------------------------------------------------------------------------------------ masks
@pytest.mark.parametrize("name", NAMES)
def test_zero_mask_weights_ignore_corrupted_values(name, field):
    """Values where w = 0 (beyond the stencil reach for NGF and MIND) do not change the measure."""
    shape = (16, 16)
    f, m = pair(field, shape)
    reach = {"ngf": 1, "mind": 2}.get(name, 0)  # mind: dilation 1 + radius 1
    mask = torch.ones_like(f)
    mask[..., 10:, :] = 0.0
    corrupted = m.clone()
    corrupted[..., 10 + reach :, :] = torch.linspace(-50, 80, 16 * (6 - reach), dtype=m.dtype).view(1, 1, -1, 16)
    mod = measure(name)
    torch.testing.assert_close(mod(f, corrupted, mask), mod(f, m, mask), rtol=1e-9, atol=1e-12)
    assert not torch.allclose(mod(f, corrupted), mod(f, m))  # without the mask they do


@pytest.mark.parametrize("name", NAMES)
def test_mask_is_a_weighted_mean_not_a_sum(name, field):
    """Scaling all weights leaves the measure unchanged; a boolean mask acts as weights 0/1."""
    f, m = pair(field, (14, 14))
    w = (field((14, 14), seed=9) > 0.3).double()
    mod = measure(name)
    torch.testing.assert_close(mod(f, m, 7.0 * w), mod(f, m, w), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(mod(f, m, w.bool()), mod(f, m, w))


@pytest.mark.parametrize("name", NAMES)
def test_empty_mask_raises(name, field):
    f, m = pair(field, (10, 10))
    mask = torch.ones(2, 1, 10, 10, dtype=f.dtype)
    mask[1] = 0
    with pytest.raises(ValueError, match=r"mask: empty support .*\[1\]"):
        measure(name)(f.expand(2, -1, -1, -1), m.expand(2, -1, -1, -1), mask)


def test_mask_validation_errors(field):
    f, m = pair(field, (10, 10))
    with pytest.raises(ValueError, match="mask: expected weights of shape"):
        S.mse(f, m, mask=torch.ones(1, 2, 10, 10, dtype=f.dtype))
    with pytest.raises(ValueError, match="mask: expected non-negative"):
        S.mse(f, m, mask=-torch.ones_like(f))
    with pytest.raises(TypeError, match="mask"):
        S.mse(f, m, mask=[[1.0]])


# ------------------------------------------------------------------------------------------ input validation
def test_input_validation_errors():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="fixed: expected shape"):
        S.ncc(torch.rand(8, 8), torch.rand(8, 8))
    with pytest.raises(ValueError, match="moving: expected shape"):
        S.ncc(x, torch.rand(1, 1, 8, 9))
    with pytest.raises(TypeError, match="moving: expected the dtype"):
        S.ncc(x, x.double())
    with pytest.raises(TypeError, match="floating-point"):
        S.ncc(x, torch.ones(1, 1, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="batch size"):
        S.ncc(torch.rand(2, 1, 8, 8), torch.rand(3, 1, 8, 8))
    with pytest.raises(ValueError, match="spacing: expected 2 values"):
        S.lncc(x, x, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing: expected positive"):
        S.ngf(x, x, spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match="fixed: expected 1 channel"):
        S.lc2(torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 8))


# ------------------------------------------------------------------------------------------ gradients
GRAD_OPTIONS = {
    "mse": {},
    "ncc": {},
    "lncc": {"window": 3},
    "mi": {"bins": 6},
    "nmi": {"bins": 6},
    "ngf": {},
    "lc2": {"radius": 1},
    "mind": {"radius": 1, "dilation": 1},
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(6, 7), (4, 5, 5)])
def test_gradcheck_float64(name, shape, field):
    f, m = pair(field, shape, seed=4)
    f = f + 0.01 * torch.rand(f.shape, generator=torch.Generator().manual_seed(1), dtype=f.dtype)
    m = m + 0.01 * torch.rand(m.shape, generator=torch.Generator().manual_seed(2), dtype=m.dtype)
    w = 0.5 + torch.rand(f.shape, generator=torch.Generator().manual_seed(3), dtype=f.dtype)
    mod = get_similarity(name, **GRAD_OPTIONS[name])
    f.requires_grad_(True)
    m.requires_grad_(True)
    w.requires_grad_(True)
    # full Jacobians in 2D; in 3D the fast mode (random projections of the Jacobian) keeps it quick
    fast = len(shape) == 3
    assert torch.autograd.gradcheck(
        lambda a, b, c: mod(a, b, c), (f, m, w), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=fast
    )


# ------------------------------------------------------------------------------------------ docs
@pytest.mark.parametrize(
    "module", ["base", "lncc", "mse_ncc", "mi", "ngf", "lc2", "mind", "enums", "_common"]
)
def test_docstring_examples_run(module):
    mod = importlib.import_module(f"omnireg.similarity.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
