"""Label maps for training: FreeSurfer structure tables, class indices and prepared label-map sets.

A *prepared* label-map set is a folder written by ``scripts/prepare_synthseg.py`` (or any code calling
:func:`write_prepared_index`): label maps with FreeSurfer numbers on one common grid, and
``prepared.json`` recording the grid, the split (train / validation / test subjects), the transforms
and the provenance. :class:`LabelMapSet` loads the maps of some subjects into one tensor of
**class indices** (``0 .. K-1``, ``K`` = number of distinct labels) on a device, with the table
``values[k]`` = FreeSurfer number of class ``k``; synthesis and Dice work on class indices. When the index
names a ``tensor_file`` (:func:`write_label_tensors`: the training and validation maps as one tensor, with
its SHA-256 in the index), the maps are read from it: no NIfTI reader is needed (a GPU machine without
nibabel) and loading takes a fraction of a second.

Convention:
    The 33 named labels of the SynthSeg table are background and the 32 structures of
    :data:`NAMED_STRUCTURES`; "Dice over the named structures" is the mean over those 32 (background
    excluded) of the structures present in the fixed label map.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..core import Grid

__all__ = [
    "NAMED_STRUCTURES",
    "PREPARED_FORMAT",
    "T1_MEANS",
    "LabelMapSet",
    "class_table",
    "read_prepared_index",
    "sha256_file",
    "structure_lookup",
    "t1_means",
    "to_classes",
    "write_label_tensors",
    "write_prepared_index",
]

log = logging.getLogger(__name__)

PREPARED_FORMAT = "omnireg-prepared-label-maps"
TENSORS_FORMAT = "omnireg-label-tensors"

NAMED_STRUCTURES: dict[int, str] = {
    2: "Left-Cerebral-White-Matter", 3: "Left-Cerebral-Cortex", 4: "Left-Lateral-Ventricle",
    5: "Left-Inf-Lat-Vent", 7: "Left-Cerebellum-White-Matter", 8: "Left-Cerebellum-Cortex",
    10: "Left-Thalamus", 11: "Left-Caudate", 12: "Left-Putamen", 13: "Left-Pallidum",
    14: "3rd-Ventricle", 15: "4th-Ventricle", 16: "Brain-Stem", 17: "Left-Hippocampus",
    18: "Left-Amygdala", 24: "CSF", 26: "Left-Accumbens-area", 28: "Left-VentralDC",
    41: "Right-Cerebral-White-Matter", 42: "Right-Cerebral-Cortex", 43: "Right-Lateral-Ventricle",
    44: "Right-Inf-Lat-Vent", 46: "Right-Cerebellum-White-Matter", 47: "Right-Cerebellum-Cortex",
    49: "Right-Thalamus", 50: "Right-Caudate", 51: "Right-Putamen", 52: "Right-Pallidum",
    53: "Right-Hippocampus", 54: "Right-Amygdala", 58: "Right-Accumbens-area", 60: "Right-VentralDC",
}
"""The 32 named brain structures of the SynthSeg label table (FreeSurfer numbers; background excluded)."""

# Typical T1-weighted intensities (white matter 0.85, grey matter ~0.5, CSF 0.12, background 0), chosen by
# hand from the usual ordering WM > deep GM > cortex > CSF of T1 MRI; labels missing here (extra-cerebral
# tissue, numbers >= 500 in the SynthSeg maps) get a random intensity per image.
_WM, _CTX, _CSF = 0.85, 0.50, 0.12
T1_MEANS: dict[int, float] = {
    0: 0.0,
    2: _WM, 41: _WM, 7: 0.80, 46: 0.80, 16: 0.72, 28: 0.70, 60: 0.70, 85: 0.75, 77: 0.60,
    251: _WM, 252: _WM, 253: _WM, 254: _WM, 255: _WM,
    3: _CTX, 42: _CTX, 8: 0.55, 47: 0.55,
    10: 0.68, 49: 0.68, 11: 0.56, 50: 0.56, 12: 0.60, 51: 0.60, 13: 0.72, 52: 0.72,
    17: 0.50, 53: 0.50, 18: 0.52, 54: 0.52, 26: 0.56, 58: 0.56, 163: 0.58, 164: 0.58, 136: 0.55, 137: 0.55,
    4: _CSF, 5: _CSF, 43: _CSF, 44: _CSF, 14: _CSF, 15: _CSF, 24: _CSF, 72: _CSF,
    30: 0.45, 62: 0.45, 31: 0.40, 63: 0.40, 25: 0.40, 57: 0.40,
}
"""T1-like mean intensity (in ``[0, 1]``) of FreeSurfer labels, used by the ``t1`` synthesis mode."""


def t1_means(values: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """T1-like means of the labels ``values`` and a mask of the labels without a table entry.

    Returns:
        ``(means, unknown)``, each ``(K,)``: float64 means (0 where unknown) and a bool mask.
    """
    vals = [int(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]
    means = torch.tensor([T1_MEANS.get(v, 0.0) for v in vals], dtype=torch.float64)
    unknown = torch.tensor([v not in T1_MEANS for v in vals], dtype=torch.bool)
    return means, unknown


def class_table(label_maps: Sequence[np.ndarray]) -> np.ndarray:
    """The sorted distinct label numbers of ``label_maps`` (background 0 always included): ``values[k]``."""
    found = {0}
    for a in label_maps:
        found.update(int(v) for v in np.unique(a))
    return np.array(sorted(found), dtype=np.int64)


def structure_lookup(values: torch.Tensor, structures: Sequence[int] = tuple(NAMED_STRUCTURES)) -> torch.Tensor:
    """Map class indices to structure indices: ``lut[k] = 1 + structures.index(values[k])``, else 0.

    Args:
        values: ``(K,)`` FreeSurfer number of each class.
        structures: the structures kept (default: the 32 :data:`NAMED_STRUCTURES`).

    Returns:
        ``(K,)`` int64 on the device of ``values``; ``lut[labels]`` turns a class map into a structure map
        with ``len(structures) + 1`` classes (0 = everything else).
    """
    pos = {int(s): i + 1 for i, s in enumerate(structures)}
    return torch.tensor([pos.get(int(v), 0) for v in values.tolist()], dtype=torch.int64, device=values.device)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_prepared_index(folder: str | Path, index: dict) -> Path:
    """Write ``index`` as ``folder/prepared.json`` (adds the format header); returns the path.

    ``index`` must hold ``grid`` (:meth:`Grid.to_dict`), ``split`` (``train``, ``validation``, ``test``:
    lists of subject names) and ``subjects`` (name -> ``{"file": path relative to folder, ...}``).

    Raises:
        ValueError: a missing key, or a subject of the split without an entry.
    """
    for key in ("grid", "split", "subjects"):
        if key not in index:
            raise ValueError(f"index: missing key {key!r}")
    for part in ("train", "validation", "test"):
        for name in index["split"].get(part, []):
            if name not in index["subjects"]:
                raise ValueError(f"index: split {part!r} names subject {name!r} without an entry in 'subjects'")
    path = Path(folder) / "prepared.json"
    data = {"format": PREPARED_FORMAT, "version": 1, **index}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def read_prepared_index(folder: str | Path) -> dict:
    """Read ``folder/prepared.json`` (see :func:`write_prepared_index`).

    Raises:
        FileNotFoundError: no ``prepared.json`` in ``folder``.
        ValueError: not a prepared label-map index.
    """
    path = Path(folder) / "prepared.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"label_maps: no prepared.json in {folder} (prepare the label maps with scripts/prepare_synthseg.py)"
        )
    data = json.loads(path.read_text())
    if data.get("format") != PREPARED_FORMAT:
        raise ValueError(f"label_maps: {path} is not a prepared label-map index (format {data.get('format')!r})")
    return data


@dataclass
class LabelMapSet:
    """Label maps of several subjects on one grid, as class indices in memory (on any device).

    Attributes:
        names: subject names, in the order of ``labels``.
        labels: ``(M, 1, *S)`` uint8 class indices (``values[labels]`` = FreeSurfer numbers).
        values: ``(K,)`` int64 FreeSurfer number of each class (``values[0] == 0``, background).
        grid: the common grid of the maps (world RAS mm).
        index_sha256: SHA-256 of the ``prepared.json`` they came from ("" if built in memory).
    """

    names: list[str]
    labels: torch.Tensor
    values: torch.Tensor
    grid: Grid
    index_sha256: str = ""

    @classmethod
    def load(
        cls,
        folder: str | Path,
        subjects: Sequence[str],
        *,
        values: Sequence[int] | None = None,
        device: str | torch.device = "cpu",
    ) -> "LabelMapSet":
        """Load the aligned maps of ``subjects`` from a prepared folder.

        Args:
            folder: a folder with ``prepared.json``.
            subjects: subject names (keys of the index's ``subjects``).
            values: the class table to use (default: the index's ``label_values``, else the labels found).
            device: where the tensor lives (preloaded once: training reads no files).

        Raises:
            FileNotFoundError, ValueError: a missing folder, index or file; a subject not in the index; a map
                whose grid differs from the index's grid; a label missing from ``values``.
        """
        index = read_prepared_index(folder)
        grid = Grid.from_dict(index["grid"])
        for name in subjects:
            if name not in index["subjects"]:
                raise ValueError(f"subjects: {name!r} is not in {Path(folder) / 'prepared.json'}")
        arrays = _read_tensors(Path(folder), index, subjects)
        if arrays is None:
            arrays = [_read_nifti(Path(folder), index["subjects"][name]["file"], grid) for name in subjects]
        table = np.asarray(values if values is not None else index.get("label_values") or class_table(arrays), dtype=np.int64)
        labels = to_classes(arrays, table)
        sha = sha256_file(Path(folder) / "prepared.json")
        return cls(list(subjects), labels.to(device), torch.as_tensor(table, device=device), grid, sha)

    @classmethod
    def from_arrays(cls, names: Sequence[str], arrays: Sequence[np.ndarray], grid: Grid,
                    *, device: str | torch.device = "cpu") -> "LabelMapSet":
        """Build a set from label arrays (FreeSurfer numbers) on ``grid`` (tests, in-memory data)."""
        arrays = [np.asarray(a, dtype=np.int64) for a in arrays]
        table = class_table(arrays)
        return cls(list(names), to_classes(arrays, table).to(device), torch.as_tensor(table, device=device), grid)

    @property
    def ndim(self) -> int:
        return self.labels.ndim - 2

    def to(self, device: str | torch.device) -> "LabelMapSet":
        return LabelMapSet(self.names, self.labels.to(device), self.values.to(device), self.grid, self.index_sha256)


def _read_nifti(folder: Path, file: str, grid: Grid) -> np.ndarray:
    from ..io import load_image

    img = load_image(folder / file)
    if not img.grid.same_as(grid, atol=1e-3):
        raise ValueError(f"label_maps: {file} is not on the index's grid {grid!r}")
    return img.data[0].numpy().astype(np.int64)


def _read_tensors(folder: Path, index: dict, subjects: Sequence[str]) -> list[np.ndarray] | None:
    """The maps of ``subjects`` from the index's tensor file, or None when there is none (or it lacks one)."""
    name = index.get("tensor_file")
    if not name or not (folder / name).is_file():
        return None
    if sha256_file(folder / name) != index.get("tensor_sha256"):
        raise ValueError(f"label_maps: {folder / name} does not match the SHA-256 recorded in prepared.json")
    data = torch.load(folder / name, map_location="cpu", weights_only=True)
    if data.get("format") != TENSORS_FORMAT or any(s not in data["names"] for s in subjects):
        return None
    pos = {n: i for i, n in enumerate(data["names"])}
    return [data["labels"][pos[s]].numpy().astype(np.int64) for s in subjects]


def write_label_tensors(folder: str | Path, names: Sequence[str], arrays: Sequence[np.ndarray], file: str = "labels.pt") -> tuple[str, str]:
    """Save label maps (FreeSurfer numbers, one grid) as one int16 tensor file in ``folder``.

    Returns:
        ``(file, sha256)``: record them as ``tensor_file`` and ``tensor_sha256`` in the index.
    """
    from ..networks.store import atomic_torch_save

    labels = torch.from_numpy(np.stack([np.asarray(a, dtype=np.int16) for a in arrays]))
    atomic_torch_save({"format": TENSORS_FORMAT, "names": list(names), "labels": labels}, Path(folder) / file)
    return file, sha256_file(Path(folder) / file)


def to_classes(arrays: Sequence[np.ndarray], table: np.ndarray) -> torch.Tensor:
    """Class indices ``(M, 1, *S)`` uint8 of label arrays (FreeSurfer numbers) under ``table`` (``table[k]`` = the
    number of class ``k``). Raises ValueError on a label not in the table or a table of over 256 labels."""
    if len(table) > 256:
        raise ValueError(f"label_maps: {len(table)} distinct labels; at most 256 are supported")
    lut = np.full(int(table.max()) + 1, -1, dtype=np.int64)
    lut[table] = np.arange(len(table))
    out = []
    for a in arrays:
        if a.min() < 0 or a.max() > table.max() or (lut[a] < 0).any():
            missing = sorted(set(np.unique(a).tolist()) - set(table.tolist()))
            raise ValueError(f"label_maps: labels {missing[:10]} are not in the class table")
        out.append(torch.from_numpy(lut[a].astype(np.uint8)))
    return torch.stack(out)[:, None]
