"""Landmark files: round trips, the RAS/LPS conversion pinned on file contents, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from omnireg.core import Grid
from omnireg.landmarks import Landmarks, pair_landmarks, read_landmarks, write_landmarks

RAS = np.array([[1.5, -2.25, 3.0], [-10.0, 20.0, 0.125], [0.1, 0.2, 0.3]])
NAMES = ("F-1", "nose, tip", "ear")
LPS = RAS * [-1.0, -1.0, 1.0]


# ------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("ext", [".csv", ".fcsv", ".mrk.json", ".txt", ".pts"])
@pytest.mark.parametrize("system", [None, "RAS", "LPS"])
def test_round_trip_is_exact(tmp_path, ext, system):
    path = write_landmarks(Landmarks(RAS, NAMES), tmp_path / f"points{ext}", coordinate_system=system)
    # files that do not state their system are read back with the same option
    back = read_landmarks(path, coordinate_system=system)
    np.testing.assert_array_equal(back.points, RAS)
    if ext in (".txt", ".pts"):
        assert back.names is None  # elastix files hold no names
    else:
        assert back.names == NAMES


def test_round_trip_2d_csv_and_elastix(tmp_path):
    pts = np.array([[1.0, 2.0], [-3.5, 4.25]])
    for ext in (".csv", ".txt"):
        back = read_landmarks(write_landmarks(pts, tmp_path / f"p2{ext}"))
        np.testing.assert_array_equal(back.points, pts)


# ------------------------------------------------------------------------------------------ RAS / LPS pins
def _rows(path):
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def test_csv_is_ras_by_default_and_lps_on_request(tmp_path):
    ras = write_landmarks(RAS[:1], tmp_path / "ras.csv")
    assert _rows(ras) == ["x,y,z", "1.5,-2.25,3.0"]
    lps = write_landmarks(RAS[:1], tmp_path / "lps.csv", coordinate_system="LPS")
    assert _rows(lps) == ["x,y,z", "-1.5,2.25,3.0"]
    np.testing.assert_array_equal(read_landmarks(lps).points, LPS[:1])  # read as RAS: mirrored
    np.testing.assert_array_equal(read_landmarks(lps, coordinate_system="lps").points, RAS[:1])


def test_fcsv_states_its_coordinate_system(tmp_path):
    path = write_landmarks(Landmarks(RAS[:1], ("a",)), tmp_path / "p.fcsv")
    text = path.read_text()
    assert "# CoordinateSystem = LPS" in text
    assert _rows(path)[0].startswith("vtkMRMLMarkupsFiducialNode_0,-1.5,2.25,3.0,")
    # the header wins over the option
    np.testing.assert_array_equal(read_landmarks(path, coordinate_system="RAS").points, RAS[:1])


@pytest.mark.parametrize("code,expected", [("0", RAS), ("RAS", RAS), ("1", LPS), ("LPS", LPS), (None, RAS)])
def test_slicer4_fcsv_codes(tmp_path, code, expected):
    header = "# Markups fiducial file version = 4.6\n"
    if code is not None:
        header += f"# CoordinateSystem = {code}\n"
    header += "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
    rows = "".join(f"vtkMRMLMarkupsFiducialNode_{i},{x},{y},{z},0,0,0,1,1,1,0,{n},,vtkMRMLScalarVolumeNode1\n"
                   for i, ((x, y, z), n) in enumerate(zip(RAS, ("A", "B", "C"))))
    p = tmp_path / "s4.fcsv"
    p.write_text(header + rows)
    lm = read_landmarks(p)
    np.testing.assert_array_equal(lm.points, expected)
    assert lm.names == ("A", "B", "C")


def test_markups_json_from_slicer(tmp_path):
    doc = {
        "@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#",
        "markups": [
            {"type": "Fiducial", "coordinateSystem": "LPS", "coordinateUnits": "mm", "controlPoints": [
                {"id": "1", "label": "P1", "position": [1.0, 2.0, 3.0], "positionStatus": "defined"},
                {"id": "2", "label": "P2", "position": [0.0, 0.0, 0.0], "positionStatus": "undefined"},
            ]},
            {"type": "Fiducial", "coordinateSystem": "RAS", "controlPoints": [
                {"id": "1", "label": "P3", "position": [4.0, 5.0, 6.0]},
            ]},
        ],
    }
    p = tmp_path / "m.mrk.json"
    p.write_text(json.dumps(doc))
    lm = read_landmarks(p)
    np.testing.assert_array_equal(lm.points, [[-1.0, -2.0, 3.0], [4.0, 5.0, 6.0]])
    assert lm.names == ("P1", "P3")
    written = json.loads(write_landmarks(lm, tmp_path / "w.mrk.json").read_text())
    assert written["markups"][0]["coordinateSystem"] == "LPS"
    assert written["markups"][0]["controlPoints"][0]["position"] == [1.0, 2.0, 3.0]


def test_elastix_point_file_is_lps_and_index_file_uses_the_reference(tmp_path):
    p = write_landmarks(RAS[:2], tmp_path / "pts.txt")
    assert p.read_text().splitlines()[:3] == ["point", "2", "-1.5 2.25 3.0"]
    c, s = np.cos(0.3), np.sin(0.3)
    grid = Grid((10, 12, 8), (2.0, 1.0, 1.5), origin=(4.0, -5.0, 6.0),
                direction=[[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    idx = tmp_path / "idx.txt"
    idx.write_text("index\n2\n1 2 3\n4.5 0 7\n")
    expected = grid.transform_points(np.array([[1.0, 2.0, 3.0], [4.5, 0.0, 7.0]]), "voxel", "world")
    np.testing.assert_allclose(read_landmarks(idx, reference=grid).points, expected, atol=1e-12)
    with pytest.raises(ValueError, match="reference: required"):
        read_landmarks(idx)


def test_ants_csv_columns_are_read(tmp_path):
    p = tmp_path / "ants.csv"
    p.write_text("x,y,z,t,label,comment\n-1.5,2.25,3.0,0,1,\n10.0,-20.0,0.125,0,2,\n")
    lm = read_landmarks(p, coordinate_system="LPS")
    np.testing.assert_array_equal(lm.points, RAS[:2])
    assert lm.names == ("1", "2")


# ------------------------------------------------------------------------------------------ errors
def test_malformed_files_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,z\n1,2,3\n4,five,6\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 3: expected a number for y, got 'five'"):
        read_landmarks(bad)
    nohead = tmp_path / "nohead.csv"
    nohead.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match=r"nohead.csv, line 1: expected a header with columns x, y"):
        read_landmarks(nohead)
    fc = tmp_path / "bad.fcsv"
    fc.write_text("# CoordinateSystem = IJK\nvtk,1,2,3\n")
    with pytest.raises(ValueError, match=r"bad.fcsv, line 1: expected CoordinateSystem RAS, LPS, 0 or 1"):
        read_landmarks(fc)
    el = tmp_path / "bad.txt"
    el.write_text("point\n3\n1 2 3\n4 5 6\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 2: the file announces 3 points but holds 2"):
        read_landmarks(el)
    el.write_text("points\n1\n1 2 3\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 1: expected 'point' or 'index'"):
        read_landmarks(el)
    js = tmp_path / "bad.mrk.json"
    js.write_text("{\n  \"markups\": [\n")
    with pytest.raises(ValueError, match=r"bad.mrk.json, line \d+: not valid JSON"):
        read_landmarks(js)
    with pytest.raises(ValueError, match=r"path: expected a landmark file ending in"):
        read_landmarks(tmp_path / "p.xyz")
    with pytest.raises(FileNotFoundError, match="landmark file not found"):
        read_landmarks(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="coordinate_system: expected one of 'ras', 'lps'"):
        read_landmarks(bad, coordinate_system="XYZ")


def test_writer_refuses_overwrite_and_2d_slicer_files(tmp_path):
    p = write_landmarks(RAS, tmp_path / "p.csv")
    with pytest.raises(FileExistsError, match="already exists"):
        write_landmarks(RAS, p)
    write_landmarks(RAS, p, force=True)
    with pytest.raises(ValueError, match="Slicer files hold 3D points"):
        write_landmarks(np.zeros((2, 2)), tmp_path / "p.fcsv")
    with pytest.raises(ValueError, match="names: expected 3 names"):
        write_landmarks(RAS, tmp_path / "q.csv", names=["a"])


# ------------------------------------------------------------------------------------------ pairing
def test_pairing_by_name_reorders_and_drops_unpaired():
    fixed = Landmarks(RAS, ("a", "b", "c"))
    moving = Landmarks(RAS[[2, 0]] + 1.0, ("c", "a"))
    p, q, names = pair_landmarks(fixed, moving)
    assert names == ("a", "c")
    np.testing.assert_array_equal(p, RAS[[0, 2]])
    np.testing.assert_array_equal(q, RAS[[0, 2]] + 1.0)


def test_pairing_by_order_needs_equal_counts():
    p, q, _ = pair_landmarks(Landmarks(RAS, ("a", "b", "c")), Landmarks(RAS + 1, ("x", "y", "z")))
    np.testing.assert_array_equal(q - p, np.ones_like(RAS))
    with pytest.raises(ValueError, match="moving: expected 3 landmarks"):
        pair_landmarks(Landmarks(RAS), Landmarks(RAS[:2]))
