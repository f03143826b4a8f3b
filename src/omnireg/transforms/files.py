"""Transforms to and from ITK files: the bridge between :mod:`omnireg.transforms` and :mod:`omnireg.io`.

``omnireg.io`` reads and writes plain matrices and displacement fields (world RAS, converted to ITK's
LPS on disk); this module turns them into :class:`~omnireg.transforms.Transform` objects and back.

Order convention (as ``antsApplyTransforms -t`` and ITK's ``CompositeTransform``): a list
``[T1, T2, ..., Tn]`` is the mapping ``T1 ∘ T2 ∘ ... ∘ Tn``: **the last one acts on the fixed-space
points first**. A transform list copied from an ANTs command therefore gives the same image.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import torch

from .. import io as _io
from .base import Transform
from .compose import compose
from .dense import DisplacementField
from .linear import Affine

__all__ = [
    "parse_transform_spec",
    "transform_from_item",
    "load_transform",
    "load_transform_chain",
    "save_transform_outputs",
]

log = logging.getLogger(__name__)

_SPEC = re.compile(r"^\[\s*(?P<path>[^,\]]+?)\s*,\s*(?P<inv>[01])\s*\]$")


def parse_transform_spec(spec: str) -> tuple[Path, bool]:
    """``"FILE"`` -> (FILE, False); ANTs' ``"[FILE,1]"`` -> (FILE, True) (use the inverse)."""
    m = _SPEC.match(spec.strip())
    if m:
        return Path(m.group("path")), m.group("inv") == "1"
    return Path(spec), False


def transform_from_item(item) -> Transform:
    """A Transform from an :mod:`omnireg.io` item (``LinearItem`` or ``DisplacementItem``)."""
    if item[0] == "linear":
        return Affine.from_matrix(torch.as_tensor(item[1], dtype=torch.float64), dtype=torch.float32, learnable=False)
    field, grid = item[1], item[2]
    field = torch.as_tensor(field).to(torch.float32)
    return DisplacementField(field.unsqueeze(0), grid, learnable=False)


def load_transform(path: str | Path, *, invert: bool = False) -> Transform:
    """Read one transform file (linear, displacement field, or composite ``.h5``) as a Transform.

    Args:
        path: ``.tfm``/``.txt``/``.mat`` (linear), ``.h5``/``.hdf5`` (composite), or a displacement field
            image (``.nii``/``.nii.gz``/``.nrrd``/``.mha``/``.mhd``).
        invert: return the inverse (exact for linear transforms, fixed-point iteration for fields).

    Raises:
        FileNotFoundError, ValueError: for a missing or unreadable file (the message names it).
    """
    items = _io.read_transform_file(path)
    transforms = [transform_from_item(it) for it in items]
    t = transforms[0] if len(transforms) == 1 else compose(*transforms)
    if invert:
        t = t.inverse()
    return t


def load_transform_chain(specs: Sequence[str | Path], *, ndim: int | None = None) -> Transform:
    """Compose transform files listed in ``antsApplyTransforms -t`` order (the last acts first on points).

    Args:
        specs: file names, each optionally written ``[FILE,1]`` for its inverse.
        ndim: the expected dimension; a transform of another dimension raises a ``ValueError`` naming it.
    """
    if not specs:
        raise ValueError("transform: expected at least one transform file")
    chain = []
    for spec in specs:
        path, inv = parse_transform_spec(str(spec))
        t = load_transform(path, invert=inv)
        if ndim is not None and t.ndim != ndim:
            raise ValueError(f"transform {path}: a {t.ndim}D transform cannot be applied to {ndim}D images")
        chain.append(t)
    return chain[0] if len(chain) == 1 else compose(*chain)


def save_transform_outputs(result, out_dir: str | Path, *, force: bool = False) -> list[str]:
    """Write a registration result's transforms into ``out_dir`` in ITK formats.

    Writes ``linear.mat`` (the linear part), ``deformation.nii.gz`` (the deformable part as an ITK
    displacement field on the fixed grid, if any) and ``transform.h5`` (one ITK composite transform of the
    whole fixed -> moving mapping).

    Returns:
        The stage files in ``antsApplyTransforms -t`` order (``["linear.mat", "deformation.nii.gz"]``: the
        deformation acts on the fixed-space points first, then the linear map).
    """
    out = Path(out_dir)
    matrix = result.linear.matrix()[0].detach().cpu().double().numpy()
    _io.write_linear_transform(matrix, out / "linear.mat", force=force)
    files = ["linear.mat"]
    items: list = [("linear", matrix)]
    if result.deformable is not None:
        field = result.deformable.field[0].detach().cpu()
        grid = result.deformable.grid
        _io.write_displacement_field(field, grid, out / "deformation.nii.gz", force=force)
        files.append("deformation.nii.gz")
        items.append(("displacement", field, grid))
    _io.write_composite_h5(items, out / "transform.h5", force=force)
    return files
