"""``run_registration``: one registration from files to a folder, what ``omnireg register`` and ``omnireg batch`` run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from omnireg.pipeline import OUTPUT_NAMES, run_registration
from omnireg.core import Grid, Image
from omnireg.io import load_image, read_linear_transform, save_image


@pytest.fixture
def config(cohort) -> dict:
    return yaml.safe_load((cohort / "config.yaml").read_text())


def test_outputs_are_written_once_and_replaced_only_with_force(cohort, config):
    d = cohort / "data"
    out = cohort / "one"
    result = run_registration(d / "fixed.nii.gz", d / "moving2.nii.gz", out, config,
                              moving_labels=d / "moving2_labels.nii.gz", metadata={"note": "x"})
    optional = ("deformation.nii.gz", "inverse.h5", "inverse_warped.nii.gz")  # deformable runs; inverse=True
    expected = [n for n in OUTPUT_NAMES if n not in optional] + ["report_files"]  # QC page and pictures
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    assert json.loads((out / "result.json").read_text()) == result
    assert result["metadata"] == {"note": "x"} and result["evaluation"] == {}  # no fixed labels: no Dice
    assert result["outputs"]["ants_order"] == ["linear.mat"]
    # pull convention: the 2 mm shift of the moving blob along x is the translation of fixed -> moving
    np.testing.assert_allclose(read_linear_transform(out / "linear.mat")[0, 3], 2.0, atol=0.1)
    warped_labels = load_image(out / "warped_labels.nii.gz")
    assert warped_labels.grid.same_as(load_image(d / "fixed.nii.gz").grid) and not warped_labels.data.is_floating_point()
    with pytest.raises(FileExistsError, match=r"out_dir: .*one already holds warped.nii.gz.*use --force"):
        run_registration(d / "fixed.nii.gz", d / "moving2.nii.gz", out, config)
    again = run_registration(d / "fixed.nii.gz", d / "moving2.nii.gz", out, config, force=True)
    assert again["metric_after"] == pytest.approx(result["metric_after"])


def test_input_errors_name_the_argument(cohort, config):
    d = cohort / "data"
    other = Grid((10, 10, 10), (4.0, 4.0, 4.0))
    save_image(Image(torch.ones(1, 10, 10, 10), other), d / "mask_other.nii.gz")
    cases = [
        (dict(fixed_mask=d / "mask_other.nii.gz"), ValueError, r"^fixed_mask: expected the grid of the fixed image"),
        (dict(moving_labels=d / "nothing.nii.gz"), FileNotFoundError, r"^moving_labels: no such file or directory"),
        (dict(fixed_landmarks=d / "fixed_landmarks.csv"), ValueError, r"^moving_landmarks: required as well"),
    ]
    for kwargs, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            run_registration(d / "fixed.nii.gz", d / "moving1.nii.gz", cohort / "o", config, **kwargs)
    with pytest.raises(ValueError, match=r"^moving: cannot read image .*moving3.nii.gz"):
        run_registration(d / "fixed.nii.gz", d / "moving3.nii.gz", cohort / "o", config)
    assert not (cohort / "o").exists()


def test_a_command_line_can_name_the_arguments_its_way(cohort, config):
    d = cohort / "data"
    (cohort / "o").mkdir()
    (cohort / "o" / "warped.nii.gz").write_bytes(b"")
    cli_names = {"out_dir": "--out", "fixed": "FIXED", "moving": "MOVING", "moving_mask": "--moving-mask"}
    with pytest.raises(FileExistsError, match=r"^--out: .*already holds warped.nii.gz; use --force"):
        run_registration(d / "fixed.nii.gz", d / "moving1.nii.gz", cohort / "o", config, arg_names=cli_names)
    with pytest.raises(FileNotFoundError, match=r"^--moving-mask: no such file"):
        run_registration(d / "fixed.nii.gz", d / "moving1.nii.gz", cohort / "p", config, arg_names=cli_names,
                         moving_mask=d / "none.nii.gz")
    with pytest.raises(ValueError, match=r"^MOVING: cannot read image"):
        run_registration(d / "fixed.nii.gz", d / "moving3.nii.gz", cohort / "p", config, arg_names=cli_names)


def test_every_output_follows_the_umask(cohort, config):
    """result.json, images, transforms and the report get ``0o666 & ~umask`` like any file the user creates."""
    import os
    import stat

    d = cohort / "data"
    out = cohort / "modes"
    old = os.umask(0o022)
    try:
        run_registration(d / "fixed.nii.gz", d / "moving1.nii.gz", out, config, moving_labels=d / "moving1_labels.nii.gz")
    finally:
        os.umask(old)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert "result.json" in {p.name for p in files} and "report.html" in {p.name for p in files}
    modes = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert modes == {k: "0o644" for k in modes}
    assert not [p for p in out.rglob(".*")]  # no temporary files left


def test_a_float_intensity_image_given_as_labels_is_refused_before_any_work(cohort, config, monkeypatch):
    """Labels must hold whole numbers; the check runs before the registration, so nothing is written."""
    import omnireg.optim

    d = cohort / "data"
    save_image(Image(torch.rand(1, *load_image(d / "fixed.nii.gz").grid.shape) + 0.1, load_image(d / "fixed.nii.gz").grid),
               d / "float.nii.gz")

    def no_registration(*args, **kwargs):
        raise AssertionError("the registration ran")

    monkeypatch.setattr(omnireg.optim, "register", no_registration)
    for key in ("fixed_labels", "moving_labels"):
        with pytest.raises(ValueError, match=rf"^{key}: expected a label map \(integer values\), got non-integer values"):
            run_registration(d / "fixed.nii.gz", d / "fixed.nii.gz", cohort / "o", config, **{key: d / "float.nii.gz"})
    assert not (cohort / "o").exists()


def test_a_whole_number_intensity_image_is_refused_as_labels_and_a_many_label_map_is_accepted():
    """An int16 scan has whole numbers but is not piecewise constant; a parcellation with 200 labels is."""
    from omnireg.pipeline.inputs import as_label_map
    from omnireg.core import Grid

    grid = Grid((24, 24, 24), (1.0, 1.0, 1.0))
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool3d(torch.rand(1, 1, 24, 24, 24, generator=g), 5, 1, 2)[0]
    scan = (smooth * 2000 + 20 * torch.randn(smooth.shape, generator=g)).round()
    for dtype in (torch.int16, torch.float32):
        with pytest.raises(ValueError, match=r"^--fixed-labels: expected a label map, got an image with \d+ distinct"):
            as_label_map(Image(scan.to(dtype), grid), "--fixed-labels")
    # 216 parcels of 4^3 voxels, labels 1..216 (piecewise constant: 75 % of neighbour pairs agree)
    idx = torch.arange(24) // 4
    parcels = (idx[:, None, None] * 36 + idx[None, :, None] * 6 + idx[None, None, :] + 1)[None]
    for dtype in (torch.int32, torch.float32):
        out = as_label_map(Image(parcels.to(dtype), grid), "--fixed-labels")
        assert not out.data.is_floating_point() and out.data.unique().numel() == 216
