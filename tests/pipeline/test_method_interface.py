"""A registration method written outside omnireg plugs into the pipeline through the interface alone.

``ReplayMethod`` (``tests/pipeline/conftest.py``, fixture ``replay_method``) is a toy method defined outside omnireg: it returns a given fixed -> moving world
matrix (here the one the engine found), warps the moving image with omnireg's public resampler, and
nothing else. Run through :func:`omnireg.pipeline.run_pipeline`, it must get the same outputs, the same
numbers in them and the same report as the engine itself: the pipeline, not the method, writes them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from omnireg.data import sample_path
from omnireg.io import load_image, read_linear_transform
from omnireg.pipeline import RegistrationRequest, run_pipeline
from omnireg.pipeline.method import EngineMethod


@pytest.fixture(scope="module")
def engine_and_replay(tmp_path_factory, replay_method):
    root = tmp_path_factory.mktemp("methods")
    fixed, moving = sample_path("t1_2d"), sample_path("pd_2d")
    runs = {}
    engine = EngineMethod("rigid")
    engine.config.seed = 0
    runs["engine"] = run_pipeline(RegistrationRequest(fixed=fixed, moving=moving, method=engine,
                                                      out_dir=root / "engine", report=True))
    matrix = read_linear_transform(root / "engine" / "linear.mat")
    runs["replay"] = run_pipeline(RegistrationRequest(fixed=fixed, moving=moving, method=replay_method(matrix),
                                                      out_dir=root / "replay", report=True))
    return root, runs


def test_a_method_from_outside_gets_every_output_of_the_engine(engine_and_replay):
    root, _ = engine_and_replay
    listing = {m: sorted(p.relative_to(root / m).as_posix() for p in (root / m).rglob("*") if p.is_file())
               for m in ("engine", "replay")}
    assert "report.html" in listing["engine"] and "warped.nii.gz" in listing["engine"]
    assert listing["replay"] == listing["engine"]


def test_a_method_from_outside_gets_the_same_numbers_in_its_outputs(engine_and_replay):
    root, runs = engine_and_replay
    np.testing.assert_allclose(read_linear_transform(root / "replay" / "linear.mat"),
                               read_linear_transform(root / "engine" / "linear.mat"), rtol=0, atol=1e-9)
    a, b = (load_image(root / m / "warped.nii.gz") for m in ("engine", "replay"))
    assert a.grid.shape == b.grid.shape
    np.testing.assert_allclose(b.data.numpy(), a.data.numpy(), rtol=0, atol=1e-4 * float(a.data.abs().max()))
    ja, jb = (json.loads((root / m / "result.json").read_text(encoding="utf-8")) for m in ("engine", "replay"))
    assert ja.keys() == jb.keys()
    assert ja["method"]["name"] == "engine" and jb["method"]["name"] == "replay"
    assert ja["outputs"] == jb["outputs"]
    # the pipeline, not the method, computes the image similarity of the report for both
    assert runs["replay"].summary.keys() == runs["engine"].summary.keys()


def test_a_method_from_outside_gets_the_same_report(engine_and_replay):
    root, _ = engine_and_replay
    pages = {m: (root / m / "report.html").read_text(encoding="utf-8") for m in ("engine", "replay")}
    pictures = {m: sorted(p.name for p in (root / m / "report_files").glob("*.png")) for m in pages}
    assert pictures["replay"] == pictures["engine"] and pictures["engine"]
    for m, page in pages.items():
        for name in pictures[m]:
            assert f"report_files/{name}" in page


def test_the_pipeline_checks_the_method_before_any_work(tmp_path, replay_method):
    bad = replay_method(np.eye(4))  # a 3D matrix for a 2D pair
    with pytest.raises(ValueError, match="replay: a 2D pair needs a 3x3 matrix"):
        run_pipeline(RegistrationRequest(fixed=sample_path("t1_2d"), moving=sample_path("pd_2d"), method=bad,
                                         out_dir=tmp_path / "out"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
