"""The pairs table of a batch: ``PAIRS.csv`` read, checked up front and turned into :class:`PairSpec` objects.

Columns (a header line names them; case and surrounding spaces are ignored):

* ``fixed``, ``moving`` (required): the two images of the pair;
* ``id``: the pair's name and the name of its output folder (letters, digits, ``.``, ``_``, ``-``; not
  starting with ``.``); rows without one get an id derived from the file names (see :func:`derive_ids`);
* ``fixed_labels``, ``moving_labels``: label maps on the fixed / moving grid (Dice per label needs both;
  ``moving_labels`` alone is warped and written);
* ``fixed_landmarks``, ``moving_landmarks``: landmark files (TRE needs both);
* ``fixed_mask``, ``moving_mask``: masks on the fixed / moving grid.

Relative paths are relative to the folder of the CSV file; empty cells of optional columns mean "none".
Everything that can be checked without reading the images is checked before any registration runs, in
two kinds:

* the table's structure (an empty file, missing, unknown or repeated columns, rows with more fields than
  the header, no rows, ids that are not folder names or repeat) stops the whole batch at once with one
  line naming the CSV line, row and column (``ValueError``);
* a row whose cells cannot be used (an empty required cell, a file that does not exist, a folder given
  as a landmark file, a one-sided label or landmark column) does not stop the others: its
  :class:`PairSpec` carries the reason in ``problem`` (the first problem, naming the line, row and
  column, and how many more the row has), the batch does not run it and reports it as ``invalid``.

Files that exist but are corrupt are not detected here; they fail when the pair runs, and the failure is
recorded (status ``failed``).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

__all__ = ["REQUIRED_COLUMNS", "OPTIONAL_COLUMNS", "RESERVED_NAMES", "PairSpec", "read_pairs", "derive_ids"]

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("fixed", "moving")
OPTIONAL_COLUMNS = (
    "id",
    "fixed_labels",
    "moving_labels",
    "fixed_landmarks",
    "moving_landmarks",
    "fixed_mask",
    "moving_mask",
)
#: Names in the output folder that belong to the batch itself, so no pair may use them as its id.
RESERVED_NAMES = frozenset({"summary.csv", "summary.json", "batch.json"})

_FILE_COLUMNS = tuple(c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c != "id")
_BOTH_NEEDED = (("fixed_labels", "moving_labels", "needed for the Dice"),
                ("fixed_landmarks", "moving_landmarks", "needed for the TRE"),
                ("moving_landmarks", "fixed_landmarks", "needed for the TRE"))
_ID_PATTERN = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]+")


@dataclass(frozen=True)
class PairSpec:
    """One pair of a batch: its id and absolute input paths (``None`` where the CSV cell is empty).

    Attributes:
        id: the pair's name, also the name of its output folder ``OUT/<id>/``.
        fixed, moving: the images; the result lives on the fixed grid.
        fixed_labels, moving_labels, fixed_landmarks, moving_landmarks, fixed_mask, moving_mask: optional inputs
            (see the module docstring).
        row: 1-based number of the data row in the CSV (the header is row 0), for messages.
        problem: why the row cannot be used (one line naming the CSV line, row and column), or ``None``.
            An invalid pair is reported, not run; its paths may be ``None`` or missing.
    """

    id: str
    fixed: Path | None
    moving: Path | None
    fixed_labels: Path | None = None
    moving_labels: Path | None = None
    fixed_landmarks: Path | None = None
    moving_landmarks: Path | None = None
    fixed_mask: Path | None = None
    moving_mask: Path | None = None
    row: int = 0
    problem: str | None = None

    def inputs(self) -> dict[str, str | None]:
        """The input paths by column name, as strings (``None`` for empty cells)."""
        return {f.name: (None if getattr(self, f.name) is None else str(getattr(self, f.name)))
                for f in fields(self) if f.name in _FILE_COLUMNS}


def _stem(path: str) -> str:
    """File name without its image extension(s): ``sub-01_T1w.nii.gz`` -> ``sub-01_T1w``."""
    name = Path(path.rstrip("/\\")).name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return Path(name).stem if "." in name else name


def _clean(text: str) -> str:
    out = _UNSAFE.sub("_", text).strip("_")
    out = out.lstrip(".")
    return out or "pair"


def derive_ids(rows: list[tuple[str | None, str, str]]) -> list[str]:
    """Unique output-folder ids for rows ``(id or None, fixed, moving)``, in row order.

    A row with an id keeps it. Otherwise the id is the moving image's file name without extensions
    (``sub-02_T1w.nii.gz`` -> ``sub-02_T1w``); where several rows share that name, their moving paths
    relative to the CSV folder are used instead (``sub-02/anat/T1w.nii.gz`` -> ``sub-02_anat_T1w``), then
    ``<moving>_to_<fixed>``, and a remaining clash gets ``-2``, ``-3``, ... in row order. Characters other
    than letters, digits, ``.``, ``_`` and ``-`` become ``_``.

    Derived ids depend on the other rows; give an ``id`` column for ids that stay the same when rows are
    added to the table (a resumed batch finds its results by id).

    Example:
        >>> derive_ids([(None, "a/f.nii.gz", "a/m.nii.gz"), (None, "b/f.nii.gz", "b/m.nii.gz"), ("x", "f", "m")])
        ['a_m', 'b_m', 'x']
    """
    taken = {r[0] for r in rows if r[0]}
    cands: list[list[str]] = []
    for given, fixed, moving in rows:
        if given:
            cands.append([given])
            continue
        rel = os.path.splitext(moving[:-3] if moving.lower().endswith(".gz") else moving)[0]
        names = [_clean(_stem(moving)), _clean(rel.replace("\\", "/").replace("/", "_")),
                 _clean(f"{_stem(moving)}_to_{_stem(fixed)}")]
        cands.append(names)
    chosen: list[str | None] = [c[0] if rows[i][0] else None for i, c in enumerate(cands)]
    for level in range(3):
        counts = Counter(c[min(level, len(c) - 1)] for c in cands)
        for i, c in enumerate(cands):
            if chosen[i] is not None:
                continue
            name = c[level]
            if counts[name] == 1 and name not in taken and name not in RESERVED_NAMES:
                chosen[i] = name
                taken.add(name)
    for i, c in enumerate(cands):
        if chosen[i] is None:
            base, k = c[-1], 2
            name = base if base not in taken and base not in RESERVED_NAMES else f"{base}-{k}"
            while name in taken or name in RESERVED_NAMES:
                k += 1
                name = f"{base}-{k}"
            chosen[i] = name
            taken.add(name)
    return [str(c) for c in chosen]


def read_pairs(path: str | os.PathLike) -> list[PairSpec]:
    """Read and check a pairs table (format and checks in the module docstring).

    Args:
        path: the CSV file.

    Returns:
        One :class:`PairSpec` per data row, in file order, with absolute paths and unique ids; the rows
        whose cells cannot be used have ``problem`` set (and are logged as warnings).

    Raises:
        TypeError: if ``path`` is not a path.
        FileNotFoundError: if the CSV does not exist.
        ValueError: on a structural problem, as one line naming the CSV, the row (and its line in the
            file) and the column, followed by how many more structural problems there are.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"PAIRS: expected a path to a CSV file, got {type(path).__name__}")
    csv_path = Path(path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"PAIRS: no such file: {csv_path}")
    base = csv_path.resolve().parent
    name = csv_path.name
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        while header is not None and not any(c.strip() for c in header):
            header = next(reader, None)
        if header is None:
            raise ValueError(f"{name}: the file is empty; expected a header line with the columns fixed,moving")
        columns = [c.strip().lower() for c in header]
        _check_header(columns, name)
        raw_rows: list[tuple[int, int, dict[str, str]]] = []
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(columns):
                raise ValueError(f"{name} line {reader.line_num} (row {len(raw_rows) + 1}): {len(cells)} fields but the "
                                 f"header has {len(columns)} columns")
            values = {col: (cells[i].strip() if i < len(cells) else "") for i, col in enumerate(columns)}
            raw_rows.append((len(raw_rows) + 1, reader.line_num, values))
    if not raw_rows:
        raise ValueError(f"{name}: no pairs (the table has a header but no rows)")

    problems: list[str] = []
    row_problems: dict[int, list[str]] = {}
    for row, line, values in raw_rows:
        where = f"{name} line {line} (row {row})"
        mine = row_problems.setdefault(row, [])
        for col in REQUIRED_COLUMNS:
            if not values.get(col):
                mine.append(f"{where}, column {col!r}: empty; a path is required")
        for col, other, why in _BOTH_NEEDED:
            if values.get(col) and not values.get(other):
                mine.append(f"{where}, column {other!r}: empty but {col!r} is given; both are {why}")
        for col in _FILE_COLUMNS:
            text = values.get(col)
            if text:
                p = _resolve(text, base)
                if not p.exists():
                    mine.append(f"{where}, column {col!r}: no such file: {p}")
                elif col.endswith("_landmarks") and not p.is_file():
                    mine.append(f"{where}, column {col!r}: expected a file, got a folder: {p}")
        given = values.get("id")
        if given and (not _ID_PATTERN.fullmatch(given) or given in RESERVED_NAMES):
            problems.append(f"{where}, column 'id': {given!r} is not usable as a folder name (letters, digits, '.', "
                            f"'_', '-', not starting with '.', not one of {', '.join(sorted(RESERVED_NAMES))})")
    seen: dict[str, int] = {}
    for row, line, values in raw_rows:
        given = values.get("id")
        if given:
            if given in seen:
                problems.append(f"{name} line {line} (row {row}), column 'id': {given!r} repeats row {seen[given]}")
            else:
                seen[given] = row
    if problems:
        more = f" (and {len(problems) - 1} more problem(s) in {name})" if len(problems) > 1 else ""
        raise ValueError(problems[0] + more)

    ids = derive_ids([(v.get("id") or None, v.get("fixed", ""), v.get("moving", "")) for _, _, v in raw_rows])
    out = []
    for (row, _, values), pair_id in zip(raw_rows, ids):
        kw = {col: _resolve(values[col], base) if values.get(col) else None for col in _FILE_COLUMNS}
        mine = row_problems[row]
        problem = None
        if mine:
            problem = mine[0] + (f" (and {len(mine) - 1} more problem(s) in this row)" if len(mine) > 1 else "")
            logger.warning("pair %s is invalid and will not run: %s", pair_id, problem)
        out.append(PairSpec(id=pair_id, row=row, problem=problem, **kw))
    invalid = sum(p.problem is not None for p in out)
    logger.info("%s: %d pairs%s", csv_path, len(out), f" ({invalid} invalid)" if invalid else "")
    return out


def _check_header(columns: list[str], name: str) -> None:
    dup = sorted(c for c, n in Counter(columns).items() if n > 1 and c)
    if dup:
        raise ValueError(f"{name} header: column {dup[0]!r} appears more than once")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"{name} header: missing required column(s) {', '.join(repr(c) for c in missing)}; "
                         f"the header has {', '.join(repr(c) for c in columns)}")
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise ValueError(f"{name} header: unknown column {unknown[0]!r}; valid columns: "
                         f"{', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}")


def _resolve(text: str, base: Path) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p
