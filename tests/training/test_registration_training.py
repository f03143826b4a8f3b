"""Registration training: outputs, validation Dice, exact resume, 2D, the model registry, batch sharding and DDP."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.multiprocessing as mp

from omnireg.networks.store import load_model, read_model_file
from omnireg.training.distributed import DistContext
from omnireg.training.labelmaps import LabelMapSet, read_prepared_index
from omnireg.training.loop import FitConfig
from omnireg.training.pairs import LabelMapImages, LabelMapPairs
from omnireg.training.registration import (
    RegistrationTrainConfig,
    available_registration_models,
    build_registration_model,
    dice_per_structure,
    load_initial_weights,
    register_registration_model,
    train_registration,
)
from omnireg.training.synthesis import SynthesisConfig

TINY = {"enc_channels": [4, 8], "dec_channels": [8, 8, 4]}


def _config(steps: int = 4, **kw) -> RegistrationTrainConfig:
    fit = FitConfig(steps=steps, lr=3e-3, warmup=1, seed=kw.pop("seed", 1), checkpoint_every=2, weight_decay=0.0)
    return RegistrationTrainConfig(model=kw.pop("model", "voxelmorph-diff"), model_options=TINY,
                                   synthesis=SynthesisConfig(deform_std_max_vox=1.0, deform_spacing_vox=4.0),
                                   val_every=2, fit=fit, **kw)


def test_training_writes_a_loadable_model_a_log_and_validation_dice(tiny_label_maps, tmp_path):
    out = tmp_path / "vm.pt"
    meta = train_registration(_config(loss="lncc:1,dice:1", batch_size=2), out, label_maps=tiny_label_maps,
                              meta={"command": "test"})
    model, saved = load_model(out)
    assert model.config.diffeomorphic and list(model.config.enc_channels) == [4, 8]
    assert saved["steps_done"] == 4 and saved["command"] == "test"
    assert saved["data"]["train_subjects"] == ["s0", "s1", "s2"] and saved["data"]["validation_subjects"] == ["s3", "s4"]
    assert saved["data"]["prepared_json_sha256"] and "t0" in saved["data"]["test_subjects_never_read"]
    v = saved["validation"]
    assert 0 < v["dice"] <= 1 and 0 < v["dice_identity"] <= 1 and v["pairs"] == 2
    assert [r["step"] for r in saved["validation_history"]] == [2, 4]
    lines = [json.loads(x) for x in (tmp_path / "vm.log.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert set(steps[0]["terms"]) == {"lncc", "dice", "reg_diffusion"} and steps[0]["lr"] > 0
    assert [r["validation"]["step"] for r in lines if "validation" in r] == [2, 4]
    assert (tmp_path / "vm.pt.ckpt").is_file() and meta["steps_done"] == 4


def test_resume_after_a_time_budget_stop_is_exact(tiny_label_maps, tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    train_registration(_config(), a, label_maps=tiny_label_maps)
    first = train_registration(_config(), b, label_maps=tiny_label_maps, max_minutes=0.0)
    assert first["stopped_early"] and first["steps_done"] == 1
    assert read_model_file(b)["meta"]["steps_done"] == 1  # a usable model file is left behind
    train_registration(_config(), b, label_maps=tiny_label_maps, resume=True)
    sa, sb = read_model_file(a)["state_dict"], read_model_file(b)["state_dict"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=1e-7)
    steps = [json.loads(x)["step"] for x in (tmp_path / "b.log.jsonl").read_text().splitlines() if "loss" in x]
    assert steps == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="different"):
        train_registration(_config(loss="mse"), b, label_maps=tiny_label_maps, resume=True)


def test_resuming_a_finished_run_leaves_its_model_file_as_it_is(tiny_label_maps, tmp_path):
    # a finished run resumed (e.g. a training script re-run with --resume) once rewrote the shipped model file with
    # the resume's command and its 1-second wall time: the provenance of the run that made the weights was lost
    out = tmp_path / "m.pt"
    train_registration(_config(steps=2, ndim=2), out, label_maps=tiny_label_maps)
    before = out.read_bytes()
    meta = train_registration(_config(steps=2, ndim=2), out, label_maps=tiny_label_maps, resume=True,
                              meta={"command": "omnireg train registration ... --resume"})
    assert meta["steps_done"] == 2
    assert out.read_bytes() == before


def test_init_from_starts_with_the_given_weights_and_records_them(tiny_label_maps, tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    train_registration(_config(steps=2, ndim=2), a, label_maps=tiny_label_maps)
    zero = _config(steps=1, ndim=2)
    zero.fit.lr = 0.0  # a step that cannot move the weights: the model must equal the one it started from
    meta = train_registration(zero, b, label_maps=tiny_label_maps, init_from=a)
    sa, sb = read_model_file(a)["state_dict"], read_model_file(b)["state_dict"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)
    init = meta["data"]["init_from"]
    assert init["path"] == str(a) and len(init["sha256"]) == 64 and init["steps_done"] == 2
    other = build_registration_model("voxelmorph-diff", 2, enc_channels=[4, 4], dec_channels=[8, 8, 4])
    with pytest.raises(ValueError, match=r"^--init-from: .*another architecture \(enc_channels differ\)"):
        load_initial_weights(other, "voxelmorph-diff", a, name="--init-from")
    with pytest.raises(ValueError, match="holds a 'voxelmorph-diff' model, expected 'voxelmorph'"):
        train_registration(_config(steps=1, ndim=2, model="voxelmorph"), tmp_path / "c.pt", label_maps=tiny_label_maps,
                           init_from=a)


def test_two_dimensional_training_on_slices(tiny_label_maps, tmp_path):
    meta = train_registration(_config(steps=2, ndim=2, model="voxelmorph"), tmp_path / "m2.pt", label_maps=tiny_label_maps)
    model, _ = load_model(tmp_path / "m2.pt")
    assert model.config.ndim == 2 and not model.config.diffeomorphic
    assert meta["validation"]["pairs"] == 2 * 3  # ordered pairs of 2 subjects, 3 slices each


def test_dice_per_structure_exact():
    f = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    f[..., :2] = 1
    f[..., 3] = 2
    w = torch.zeros_like(f)
    w[..., 1:3] = 1  # structure 1: overlap 4, sizes 8 and 8 -> 0.5; structure 2 missed -> 0; 3 absent -> NaN
    d = dice_per_structure(w, f, 4)
    assert d[0, 0].item() == pytest.approx(0.5) and d[0, 1].item() == 0.0 and torch.isnan(d[0, 2])


def test_model_registry_takes_one_line_per_model():
    assert {"voxelmorph", "voxelmorph-diff"} <= set(available_registration_models())
    register_registration_model("test-tiny-vm", lambda ndim, **kw: build_registration_model("voxelmorph", ndim, **TINY))
    net = build_registration_model("test-tiny-vm", 2)
    assert net.ndim == 2 and net.kind == "voxelmorph"
    with pytest.raises(ValueError, match="model: expected one of"):
        build_registration_model("transmorph", 3)


def test_global_batch_does_not_depend_on_the_number_of_processes(tiny_label_maps):
    index = read_prepared_index(tiny_label_maps)
    maps = LabelMapSet.load(tiny_label_maps, index["split"]["train"])
    pairs = LabelMapPairs(maps, SynthesisConfig())
    one = pairs.batch(5, 3, 4)
    parts = [pairs.batch(5, 3, 4, DistContext(r, 2, r)) for r in range(2)]
    assert torch.equal(one.moving, torch.cat([p.moving for p in parts]))
    assert torch.equal(one.fixed_labels, torch.cat([p.fixed_labels for p in parts]))
    with pytest.raises(ValueError, match="divisible"):
        pairs.batch(5, 3, 3, DistContext(0, 2, 0))


def _ddp_worker(rank: int, world: int, init_file: str, maps: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        train_registration(_config(steps=3, batch_size=2), out, label_maps=maps, dist=DistContext(rank, world, rank))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_global_batch(tiny_label_maps, tmp_path):
    """DDP (gloo, CPU): 2 processes with 1 pair each == 1 process with 2 pairs, after 3 AdamW steps."""
    single = tmp_path / "single.pt"
    train_registration(_config(steps=3, batch_size=2), single, label_maps=tiny_label_maps)
    ddp = tmp_path / "ddp.pt"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # fork: the workers inherit the imported modules (spawn would re-import torch in each, ~10 s)
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "pg_init"), str(tiny_label_maps), str(ddp)), nprocs=2,
                       join=True, start_method="fork")
    s1, s2 = read_model_file(single), read_model_file(ddp)
    assert s2["meta"]["processes"] == 2
    moved = 0.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)  # the training's seeded initialisation
        init = build_registration_model("voxelmorph-diff", 3, **TINY).state_dict()
    for k, v in s1["state_dict"].items():
        torch.testing.assert_close(s2["state_dict"][k], v, rtol=1e-4, atol=1e-6)
        moved = max(moved, float((v - init[k]).abs().max()))
    assert moved > 1e-4  # the weights did change (the comparison is not trivially true)


def test_single_image_batches_for_segmenters(tiny_label_maps):
    index = read_prepared_index(tiny_label_maps)
    maps = LabelMapSet.load(tiny_label_maps, index["split"]["train"])
    source = LabelMapImages(maps, SynthesisConfig(), ndim=2)
    images, labels = source.batch(0, 7, 2)
    assert images.shape == labels.shape == (2, 1, 16, 20) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and 0 < int(labels.max()) < source.classes
    again = torch.cat([source.batch(0, 7, 2, DistContext(r, 2, r))[0] for r in range(2)])
    assert torch.equal(images, again)
