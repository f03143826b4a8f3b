"""``omnireg batch``: failures are recorded and do not stop the others, reruns resume, Dask gives the same results."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from omnireg.batch import load_complete_result, read_pairs, run_batch, thread_limit
from omnireg.io import read_linear_transform

IDS = [f"p{i}" for i in range(6)]


def _run(parser, argv: list[str]) -> int:
    args = parser.parse_args(["batch", *argv])
    return args.func(args)


def _summary(out: Path) -> dict[str, dict]:
    with open(out / "summary.csv", newline="") as fh:
        return {r["id"]: r for r in csv.DictReader(fh)}


def _mtimes(out: Path, ids: list[str]) -> dict[str, float]:
    return {i: (out / i / "result.json").stat().st_mtime_ns for i in ids}


def test_a_corrupt_pair_is_recorded_and_the_others_complete(cohort, batch_parser, capsys):
    out = cohort / "out"
    rc = _run(batch_parser, [str(cohort / "pairs.csv"), "--out", str(out), "--config", str(cohort / "config.yaml"),
                             "--no-dask", "--no-progress"])
    assert rc == 1  # some pairs failed
    rows = _summary(out)
    assert list(rows) == IDS
    assert [i for i in IDS if rows[i]["status"] == "done"] == ["p0", "p1", "p2", "p4", "p5"]
    assert rows["p3"]["status"] == "failed" and rows["p3"]["error_type"] == "ValueError"
    assert "moving3.nii.gz" in rows["p3"]["error"] and "\n" not in rows["p3"]["error"]
    error = json.loads((out / "p3" / "error.json").read_text())
    assert error["error_type"] == "ValueError" and error["error"] == rows["p3"]["error"]
    assert not (out / "p3" / "result.json").exists()
    for i in ["p0", "p1", "p2", "p4", "p5"]:
        result = load_complete_result(out / i)
        assert result is not None, i
        assert {"warped.nii.gz", "transform.h5", "linear.mat", "warped_labels.nii.gz"} <= {p.name for p in (out / i).iterdir()}
        # the shift is recovered: landmark TRE well below the voxel size, Dice not worse than before
        lm = result["evaluation"]["landmarks"]
        assert lm["after"]["tre_mean_mm"] < 0.3 and lm["count"] == 3
        assert float(rows[i]["tre_mean_mm"]) == pytest.approx(lm["after"]["tre_mean_mm"])
        labels = result["evaluation"]["labels"]
        assert labels["labels"] == 2 and labels["dice_mean"] >= labels["dice_mean_before"] - 1e-9
        assert float(rows[i]["metric_after"]) >= float(rows[i]["metric_before"]) - 1e-6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 5, "skipped": 0, "failed": 1, "invalid": 0, "pending": 0}
    assert [p["status"] for p in summary["pairs"]] == [rows[i]["status"] for i in IDS]
    printed = capsys.readouterr().out
    assert "5 done, 0 skipped, 1 failed" in printed and "p3  failed  ValueError" in printed
    assert not (out / ".omnireg-staging").exists()


@pytest.mark.slow
def test_a_rerun_skips_finished_pairs_and_retries_the_failed_one(cohort, batch_parser, caplog, kit):
    out = cohort / "out"
    argv = [str(cohort / "pairs.csv"), "--out", str(out), "--config", str(cohort / "config.yaml"), "--no-dask",
            "--no-progress"]
    assert _run(batch_parser, argv) == 1
    finished = ["p0", "p1", "p2", "p4", "p5"]
    before = _mtimes(out, finished)

    # still corrupt: skipped five, retried and failed again
    caplog.set_level("INFO", logger="omnireg.batch")
    assert _run(batch_parser, argv) == 1
    rows = _summary(out)
    assert [rows[i]["status"] for i in IDS] == ["skipped"] * 3 + ["failed"] + ["skipped"] * 2
    assert _mtimes(out, finished) == before
    assert sum("skipped" in r.getMessage() and r.name == "omnireg.batch.runner" for r in caplog.records) >= 5
    assert any("retrying the failed pair" in r.getMessage() for r in caplog.records)
    # skipped rows keep the metrics of the finished run
    assert rows["p1"]["tre_mean_mm"] != "" and float(rows["p1"]["runtime_s"]) > 0

    # repaired: the failed pair is retried and replaces its error.json with results
    for f in (cohort / "data").glob("moving3*"):
        f.unlink()
    kit.write_case(cohort / "data", "moving3", kit.grid, kit.shifts_mm[3])
    assert _run(batch_parser, argv) == 0
    rows = _summary(out)
    assert [rows[i]["status"] for i in IDS] == ["skipped"] * 3 + ["done"] + ["skipped"] * 2
    assert _mtimes(out, finished) == before
    assert not (out / "p3" / "error.json").exists() and load_complete_result(out / "p3") is not None

    # --force recomputes everything, with the same results (same seed)
    m1 = read_linear_transform(out / "p1" / "linear.mat")
    assert _run(batch_parser, [*argv, "--force"]) == 0
    assert {r["status"] for r in _summary(out).values()} == {"done"}
    assert all(t > before[i] for i, t in _mtimes(out, finished).items())
    np.testing.assert_allclose(read_linear_transform(out / "p1" / "linear.mat"), m1, atol=1e-6)


def test_results_of_another_configuration_are_not_silently_mixed(cohort, batch_parser):
    out = cohort / "out"
    argv = [str(cohort / "pairs.csv"), "--out", str(out), "--config", str(cohort / "config.yaml"), "--no-dask",
            "--no-progress"]
    _run(batch_parser, argv)
    with pytest.raises(ValueError, match=r"another configuration \(seed differs\); use --force"):
        _run(batch_parser, [*argv, "--seed", "3"])


def test_a_pair_folder_with_foreign_files_is_refused_before_anything_runs(cohort, batch_parser):
    out = cohort / "out"
    (out / "p2").mkdir(parents=True)
    (out / "p2" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"p2.*holds files no batch wrote \(notes.txt\); use --force"):
        _run(batch_parser, [str(cohort / "pairs.csv"), "--out", str(out), "--config", str(cohort / "config.yaml"),
                            "--no-dask", "--no-progress"])
    assert sorted(p.name for p in out.iterdir()) == ["p2"]


@pytest.mark.slow
def test_the_dask_local_cluster_gives_the_results_of_the_sequential_run(cohort):
    """Two worker processes, two pairs: same seed, same transforms as in-process; the failure is recorded too."""
    pytest.importorskip("distributed")
    pairs = [p for p in read_pairs(cohort / "pairs.csv") if p.id in ("p1", "p3", "p4")]
    config = str(cohort / "config.yaml")
    import yaml

    cfg = yaml.safe_load(Path(config).read_text())
    seen = []
    res = run_batch(pairs, cohort / "dask", cfg, workers=2, threads_per_task=1, on_pair_done=seen.append)
    assert res.counts["done"] == 2 and res.failed == ["p3"]
    assert sorted(r["id"] for r in seen) == ["p1", "p3", "p4"]
    assert json.loads((cohort / "dask" / "p3" / "error.json").read_text())["error_type"] == "ValueError"
    ref = run_batch([p for p in pairs if p.id != "p3"], cohort / "seq", cfg, workers=0)
    for i in ("p1", "p4"):
        meta = json.loads((cohort / "dask" / i / "result.json").read_text())["metadata"]
        assert meta["worker_pid"] != os.getpid()  # ran in a worker process
        np.testing.assert_allclose(read_linear_transform(cohort / "dask" / i / "linear.mat"),
                                   read_linear_transform(cohort / "seq" / i / "linear.mat"), atol=1e-6)
    assert [r["status"] for r in ref.rows] == ["done", "done"]


def test_thread_limit_sets_torch_threads_and_variables_then_restores_them(monkeypatch):
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "7")
    n = torch.get_num_threads()
    with thread_limit(1):
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["MKL_NUM_THREADS"] == "1"
    assert torch.get_num_threads() == n
    assert "OMP_NUM_THREADS" not in os.environ and os.environ["MKL_NUM_THREADS"] == "7"


def test_blob_fixture_is_shifted_by_the_stated_amount(kit):
    """The test cohort's truth: the blob's centre of mass moves by the shift along the first world axis."""
    grid = kit.grid
    w0, w1 = kit.blob(grid, 0.0).numpy(), kit.blob(grid, 2.0).numpy()
    x = grid.transform_points(np.array([[i, 0, 0] for i in range(20)], dtype=float), "voxel", "world")[:, 0]
    com = [float((w.sum(axis=(1, 2)) * x).sum() / w.sum()) for w in (w0, w1)]
    assert com[1] - com[0] == pytest.approx(2.0, abs=0.05)


@pytest.mark.slow
def test_an_existing_cluster_runs_the_pairs_given_its_scheduler_address(cohort, batch_parser, capsys):
    distributed = pytest.importorskip("distributed")
    (cohort / "two.csv").write_text("\n".join((cohort / "pairs.csv").read_text().splitlines()[:3]) + "\n")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        rc = _run(batch_parser, [str(cohort / "two.csv"), "--out", str(cohort / "out"), "--config",
                                 str(cohort / "config.yaml"), "--scheduler", cluster.scheduler_address, "--no-progress"])
    assert rc == 0
    rows = _summary(cohort / "out")
    assert [r["status"] for r in rows.values()] == ["done", "done"]
    meta = json.loads((cohort / "out" / "p1" / "result.json").read_text())["metadata"]
    assert meta["worker_pid"] != os.getpid() and meta["threads_per_task"] == 1
    assert meta["pairs_file"] == str((cohort / "two.csv").resolve())
    assert "2 done, 0 skipped, 0 failed" in capsys.readouterr().out


def test_a_missing_and_a_corrupt_pair_are_reported_and_the_others_run(cohort, capsys):
    """Three pairs through ``omnireg batch``: one fine, one with a missing file, one with a corrupt image."""
    from omnireg.cli.main import main

    (cohort / "three.csv").write_text("id,fixed,moving\n"
                                      "good,data/fixed.nii.gz,data/moving1.nii.gz\n"
                                      "missing,data/fixed.nii.gz,data/nowhere.nii.gz\n"
                                      "corrupt,data/fixed.nii.gz,data/moving3.nii.gz\n")
    out = cohort / "out3"
    rc = main(["batch", str(cohort / "three.csv"), "--out", str(out), "--config", str(cohort / "config.yaml"),
               "--no-dask", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 1, captured.err  # some pairs failed or were invalid: non-zero, at the end
    rows = _summary(out)
    assert [(i, rows[i]["status"]) for i in rows] == [("good", "done"), ("missing", "invalid"), ("corrupt", "failed")]
    assert re.fullmatch(r"three.csv line 3 \(row 2\), column 'moving': no such file: .*nowhere.nii.gz", rows["missing"]["error"])
    assert "moving3.nii.gz" in rows["corrupt"]["error"] and rows["corrupt"]["error_type"] == "ValueError"
    assert load_complete_result(out / "good") is not None
    assert not (out / "missing").exists()  # nothing is written for an invalid pair
    assert json.loads((out / "corrupt" / "error.json").read_text())["error"] == rows["corrupt"]["error"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 1, "skipped": 0, "failed": 1, "invalid": 1, "pending": 0}
    assert "1 done, 0 skipped, 1 failed, 1 invalid" in captured.out
    assert "missing  invalid" in captured.out and "no such file" in captured.out
