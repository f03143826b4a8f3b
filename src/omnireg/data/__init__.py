"""Small sample data shipped with omnireg (about 1.3 MB), for examples, tests and demonstrations.

Contents of ``omnireg/data/sample/`` (sources, licences and processing in its ``ATTRIBUTION.md``;
built by ``scripts/make_sample.py``):

* ``"t1"`` -> ``t1.nii.gz``: 3D brain T1, float32, 80 x 85 x 100, 2 mm isotropic, world (0, 0, 0) near the
  brain centre (the VoxelMorph test subject, skull-stripped, intensities in [0, 1]).
* ``"labels"`` -> ``labels.nii.gz``: its tissue labels, uint8, same grid (ids 1-7 listed in ``labels.tsv``).
* ``"t2w"`` -> ``t2w_synthetic.nii.gz``: a **synthetic** T2-like contrast of the same anatomy on the same
  grid (CSF bright, white matter dark), computed from the labels and the T1.
* ``"labels_tsv"`` -> ``labels.tsv``: the label lookup table, a header line then ``id<TAB>name`` lines.
* ``"t1_2d"`` -> ``t1_2d.nii.gz``: a 2D T1 slice, uint8, 181 x 217, 1 mm (ITK Examples/Data).
* ``"pd_2d"`` -> ``pd_2d.nii.gz``: the aligned 2D proton-density slice on the same grid.

Example:
    >>> import nibabel as nib
    >>> from omnireg.data import sample_path, sample_label_names
    >>> nib.load(sample_path("t1")).shape
    (80, 85, 100)
    >>> sample_label_names()[1]
    'CSF/ventricles'
"""

from __future__ import annotations

import atexit
import contextlib
from importlib import resources
from pathlib import Path

__all__ = ["sample_path", "sample_label_names"]

# valid names for sample_path, mapped to their file names (one place)
_SAMPLE_FILES: dict[str, str] = {
    "t1": "t1.nii.gz",
    "labels": "labels.nii.gz",
    "t2w": "t2w_synthetic.nii.gz",
    "labels_tsv": "labels.tsv",
    "t1_2d": "t1_2d.nii.gz",
    "pd_2d": "pd_2d.nii.gz",
}

_EXTRACTED = contextlib.ExitStack()  # keeps files extracted from a zipped install alive until exit
atexit.register(_EXTRACTED.close)


def sample_path(name: str) -> Path:
    """Path of a bundled sample file.

    Args:
        name: one of ``"t1"``, ``"labels"``, ``"t2w"``, ``"labels_tsv"``, ``"t1_2d"``, ``"pd_2d"``
            (see the module docstring for what each holds).

    Returns:
        A :class:`pathlib.Path` to the file inside the installed package (or to a temporary copy when
        the package is imported from a zip archive).

    Raises:
        TypeError: if ``name`` is not a string.
        ValueError: if ``name`` is not one of the valid names (the message lists them).
        FileNotFoundError: if the package was installed without its data files.
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, got {type(name).__name__}")
    if name not in _SAMPLE_FILES:
        valid = ", ".join(repr(n) for n in _SAMPLE_FILES)
        raise ValueError(f"name: expected one of {valid}, got {name!r}")
    resource = resources.files(__name__).joinpath("sample", _SAMPLE_FILES[name])
    if not resource.is_file():
        raise FileNotFoundError(f"sample file {_SAMPLE_FILES[name]!r} is missing from the omnireg installation")
    if isinstance(resource, Path):
        return resource
    return Path(_EXTRACTED.enter_context(resources.as_file(resource)))


def sample_label_names() -> dict[int, str]:
    """Tissue label ids of the 3D sample ``"labels"`` and their names, read from ``labels.tsv``.

    Returns:
        ``{1: "CSF/ventricles", 2: "cerebral cortex", ...}``; background (0) is not listed.
    """
    text = sample_path("labels_tsv").read_text(encoding="utf-8")
    names: dict[int, str] = {}
    for line in text.splitlines()[1:]:  # first line is the header "id<TAB>name"
        if line.strip():
            key, value = line.split("\t", 1)
            names[int(key)] = value.strip()
    return names
