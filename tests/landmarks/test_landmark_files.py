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


# ------------------------------------------------------------------------------------------ AFIDs layouts
AFIDS = ["tpl-Colin27", "tpl-MNI152Lin", "tpl-MNI152NLin2009bSym", "tpl-MNI152NLin2009cAsym",
         "tpl-MNI152NLin2009cSym", "tpl-MNI152NLin6Asym", "tpl-MNI305"]


def test_csv_columns_may_state_the_coordinate_system_and_unit(tmp_path):
    """``id,x_ras_mm,y_ras_mm,z_ras_mm,name`` (the AFIDs CSV): RAS mm stated by the header, names from ``id``."""
    ras = tmp_path / "afids_ras.csv"
    ras.write_text("id,x_ras_mm,y_ras_mm,z_ras_mm,name\n1,1.5,-2.25,3.0,AC\n2,-10.0,20.0,0.125,PC\n")
    lm = read_landmarks(ras)
    np.testing.assert_array_equal(lm.points, RAS[:2])
    assert lm.names == ("1", "2")
    # the header wins over the option, as a Slicer file's header does
    np.testing.assert_array_equal(read_landmarks(ras, coordinate_system="LPS").points, RAS[:2])
    lps = tmp_path / "lps.csv"
    lps.write_text("x_lps,y_lps,z_lps,name\n-1.5,2.25,3.0,AC\n")
    lm = read_landmarks(lps)
    np.testing.assert_array_equal(lm.points, RAS[:1])
    assert lm.names == ("AC",)
    plain_mm = tmp_path / "mm.csv"
    plain_mm.write_text("X_mm,Y_mm,Z_mm\n1.5,-2.25,3.0\n")
    np.testing.assert_array_equal(read_landmarks(plain_mm).points, RAS[:1])
    np.testing.assert_array_equal(read_landmarks(plain_mm, coordinate_system="LPS").points, LPS[:1])
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("x_ras,y_lps,z\n1,2,3\n")
    with pytest.raises(ValueError, match=r"mixed.csv, line 1: the coordinate columns state different systems"):
        read_landmarks(mixed)
    twice = tmp_path / "twice.csv"
    twice.write_text("x,x_ras_mm,y,z\n1,1,2,3\n")
    with pytest.raises(ValueError, match=r"twice.csv, line 1: more than one column for x"):
        read_landmarks(twice)
    cm = tmp_path / "cm.csv"
    cm.write_text("x_cm,y_cm,z_cm\n1,2,3\n")
    with pytest.raises(ValueError, match=r"cm.csv, line 1: expected a header with columns x, y"):
        read_landmarks(cm)


def test_slicer_4_6_fcsv_with_numeric_labels(tmp_path):
    """The AFIDs ``.fcsv`` layout: Slicer 4.6, ``CoordinateSystem = 0`` (RAS), label = AFID number, desc = name."""
    p = tmp_path / "afids.fcsv"
    p.write_text(
        "# Markups fiducial file version = 4.6\n# CoordinateSystem = 0\n"
        "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
        "vtkMRMLMarkupsFiducialNode_1,1.5,-2.25,3.0,0,0,0,1,1,1,0,1,AC,vtkMRMLScalarVolumeNode1\n"
        "vtkMRMLMarkupsFiducialNode_2,-10.0,20.0,0.125,0,0,0,1,1,1,0,2,PC,vtkMRMLScalarVolumeNode1\n"
    )
    lm = read_landmarks(p, coordinate_system="LPS")  # the header (RAS) wins
    np.testing.assert_array_equal(lm.points, RAS[:2])
    assert lm.names == ("1", "2")
    lps = tmp_path / "lps.fcsv"
    lps.write_text(p.read_text().replace("CoordinateSystem = 0", "CoordinateSystem = 1"))
    np.testing.assert_array_equal(read_landmarks(lps).points, LPS[:2])
    # the CSV and the .fcsv of the same points pair by name
    csv_path = tmp_path / "afids.csv"
    csv_path.write_text("id,x_ras_mm,y_ras_mm,z_ras_mm,name\n2,-10.0,20.0,0.125,PC\n1,1.5,-2.25,3.0,AC\n")
    a, b, names = pair_landmarks(read_landmarks(csv_path), lm)
    assert names == ("2", "1")
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("template", AFIDS)
def test_afids_csv_and_fcsv_of_one_template_agree(shared_data, template):
    folder = shared_data / "afids_template_landmarks"
    csv_lm = read_landmarks(folder / f"{template}_afids_ras.csv")
    fcsv_lm = read_landmarks(folder / "original_fcsv" / f"{template}_afids.fcsv")
    assert len(csv_lm) == len(fcsv_lm) == 32 and csv_lm.names == tuple(str(i) for i in range(1, 33))
    p, q, names = pair_landmarks(csv_lm, fcsv_lm)
    assert names == csv_lm.names
    np.testing.assert_allclose(p, q, atol=5.1e-6, rtol=0)  # the CSV rounds the .fcsv to 5 decimals
    # RAS pin: the right and left lateral ventricles at AC (ids 15, 16) lie on +x and -x of the midline AC (id 1)
    ac, right, left = (p[names.index(i)] for i in ("1", "15", "16"))
    assert right[0] > ac[0] + 5 and left[0] < ac[0] - 5
