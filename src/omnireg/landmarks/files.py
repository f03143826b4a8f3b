"""Landmark files: CSV, 3D Slicer ``.fcsv`` and ``.mrk.json``, elastix point files.

Convention:
    In memory, landmarks are always ``(P, D)`` float64 **world RAS mm** points (with optional names),
    whatever the file holds. Files in LPS (ITK, elastix, modern Slicer) are converted with
    ``RAS = diag(-1, -1, 1) LPS`` (3D) or ``diag(-1, -1)`` (2D, ITK's 2D physical space being the first
    two LPS axes, as in :mod:`omnireg.io`). Like :mod:`omnireg.io`, this module is a file boundary: LPS
    exists only inside it.

Formats (chosen by the file extension):

* ``.csv``: a header naming the coordinate columns ``x``, ``y`` (and ``z``), in any case, optionally
  with the coordinate system and the unit: ``x_ras_mm``, ``x_lps``, ``x_mm`` ... (the AFIDs files:
  ``id,x_ras_mm,y_ras_mm,z_ras_mm,name``). Point names come from the first of the columns ``label``,
  ``id``, ``name`` present (``id`` before ``name``: the AFIDs CSV's ``id`` is the ``label`` of its
  Slicer ``.fcsv``, so the two formats pair by name). Other columns (ANTs' ``t``, ``comment``) are
  ignored, so the CSV files of ``antsApplyTransformsToPoints`` (LPS: pass ``coordinate_system="LPS"``)
  are read as they are. A file of numbers only (2 or 3 columns) needs no header. Lines starting with
  ``#`` are comments. A system in the column names (``_ras``/``_lps``) is the file's own; otherwise
  the file does not state it: RAS unless told otherwise. Units other than mm are refused.
* ``.fcsv`` (Slicer markups fiducial CSV): the ``# CoordinateSystem = RAS|LPS|0|1`` header line
  (0 = RAS, 1 = LPS, Slicer's codes) and the ``# columns = ...`` line are honoured; without them the
  Slicer 4 layout ``id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID`` in RAS is assumed.
* ``.mrk.json`` / ``.json`` (Slicer markups JSON): every control point of every markup, in that
  markup's ``coordinateSystem`` (LPS if absent); points whose ``positionStatus`` is ``undefined`` are
  skipped (logged). Units other than mm are refused.
* ``.txt`` / ``.pts`` (elastix/transformix input points): a first line ``point`` (physical ITK, i.e.
  LPS, coordinates) or ``index`` (continuous voxel indices of the fixed image, in ITK index order =
  omnireg's tensor-axis order; a reference grid converts them), a line with the count, then one point
  per line.

When reading, ``coordinate_system`` applies to files that do not state their own (CSV, elastix
``point`` files, ``.fcsv`` without the header line, ``.mrk.json`` without the field); a file that
states it wins (a differing argument is logged). When writing it defaults to each format's usual
system: RAS for CSV, LPS for ``.fcsv``, ``.mrk.json`` and elastix files.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..core.enums import as_enum
from ..core.grid import Grid
from ..core.image import Image

__all__ = ["CoordinateSystem", "Landmarks", "read_landmarks", "write_landmarks", "pair_landmarks"]

logger = logging.getLogger(__name__)


class CoordinateSystem(str, Enum):
    """World coordinate system of a landmark file: RAS+ (NIfTI, omnireg) or LPS+ (ITK, DICOM)."""

    RAS = "ras"
    LPS = "lps"


_SLICER_CODES = {"0": CoordinateSystem.RAS, "1": CoordinateSystem.LPS, "ras": CoordinateSystem.RAS, "lps": CoordinateSystem.LPS}
_FCSV_COLUMNS = ["id", "x", "y", "z", "ow", "ox", "oy", "oz", "vis", "sel", "lock", "label", "desc", "associatedNodeID"]
_MARKUPS_SCHEMA = "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#"
_FORMATS = {".csv": "csv", ".fcsv": "fcsv", ".json": "json", ".txt": "elastix", ".pts": "elastix"}


@dataclass(frozen=True, eq=False)
class Landmarks:
    """Landmarks in world RAS mm.

    Args:
        points: ``(P, D)`` float64 world RAS mm coordinates (D = 2 or 3).
        names: optional ``P`` names (labels), in point order.

    Raises:
        ValueError: on another shape, non-finite values or a wrong number of names.
    """

    points: np.ndarray
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        pts = self.points.detach().cpu().numpy() if isinstance(self.points, torch.Tensor) else self.points
        pts = np.array(pts, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] not in (2, 3):
            raise ValueError(f"points: expected shape (P, 2) or (P, 3) (world RAS mm), got {pts.shape}")
        if not np.all(np.isfinite(pts)):
            raise ValueError("points: expected finite coordinates, got NaN or infinite values")
        pts.setflags(write=False)
        object.__setattr__(self, "points", pts)
        if self.names is not None:
            names = tuple(str(n) for n in self.names)
            if len(names) != pts.shape[0]:
                raise ValueError(f"names: expected {pts.shape[0]} names (one per point), got {len(names)}")
            object.__setattr__(self, "names", names)

    @property
    def ndim(self) -> int:
        """Number of world dimensions D."""
        return int(self.points.shape[1])

    def __len__(self) -> int:
        return int(self.points.shape[0])


# ---------------------------------------------------------------------------------------------- helpers
def _flip(ndim: int) -> np.ndarray:
    return np.array([-1.0, -1.0, 1.0][:ndim])


def _to_ras(points: np.ndarray, system: CoordinateSystem) -> np.ndarray:
    return points * _flip(points.shape[1]) if system is CoordinateSystem.LPS else points


def _system(value: object, name: str = "coordinate_system") -> CoordinateSystem | None:
    return None if value is None else as_enum(value, CoordinateSystem, name)


def _stated(stated: CoordinateSystem, given: CoordinateSystem | None, path: Path) -> CoordinateSystem:
    if given is not None and given is not stated:
        logger.warning("%s states coordinate system %s; ignoring coordinate_system=%s", path, stated.name, given.name)
    return stated


def _float(text: str, path: Path, lineno: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}, line {lineno}: expected a number for {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{path}, line {lineno}: expected a finite number for {what}, got {text!r}")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _format_of(path: Path, name: str = "path") -> str:
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        valid = ", ".join([".csv", ".fcsv", ".mrk.json", ".json", ".txt (elastix)", ".pts (elastix)"])
        raise ValueError(f"{name}: expected a landmark file ending in {valid}, got {path.name!r}")
    return _FORMATS[suffix]


# ---------------------------------------------------------------------------------------------- readers
_AXIS_COLUMN = re.compile(r"(?P<axis>[xyz])(?:[_ -]?(?P<system>ras|lps))?(?:[_ -]?\(?mm\)?)?")
_NAME_COLUMNS = ("label", "id", "name")


def _csv_header(header: list[str], path: Path, lineno: int) -> tuple[list[int], int | None, CoordinateSystem | None]:
    """Coordinate columns (x, y[, z]), the name column and the coordinate system the header states, if any."""
    found: dict[str, int] = {}
    systems: set[str] = set()
    for i, col in enumerate(header):
        m = _AXIS_COLUMN.fullmatch(col)
        if m is None:
            continue
        if m["axis"] in found:
            raise ValueError(f"{path}, line {lineno}: more than one column for {m['axis']} "
                             f"({header[found[m['axis']]]!r} and {col!r})")
        found[m["axis"]] = i
        if m["system"]:
            systems.add(m["system"])
    if "x" not in found or "y" not in found:
        raise ValueError(
            f"{path}, line {lineno}: expected a header with columns x, y[, z] (or x_ras_mm ..., x_lps ...; "
            f"optionally label, id or name), got {header}"
        )
    if len(systems) > 1:
        raise ValueError(f"{path}, line {lineno}: the coordinate columns state different systems ({sorted(systems)})")
    cols = [found[a] for a in "xyz" if a in found]
    label_col = next((header.index(c) for c in _NAME_COLUMNS if c in header), None)
    stated = _SLICER_CODES[systems.pop()] if systems else None
    return cols, label_col, stated


def _read_csv(path: Path, text: str, given: CoordinateSystem | None) -> Landmarks:
    rows = [(n, r) for n, r in enumerate(csv.reader(io.StringIO(text)), start=1) if r and any(c.strip() for c in r)]
    rows = [(n, [c.strip() for c in r]) for n, r in rows if not r[0].strip().startswith("#")]
    if not rows:
        raise ValueError(f"{path}: no landmarks found")
    first_no, first = rows[0]
    stated = None
    if all(_is_number(c) for c in first):
        if len(first) not in (2, 3):
            raise ValueError(f"{path}, line {first_no}: expected 2 or 3 coordinates (no header), got {len(first)} columns")
        cols, label_col, data = list(range(len(first))), None, rows
    else:
        cols, label_col, stated = _csv_header([c.lower() for c in first], path, first_no)
        data = rows[1:]
    system = _stated(stated, given, path) if stated is not None else (given or CoordinateSystem.RAS)
    pts, names = [], []
    for lineno, row in data:
        if len(row) <= max(cols + ([label_col] if label_col is not None else [])):
            raise ValueError(f"{path}, line {lineno}: expected at least {max(cols) + 1} columns, got {len(row)}")
        pts.append([_float(row[c], path, lineno, "xyz"[i]) for i, c in enumerate(cols)])
        if label_col is not None:
            names.append(row[label_col])
    if not pts:
        raise ValueError(f"{path}: no landmarks found after the header")
    return Landmarks(_to_ras(np.asarray(pts), system), tuple(names) if label_col is not None else None)


def _read_fcsv(path: Path, text: str, given: CoordinateSystem | None) -> Landmarks:
    system: CoordinateSystem | None = None
    columns = _FCSV_COLUMNS
    pts, names = [], []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            key, _, value = line.lstrip("#").partition("=")
            key, value = key.strip().lower(), value.strip()
            if key == "coordinatesystem":
                if value.lower() not in _SLICER_CODES:
                    raise ValueError(f"{path}, line {lineno}: expected CoordinateSystem RAS, LPS, 0 or 1, got {value!r}")
                system = _SLICER_CODES[value.lower()]
            elif key == "columns":
                columns = [c.strip() for c in value.split(",")]
            continue
        row = next(csv.reader([line]))
        idx = {c.lower(): i for i, c in enumerate(columns)}
        if not all(a in idx for a in "xyz"):
            raise ValueError(f"{path}: expected x, y, z in the '# columns' line, got {columns}")
        if len(row) <= max(idx["x"], idx["y"], idx["z"]):
            raise ValueError(f"{path}, line {lineno}: expected x, y, z in columns {idx['x'] + 1}-{idx['z'] + 1}, got {line!r}")
        pts.append([_float(row[idx[a]], path, lineno, a) for a in "xyz"])
        label = row[idx["label"]] if "label" in idx and idx["label"] < len(row) else ""
        names.append(label or f"F-{len(pts)}")
    if not pts:
        raise ValueError(f"{path}: no landmarks found")
    system = _stated(system, given, path) if system is not None else (given or CoordinateSystem.RAS)
    return Landmarks(_to_ras(np.asarray(pts), system), tuple(names))


def _read_markups_json(path: Path, text: str, given: CoordinateSystem | None) -> Landmarks:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
    markups = doc.get("markups") if isinstance(doc, dict) else None
    if not isinstance(markups, list) or not markups:
        raise ValueError(f"{path}: expected a Slicer markups file with a non-empty 'markups' list")
    pts, names = [], []
    for m, markup in enumerate(markups):
        units = markup.get("coordinateUnits", "mm")
        if units != "mm":
            raise ValueError(f"{path}: markups[{m}]: expected coordinateUnits 'mm', got {units!r}")
        if "coordinateSystem" in markup:
            code = str(markup["coordinateSystem"]).lower()
            if code not in _SLICER_CODES:
                raise ValueError(f"{path}: markups[{m}]: expected coordinateSystem 'LPS' or 'RAS', got {markup['coordinateSystem']!r}")
            system = _stated(_SLICER_CODES[code], given, path)
        else:
            system = given or CoordinateSystem.LPS
        for c, cp in enumerate(markup.get("controlPoints", [])):
            label = str(cp.get("label", "")) or f"F-{len(pts) + 1}"
            if cp.get("positionStatus", "defined") == "undefined" or "position" not in cp:
                logger.warning("%s: control point %r has no defined position; skipped", path, label)
                continue
            pos = cp["position"]
            if not isinstance(pos, list) or len(pos) != 3 or not all(isinstance(v, (int, float)) for v in pos):
                raise ValueError(f"{path}: markups[{m}].controlPoints[{c}]: expected position [x, y, z], got {pos!r}")
            pts.append(_to_ras(np.asarray([pos], dtype=np.float64), system)[0])
            names.append(label)
    if not pts:
        raise ValueError(f"{path}: no control points with a defined position found")
    return Landmarks(np.asarray(pts), tuple(names))


def _read_elastix(path: Path, text: str, given: CoordinateSystem | None, reference: Grid | None) -> Landmarks:
    lines = [(n, l.strip()) for n, l in enumerate(text.splitlines(), start=1) if l.strip()]
    if len(lines) < 2:
        raise ValueError(f"{path}: expected an elastix point file ('point' or 'index', a count, then points)")
    (n0, kind), (n1, count_text) = lines[0], lines[1]
    kind = kind.lower()
    if kind not in ("point", "index"):
        raise ValueError(f"{path}, line {n0}: expected 'point' or 'index', got {lines[0][1]!r}")
    try:
        count = int(count_text)
    except ValueError:
        raise ValueError(f"{path}, line {n1}: expected the number of points, got {count_text!r}") from None
    rows = lines[2:]
    if len(rows) != count:
        raise ValueError(f"{path}, line {n1}: the file announces {count} points but holds {len(rows)}")
    pts = []
    for lineno, line in rows:
        fields = line.split()
        if len(fields) not in (2, 3) or (pts and len(fields) != len(pts[0])):
            want = len(pts[0]) if pts else "2 or 3"
            raise ValueError(f"{path}, line {lineno}: expected {want} coordinates, got {len(fields)}")
        pts.append([_float(f, path, lineno, "a coordinate") for f in fields])
    arr = np.asarray(pts, dtype=np.float64).reshape(-1, len(pts[0]) if pts else 3)
    if kind == "index":
        if reference is None:
            raise ValueError(f"reference: required to read the voxel indices of the elastix 'index' file {path}")
        if reference.ndim != arr.shape[1]:
            raise ValueError(f"reference: expected a {arr.shape[1]}D grid for the indices of {path}, got {reference.ndim}D")
        if given is not None:
            logger.warning("%s holds voxel indices; ignoring coordinate_system=%s", path, given.name)
        return Landmarks(reference.transform_points(arr, "voxel", "world"))
    return Landmarks(_to_ras(arr, given or CoordinateSystem.LPS))


def read_landmarks(
    path: str | os.PathLike,
    *,
    coordinate_system: CoordinateSystem | str | None = None,
    reference: Grid | Image | None = None,
) -> Landmarks:
    """Read a landmark file into world RAS mm (formats and rules in the module docstring).

    Args:
        path: ``.csv``, ``.fcsv``, ``.mrk.json``/``.json``, or an elastix ``.txt``/``.pts`` point file.
        coordinate_system: ``"RAS"`` or ``"LPS"`` for files that do not state theirs (default: RAS for
            CSV and ``.fcsv``, LPS for ``.mrk.json`` and elastix); a file that states its own (Slicer
            headers, CSV columns such as ``x_ras_mm``) wins.
        reference: the grid (or image) whose voxel indices an elastix ``index`` file holds.

    Returns:
        :class:`Landmarks` (points ``(P, D)`` float64 RAS mm; names where the file has labels).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: on an unknown extension or a malformed file (the message names the file and,
            where there is one, the line).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    fmt = _format_of(p)
    given = _system(coordinate_system)
    if isinstance(reference, Image):
        reference = reference.grid
    if reference is not None and not isinstance(reference, Grid):
        raise TypeError(f"reference: expected a Grid or an Image, got {type(reference).__name__}")
    if not p.is_file():
        raise FileNotFoundError(f"landmark file not found: {p}")
    text = p.read_text(encoding="utf-8-sig")
    if fmt == "csv":
        out = _read_csv(p, text, given)
    elif fmt == "fcsv":
        out = _read_fcsv(p, text, given)
    elif fmt == "json":
        out = _read_markups_json(p, text, given)
    else:
        out = _read_elastix(p, text, given, reference)
    logger.debug("read %d landmarks from %s", len(out), p)
    return out


# ---------------------------------------------------------------------------------------------- writers
def _num(v: float) -> str:
    return repr(float(v) + 0.0)


def write_landmarks(
    landmarks: Landmarks | np.ndarray | torch.Tensor | Sequence[Sequence[float]],
    path: str | os.PathLike,
    *,
    names: Sequence[str] | None = None,
    coordinate_system: CoordinateSystem | str | None = None,
    force: bool = False,
) -> Path:
    """Write landmarks (world RAS mm) to a landmark file; the extension picks the format.

    Args:
        landmarks: :class:`Landmarks` or ``(P, D)`` world RAS mm points.
        path: ``.csv``, ``.fcsv``, ``.mrk.json``/``.json`` or elastix ``.txt``/``.pts``.
        names: point names (default: those of ``landmarks``; Slicer files get ``F-1``, ``F-2``, ...).
            Elastix files hold no names.
        coordinate_system: ``"RAS"`` or ``"LPS"``; default: RAS for CSV, LPS for the others. The
            Slicer files state it in their header, CSV and elastix files do not.
        force: overwrite an existing file.

    Returns:
        The written path. Coordinates are written with full float64 precision (round trips are exact).

    Raises:
        ValueError: on an unknown extension, 2D points for a Slicer file, or a bad ``names`` length.
        FileExistsError: if ``path`` exists and ``force`` is False.
        FileNotFoundError: if the folder of ``path`` does not exist.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    fmt = _format_of(p)
    lm = landmarks if isinstance(landmarks, Landmarks) else Landmarks(np.asarray(landmarks, dtype=np.float64))
    lm = Landmarks(lm.points, names if names is not None else lm.names)
    default = CoordinateSystem.RAS if fmt == "csv" else CoordinateSystem.LPS
    system = _system(coordinate_system) or default
    if fmt in ("fcsv", "json") and lm.ndim != 3:
        raise ValueError(f"landmarks: Slicer files hold 3D points, got {lm.ndim}D points for {p.name!r}")
    pts = _to_ras(lm.points, system)  # the flip is its own inverse: RAS -> LPS
    labels = list(lm.names) if lm.names is not None else [f"F-{i + 1}" for i in range(len(lm))]
    buf = io.StringIO()
    if fmt == "csv":
        w = csv.writer(buf, lineterminator="\n")
        axes = ["x", "y", "z"][: lm.ndim]
        w.writerow((["label"] if lm.names is not None else []) + axes)
        for i, row in enumerate(pts):
            w.writerow(([labels[i]] if lm.names is not None else []) + [_num(v) for v in row])
    elif fmt == "fcsv":
        buf.write("# Markups fiducial file version = 4.11\n")
        buf.write(f"# CoordinateSystem = {system.name}\n")
        buf.write(f"# columns = {','.join(_FCSV_COLUMNS)}\n")
        w = csv.writer(buf, lineterminator="\n")
        for i, row in enumerate(pts):
            w.writerow([f"vtkMRMLMarkupsFiducialNode_{i}", *[_num(v) for v in row], 0, 0, 0, 1, 1, 1, 0, labels[i], "", ""])
    elif fmt == "json":
        orientation = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0] if system is CoordinateSystem.LPS else np.eye(3).ravel().tolist()
        points = [
            {"id": str(i + 1), "label": labels[i], "description": "", "associatedNodeID": "",
             "position": [float(v) + 0.0 for v in row], "orientation": orientation, "selected": True,
             "locked": False, "visibility": True, "positionStatus": "defined"}
            for i, row in enumerate(pts)
        ]
        doc = {"@schema": _MARKUPS_SCHEMA, "markups": [{"type": "Fiducial", "coordinateSystem": system.name,
               "coordinateUnits": "mm", "controlPoints": points}]}
        buf.write(json.dumps(doc, indent=2) + "\n")
    else:
        buf.write(f"point\n{len(lm)}\n")
        for row in pts:
            buf.write(" ".join(_num(v) for v in row) + "\n")
    from ..io import write_text_atomic

    write_text_atomic(p, buf.getvalue(), force=force)
    logger.debug("wrote %d landmarks to %s", len(lm), p)
    return p


# ---------------------------------------------------------------------------------------------- pairing
def pair_landmarks(fixed: Landmarks, moving: Landmarks) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]:
    """Corresponding points of two landmark sets.

    Pairs by name when both sets have unique names and share at least one (points without a partner
    are dropped, logged); otherwise by order, which needs equal counts.

    Returns:
        ``(fixed_points, moving_points, names)``: ``(P, D)`` arrays in corresponding order, and the
        names (the fixed set's) or None.

    Raises:
        ValueError: on different dimensions, or unequal counts without usable names.
    """
    for name, lm in (("fixed", fixed), ("moving", moving)):
        if not isinstance(lm, Landmarks):
            raise TypeError(f"{name}: expected Landmarks, got {type(lm).__name__}")
    if fixed.ndim != moving.ndim:
        raise ValueError(f"moving: expected {fixed.ndim}D landmarks (as fixed), got {moving.ndim}D")
    fn, mn = fixed.names, moving.names
    if fn and mn and len(set(fn)) == len(fn) and len(set(mn)) == len(mn) and set(fn) & set(mn):
        common = [n for n in fn if n in set(mn)]
        if len(common) < max(len(fn), len(mn)):
            dropped = sorted((set(fn) | set(mn)) - set(common))
            logger.warning("landmarks without a partner of the same name are left out: %s", ", ".join(dropped))
        mi = {n: i for i, n in enumerate(mn)}
        fi = {n: i for i, n in enumerate(fn)}
        return (
            fixed.points[[fi[n] for n in common]],
            moving.points[[mi[n] for n in common]],
            tuple(common),
        )
    if len(fixed) != len(moving):
        raise ValueError(
            f"moving: expected {len(fixed)} landmarks (as many as fixed, paired by order since the names do not match), "
            f"got {len(moving)}"
        )
    return fixed.points.copy(), moving.points.copy(), fn
