"""PAIRS.csv is checked before anything runs: a structural problem stops the batch with one line; a row whose
cells cannot be used (missing files, empty or one-sided cells) is marked invalid, naming the row and the column."""

from __future__ import annotations

import doctest
import importlib
import re

import pytest

from omnireg.batch import derive_ids, read_pairs

HEADER = "id,fixed,moving,fixed_labels,moving_labels,fixed_landmarks,moving_landmarks"


def _write(cohort, text: str):
    path = cohort / "bad.csv"
    path.write_text(text)
    return path


def _main(monkeypatch, argv):
    """Through ``omnireg.cli.main`` (batch added to its commands here), as a user sees it."""
    from omnireg.cli import batch
    from omnireg.cli import main as cli_main

    registered = cli_main._commands()
    monkeypatch.setattr(cli_main, "_commands", lambda: registered if batch in registered else [*registered, batch])
    return cli_main.main(argv)


def test_a_missing_column_is_one_line_naming_the_column(cohort, monkeypatch, capsys):
    bad = _write(cohort, "fixed,labels\ndata/fixed.nii.gz,x\n")
    rc = _main(monkeypatch, ["batch", str(bad), "--out", str(cohort / "out"), "--no-dask"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "bad.csv header: missing required column(s) 'moving'" in err[0]
    assert not (cohort / "out").exists()  # nothing ran, nothing was created


def test_a_missing_file_makes_its_row_invalid_and_names_the_row_line_and_column(cohort):
    """Row contents (missing files, empty or one-sided cells) do not stop the batch: the row is marked invalid."""
    lines = (cohort / "pairs.csv").read_text().splitlines()
    lines[3] = lines[3].replace("moving2_labels.nii.gz", "nowhere_labels.nii.gz")
    pairs = read_pairs(_write(cohort, "\n".join(lines) + "\n"))
    assert [p.id for p in pairs] == [f"p{i}" for i in range(6)]
    assert [p.problem is None for p in pairs] == [True, True, False, True, True, True]
    assert re.fullmatch(r"bad.csv line 4 \(row 3\), column 'moving_labels': no such file: .*nowhere_labels.nii.gz",
                        pairs[2].problem)


def test_every_problem_of_a_row_is_counted_but_the_first_is_named(cohort):
    bad = _write(cohort, "fixed,moving,fixed_labels\ndata/fixed.nii.gz,data/a.nii.gz,data/c.nii.gz\n"
                         ",data/moving1.nii.gz,\ndata/b.nii.gz,data/moving2.nii.gz,\n")
    problems = [p.problem for p in read_pairs(bad)]
    assert problems[0].startswith("bad.csv line 2 (row 1), column 'moving_labels': empty but 'fixed_labels' is given")
    assert problems[0].endswith("(and 2 more problem(s) in this row)") and "\n" not in problems[0]  # a, c missing
    assert problems[1] == "bad.csv line 3 (row 2), column 'fixed': empty; a path is required"
    assert problems[2].startswith("bad.csv line 4 (row 3), column 'fixed': no such file")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("fixed,moving,fixed_labels\ndata/fixed.nii.gz,data/moving1.nii.gz,data/fixed_labels.nii.gz\n",
         r"row 1\), column 'moving_labels': empty but 'fixed_labels' is given; both are needed for the Dice"),
        ("fixed,moving,moving_landmarks\ndata/fixed.nii.gz,data/moving1.nii.gz,data/moving1_landmarks.csv\n",
         r"column 'fixed_landmarks': empty but 'moving_landmarks' is given"),
        ("fixed,moving,moving_landmarks,fixed_landmarks\ndata/fixed.nii.gz,data/moving1.nii.gz,data,data/fixed_landmarks.csv\n",
         r"column 'moving_landmarks': expected a file, got a folder"),
    ],
)
def test_rows_with_unusable_cells_are_invalid(cohort, text, expected):
    (spec,) = read_pairs(_write(cohort, text))
    assert spec.problem is not None and re.search(expected, spec.problem)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("fixed,moving,moving_label\n", r"bad.csv header: unknown column 'moving_label'; valid columns: fixed, moving, id"),
        ("fixed,moving,fixed\n", r"column 'fixed' appears more than once"),
        ("", r"bad.csv: the file is empty"),
        ("fixed,moving\n", r"bad.csv: no pairs"),
        ("fixed,moving\ndata/fixed.nii.gz,data/moving1.nii.gz,extra\n", r"line 2 \(row 1\): 3 fields but the header has 2"),
        ("id,fixed,moving\na/b,data/fixed.nii.gz,data/moving1.nii.gz\n", r"column 'id': 'a/b' is not usable as a folder name"),
        ("id,fixed,moving\nsummary.csv,data/fixed.nii.gz,data/moving1.nii.gz\n", r"column 'id': 'summary.csv' is not usable"),
        ("id,fixed,moving\nx,data/fixed.nii.gz,data/moving1.nii.gz\nx,data/fixed.nii.gz,data/moving2.nii.gz\n",
         r"line 3 \(row 2\), column 'id': 'x' repeats row 1"),
    ],
)
def test_malformed_tables_are_refused_with_the_place_of_the_problem(cohort, text, expected):
    with pytest.raises(ValueError, match=expected):
        read_pairs(_write(cohort, text))


def test_paths_are_relative_to_the_csv_folder_and_ids_are_derived_uniquely(cohort, monkeypatch, tmp_path_factory):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    (cohort / "data" / "b").mkdir()
    (cohort / "data" / "b" / "moving1.nii.gz").write_bytes((cohort / "data" / "moving1.nii.gz").read_bytes())
    text = (" Fixed , MOVING ,id\n"  # header case and spaces are ignored
            "data/fixed.nii.gz,data/moving1.nii.gz,\n"
            "data/fixed.nii.gz,data/b/moving1.nii.gz,\n"
            "\n"
            f"{cohort}/data/fixed.nii.gz,data/moving2.nii.gz,\n"
            "data/fixed.nii.gz,data/moving4.nii.gz,moving2\n")
    pairs = read_pairs(_write(cohort, text))
    assert [p.id for p in pairs] == ["data_moving1", "data_b_moving1", "data_moving2", "moving2"]
    assert all(p.fixed == cohort / "data" / "fixed.nii.gz" for p in pairs)
    assert pairs[1].moving == cohort / "data" / "b" / "moving1.nii.gz"
    assert pairs[0].fixed_labels is None and [p.row for p in pairs] == [1, 2, 3, 4]


def test_derived_ids_are_folder_names_and_never_reserved():
    ids = derive_ids([(None, "f.nii.gz", "sub 01/T1w (1).nii.gz"), (None, "f.nii.gz", "summary.csv"),
                      (None, "f.nii.gz", ".hidden.nii.gz")])
    assert ids[0] == "T1w_1" and ids[1] != "summary.csv" and not ids[2].startswith(".")
    assert len(set(ids)) == 3


def test_option_errors_name_the_option(cohort, batch_parser):
    from omnireg.cli.main import CliError

    base = [str(cohort / "pairs.csv"), "--out", str(cohort / "out")]
    for extra, msg in ((["--threads-per-task", "0"], "--threads-per-task: expected an integer >= 1"),
                       (["--workers", "-1"], "--workers: expected an integer >= 0"),
                       (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "--scheduler: .* leave out --workers")):
        args = batch_parser.parse_args(["batch", *base, *extra])
        with pytest.raises(CliError, match=msg):
            args.func(args)
    with pytest.raises(SystemExit):
        batch_parser.parse_args(["batch", *base, "--preset", "rigid", "--config", "c.yaml"])
    assert not (cohort / "out").exists()


@pytest.mark.parametrize("module", ["pairs", "summary"])
def test_docstring_examples(module):
    mod = importlib.import_module(f"omnireg.batch.{module}")
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
