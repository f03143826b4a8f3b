"""Label lookup tables: label id -> name, read from TSV/CSV tables or FreeSurfer colour LUTs.

Accepted layouts (blank lines and lines starting with ``#`` are skipped everywhere):

* **TSV** (a tab on the line): ``id<TAB>name[<TAB>...]``, e.g. omnireg's ``labels.tsv`` or a BIDS
  ``dseg.tsv`` (columns ``index``, ``name``, ...). Names may contain spaces.
* **CSV** (a comma on the line, parsed with :mod:`csv`, so quoted names work): ``id,name[,...]``.
* **Whitespace separated**, e.g. FreeSurfer's ``FreeSurferColorLUT.txt``: ``id name R G B A``. When a
  line ends in four integers (the colour) they are dropped, and the tokens in between form the name.

An optional header line (first non-comment line whose first field is not an integer) names the
columns: the id column is the first of ``id``, ``index``, ``label_id``, ``value``, ``label`` present,
the name column the first of ``name``, ``label_name``, ``structure``, ``description``; without a
header the id is the first and the name the second field.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

__all__ = ["read_label_table"]

logger = logging.getLogger(__name__)

_ID_COLUMNS = ("id", "index", "label_id", "value", "label")
_NAME_COLUMNS = ("name", "label_name", "structure", "description")


def _split(line: str) -> list[str]:
    if "\t" in line:
        return [f.strip() for f in line.split("\t")]
    if "," in line:
        return [f.strip() for f in next(csv.reader(io.StringIO(line)))]
    tokens = line.split()
    if len(tokens) >= 6 and all(_is_int(t) for t in tokens[-4:]):  # FreeSurfer: id name R G B A
        return [tokens[0], " ".join(tokens[1:-4])]
    return [tokens[0], " ".join(tokens[1:])] if len(tokens) > 1 else tokens


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def read_label_table(path: str | os.PathLike) -> dict[int, str]:
    """Read a label lookup table (TSV, CSV or FreeSurfer LUT; see the module docstring).

    Args:
        path: the table file.

    Returns:
        ``{id: name}`` in file order. A later line with the same id replaces the earlier name (logged).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: on a line whose id is not an integer or that has no name; the message names the
            file and the line number.
        TypeError: if ``path`` is not a path.

    Example:
        >>> from omnireg.data import sample_path
        >>> read_label_table(sample_path("labels_tsv"))[2]
        'cerebral cortex'
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"label table not found: {p}")
    text = p.read_text(encoding="utf-8-sig")
    names: dict[int, str] = {}
    id_col, name_col = 0, 1
    header_done = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = _split(line)
        if not header_done:
            header_done = True
            if not _is_int(fields[0]):  # a header line names the columns
                header = [f.lower() for f in fields]
                id_col = next((header.index(c) for c in _ID_COLUMNS if c in header), 0)
                name_col = next((header.index(c) for c in _NAME_COLUMNS if c in header and header.index(c) != id_col), 1)
                continue
        if len(fields) <= id_col or not _is_int(fields[id_col]):
            got = fields[id_col] if len(fields) > id_col else line
            raise ValueError(f"{p}, line {lineno}: expected an integer label id in column {id_col + 1}, got {got!r}")
        if len(fields) <= name_col or not fields[name_col]:
            raise ValueError(f"{p}, line {lineno}: expected an integer id and a name, got {raw.strip()!r}")
        key = int(fields[id_col])
        if key in names:
            logger.info("%s, line %d: label %d listed again; using the later name", p, lineno, key)
        names[key] = fields[name_col]
    if not names:
        raise ValueError(f"{p}: no label lines found (expected 'id name' lines)")
    return names
