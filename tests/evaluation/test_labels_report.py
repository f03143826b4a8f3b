"""Label lookup tables (TSV, CSV, FreeSurfer LUT, BIDS) and JSON/CSV/text reports."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from omnireg.core import Grid, Image
from omnireg.data import sample_label_names, sample_path
from omnireg.evaluation import (
    build_report,
    format_report,
    jacobian_statistics,
    label_metrics,
    read_label_table,
    target_registration_error,
    write_report,
)


# ------------------------------------------------------------------------------------------ tables
def test_sample_tsv_reads_like_the_data_helper():
    assert read_label_table(sample_path("labels_tsv")) == sample_label_names()


def test_freesurfer_lut_drops_colours(tmp_path):
    p = tmp_path / "FreeSurferColorLUT.txt"
    p.write_text(
        "#$Id: FreeSurferColorLUT.txt $\n\n"
        "#No. Label Name:                            R   G   B   A\n"
        "0   Unknown                                 0   0   0   0\n"
        "2   Left-Cerebral-White-Matter              245 245 245 0\n"
        "1000    ctx-lh-unknown                      25  5   25  0\n"
    )
    assert read_label_table(p) == {0: "Unknown", 2: "Left-Cerebral-White-Matter", 1000: "ctx-lh-unknown"}


def test_csv_with_quotes_and_bids_tsv_header(tmp_path):
    c = tmp_path / "lut.csv"
    c.write_text('id,name\n1,"caudate, left"\n2,putamen\n')
    assert read_label_table(c) == {1: "caudate, left", 2: "putamen"}
    b = tmp_path / "dseg.tsv"
    b.write_text("abbreviation\tindex\tname\nWM\t3\twhite matter\nGM\t2\tgrey matter\n")
    assert read_label_table(b) == {3: "white matter", 2: "grey matter"}
    w = tmp_path / "plain.txt"
    w.write_text("5 left hippocampus\n")
    assert read_label_table(w) == {5: "left hippocampus"}


def test_malformed_table_names_file_and_line(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_text("id\tname\n1\tone\nx\ttwo\n")
    with pytest.raises(ValueError, match=r"bad.tsv, line 3: expected an integer label id"):
        read_label_table(p)
    q = tmp_path / "noname.tsv"
    q.write_text("1\t\n")
    with pytest.raises(ValueError, match=r"noname.tsv, line 1: expected an integer id and a name"):
        read_label_table(q)
    with pytest.raises(FileNotFoundError, match="label table not found"):
        read_label_table(tmp_path / "missing.tsv")


# ------------------------------------------------------------------------------------------ reports
@pytest.fixture
def report():
    grid = Grid((8, 8, 6), (1.0, 1.0, 2.0))
    a = np.zeros(grid.shape, np.int16)
    a[2:6, 2:6, 1:4] = 1
    a[0:2, :, :] = 2
    b = np.roll(a, 1, axis=1)
    b[b == 2] = 0  # label 2 missing in the warped map: NaN distances
    labels = label_metrics(Image(torch.from_numpy(a)[None], grid), Image(torch.from_numpy(b)[None], grid), names={1: "box"})
    p = np.zeros((3, 3))
    tre = {"points.csv": target_registration_error(p, p + [0.0, 3.0, 4.0])}
    init = {"points.csv": target_registration_error(p, p + [0.0, 6.0, 8.0])}
    jac = jacobian_statistics(np.zeros((3, *grid.shape)), grid)
    return build_report(labels=labels, landmarks=tre, initial_landmarks=init, jacobian=jac, inputs={"fixed": "f.nii.gz"})


def test_report_keys_and_values(report):
    assert set(report["labels"]) == {"1", "2"}
    one = report["labels"]["1"]
    assert one["name"] == "box" and {"dice", "iou", "hd95_mm", "hd_mm"} <= set(one)
    assert one["hd95_mm"] == pytest.approx(1.0) and one["dice"] == pytest.approx(0.75)
    assert report["labels"]["2"]["dice"] == 0.0 and math.isnan(report["labels"]["2"]["hd95_mm"])
    lm = report["landmarks"]["points.csv"]
    assert lm["tre_mean_mm"] == 5.0 and lm["tre_max_mm"] == 5.0 and lm["initial_tre_mean_mm"] == 10.0
    assert lm["tre_per_point_mm"] == [5.0, 5.0, 5.0]
    assert report["jacobian"]["jacobian_nonpositive_percent"] == 0.0
    assert report["labels_mean"]["dice"] == pytest.approx(0.375)


def test_json_output_round_trips_with_null_for_nan(report, tmp_path):
    out = write_report(report, tmp_path / "r.json")
    loaded = json.loads(out.read_text())
    assert loaded["labels"]["2"]["hd95_mm"] is None
    assert loaded["labels"]["1"]["dice"] == report["labels"]["1"]["dice"]
    assert loaded["landmarks"]["points.csv"]["tre_max_mm"] == 5.0
    with pytest.raises(FileExistsError, match="already exists"):
        write_report(report, out)
    write_report(report, out, force=True)


def test_csv_output_is_long_format(report, tmp_path):
    out = write_report(report, tmp_path / "r.csv")
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["section", "key", "name", "metric", "value"]
    dice = [r for r in rows if r["section"] == "labels" and r["key"] == "1" and r["metric"] == "dice"]
    assert len(dice) == 1 and float(dice[0]["value"]) == pytest.approx(report["labels"]["1"]["dice"])
    tre = [r for r in rows if r["section"] == "landmarks" and r["metric"] == "tre_mean_mm"]
    assert float(tre[0]["value"]) == 5.0
    nan_rows = [r for r in rows if r["key"] == "2" and r["metric"] == "hd95_mm"]
    assert nan_rows[0]["value"] == ""


def test_text_table_and_bad_extension(report, tmp_path):
    text = format_report(report)
    assert "1 box" in text and "hd95_mm" in text and "tre_mean_mm" in text and "n/a" in text
    assert "jacobian_nonpositive_percent" in text
    with pytest.raises(ValueError, match="path: expected a file name ending in .json or .csv"):
        write_report(report, tmp_path / "r.txt")
