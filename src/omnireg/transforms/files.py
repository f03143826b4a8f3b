"""Transforms to and from ITK files: the bridge between :mod:`omnireg.transforms` and :mod:`omnireg.io`.

``omnireg.io`` reads and writes plain matrices and displacement fields (world RAS, converted to ITK's
LPS on disk); this module turns them into :class:`~omnireg.transforms.Transform` objects and back.

Order convention (as ``antsApplyTransforms -t`` and ITK's ``CompositeTransform``): a list
``[T1, T2, ..., Tn]`` is the mapping ``T1 ∘ T2 ∘ ... ∘ Tn``: **the last one acts on the fixed-space
points first**. A transform list copied from an ANTs command therefore gives the same image.

Outputs of a registration ``T = L ∘ D`` (``D`` the deformable part, acting on fixed-space points
first; ``L`` the linear part):

* ``transform.h5`` = ``[L, D]`` maps fixed-space points to moving-space points (pull: it warps the
  moving image onto the fixed grid, and moves fixed-space landmarks into the moving image).
* ``inverse.h5`` = ``[D^-1, L^-1]`` = ``T^-1`` maps moving-space points to fixed-space points (it warps
  the fixed image onto the moving grid, and moves moving-space landmarks into the fixed image).

Dense parts are written compactly (float32, compressed, see :mod:`omnireg.io`) **on the grid they
live on**, never resampled: a :class:`DisplacementField` on its own grid (e.g. the 2 mm grid it was
optimised on for a 1 mm image); a :class:`StationaryVelocityField` as its integrated displacement
``exp(v)`` on the velocity's own grid: that is exactly how omnireg itself evaluates an SVF (integrate
on the grid, then interpolate linearly, zero beyond half a voxel outside it), so ITK applies the file
as omnireg applies the SVF. Any other deformable transform (a B-spline, a composition) is sampled on
the fixed grid. ITK interpolates displacement fields linearly and returns zero displacement beyond
half a voxel outside the field, clamping to the border voxels inside that half voxel: the rule of
:mod:`omnireg.transforms.dense` (pinned against SimpleITK by the tests).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import io as _io
from ..core.grid import Grid
from .base import Transform
from .compose import compose
from .dense import DisplacementField
from .linear import Affine
from .svf import StationaryVelocityField

__all__ = [
    "parse_transform_spec",
    "transform_from_item",
    "load_transform",
    "load_transform_chain",
    "load_inverse_chain",
    "written_field",
    "save_transform_outputs",
    "save_inverse_outputs",
    "inverse_residual",
    "InverseOutputs",
    "INVERSE_WARNING_MM",
]

log = logging.getLogger(__name__)

_SPEC = re.compile(r"^\[\s*(?P<path>[^,\]]+?)\s*,\s*(?P<inv>[01])\s*\]$")

#: points per chunk when measuring the inverse's residual over a whole grid
_CHUNK = 1 << 20
#: a computed inverse whose largest residual exceeds this (mm) is reported with a WARNING
INVERSE_WARNING_MM = 0.5


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


def _from_items(items: Sequence) -> Transform:
    transforms = [transform_from_item(it) for it in items]
    return transforms[0] if len(transforms) == 1 else compose(*transforms)


def load_transform(path: str | Path, *, invert: bool = False) -> Transform:
    """Read one transform file (linear, displacement field, or composite ``.h5``) as a Transform.

    Args:
        path: ``.tfm``/``.txt``/``.mat`` (linear), ``.h5``/``.hdf5`` (composite), or a displacement field
            image (``.nii``/``.nii.gz``/``.nrrd``/``.mha``/``.mhd``).
        invert: return the inverse (exact for linear transforms, fixed-point iteration for fields).

    Raises:
        FileNotFoundError, ValueError: for a missing or unreadable file (the message names it).
    """
    t = _from_items(_io.read_transform_file(path))
    return t.inverse() if invert else t


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


def _registered_inverse(specs: Sequence[str | Path]) -> Path | None:
    """``inverse.h5`` beside a single ``transform.h5`` whose folder's ``result.json`` lists it, else None.

    ``result.json`` is written last by ``omnireg register``, so an ``inverse.h5`` it lists belongs to the
    same run as ``transform.h5`` (a stale one left by an earlier run in the folder is not listed).
    """
    if len(specs) != 1:
        return None
    path, inv = parse_transform_spec(str(specs[0]))
    if inv or path.name != "transform.h5":
        return None
    summary = path.parent / "result.json"
    try:
        outputs = json.loads(summary.read_text(encoding="utf-8")).get("outputs") or {}
    except (OSError, ValueError, AttributeError):
        return None
    name = outputs.get("inverse") if isinstance(outputs, dict) else None
    candidate = path.parent / name if isinstance(name, str) else None
    return candidate if candidate is not None and candidate.is_file() else None


def load_inverse_chain(specs: Sequence[str | Path], *, ndim: int | None = None) -> tuple[Transform, Transform | None, str]:
    """The inverse of the chain ``specs`` (``antsApplyTransforms -t`` order): moving-space -> fixed-space points.

    A single ``transform.h5`` written by ``omnireg register --inverse`` is inverted by the ``inverse.h5``
    written beside it (listed in the folder's ``result.json``). Otherwise every item is inverted:
    ``(T1 ∘ ... ∘ Tn)^-1 = Tn^-1 ∘ ... ∘ T1^-1``, exactly for linear transforms and by fixed-point
    iteration for displacement fields (:meth:`DisplacementField.inverse`).

    Args:
        specs: file names, each optionally ``[FILE,1]``.
        ndim: the expected dimension (as :func:`load_transform_chain`).

    Returns:
        ``(inverse, forward, source)``: the inverse transform; the forward chain when the inverse was
        computed here (to measure its residual with :func:`inverse_residual`), else ``None``; and a
        description of where the inverse came from.
    """
    registered = _registered_inverse(specs)
    if registered is not None:
        return load_transform_chain([registered], ndim=ndim), None, f"{registered} (written by omnireg register)"
    forward = load_transform_chain(specs, ndim=ndim)
    exact = forward.is_linear
    return forward.inverse(), (None if exact else forward), ("matrix inverse" if exact else "fixed-point iteration")


# ---------------------------------------------------------------------------------------------- writing
def written_field(deformable: Transform, *, fixed_grid: Grid) -> DisplacementField:
    """The displacement field that represents ``deformable`` in files (module docstring): its own grid.

    Args:
        deformable: a :class:`DisplacementField` (kept as it is, on any grid), a
            :class:`StationaryVelocityField` (``exp(v)`` integrated on the velocity's grid) or any other
            transform (sampled at the voxel centres of ``fixed_grid``).
        fixed_grid: the fixed image's grid, used only for other transforms.

    Returns:
        a detached :class:`DisplacementField` (batch item 0) that maps points as ``deformable`` does.
    """
    with torch.no_grad():
        if isinstance(deformable, StationaryVelocityField):
            dense = deformable.detach().displacement_field()
        elif isinstance(deformable, DisplacementField):
            dense = deformable
        else:
            log.info("%s is sampled as a displacement field on the fixed grid %s", type(deformable).__name__, fixed_grid)
            dense = DisplacementField.from_transform(deformable.detach(), fixed_grid, learnable=False)
        return DisplacementField(dense.field[:1].detach().cpu(), dense.grid, learnable=False)


def _field32(dense: DisplacementField) -> tuple[torch.Tensor, Grid]:
    return dense.field[0].detach().cpu().to(torch.float32), dense.grid


def save_transform_outputs(result, out_dir: str | Path, *, force: bool = False) -> list[str]:
    """Write a registration result's transforms into ``out_dir`` in ITK formats.

    Writes ``linear.mat`` (the linear part), ``deformation.nii.gz`` (the deformable part as an ITK
    displacement field, float32, on its own grid: :func:`written_field`) and ``transform.h5`` (one ITK
    composite transform of the whole fixed -> moving mapping, the field float32 and compressed).

    Args:
        result: a :class:`~omnireg.optim.RegistrationResult` (``linear``, ``deformable`` or None,
            ``warped`` on the fixed grid).
        out_dir: an existing folder.
        force: replace existing files.

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
        field, grid = _field32(written_field(result.deformable, fixed_grid=result.warped.grid))
        _io.write_displacement_field(field, grid, out / "deformation.nii.gz", force=force)
        files.append("deformation.nii.gz")
        items.append(("displacement", field, grid))
    _io.write_composite_h5(items, out / "transform.h5", force=force)
    return files


@dataclass
class InverseOutputs:
    """What :func:`save_inverse_outputs` wrote.

    Attributes:
        files: ``{"inverse": "inverse.h5", "inverse_warped": "inverse_warped.nii.gz"}`` (for ``result.json``).
        residual_mm: ``method`` (how ``T^-1`` was computed), ``max`` and ``mean`` of ``|T(T^-1(y)) - y|``
            in mm over the ``points`` voxel centres ``y`` of the moving grid that ``T^-1`` maps inside the
            fixed field of view (see :func:`inverse_residual`).
    """

    files: dict = field(default_factory=dict)
    residual_mm: dict = field(default_factory=dict)


def _inverse_items(result, fixed_grid: Grid, deformable_inverse: Transform | None = None,
                   inverse_method: str | None = None) -> tuple[list, list, str]:
    """``(forward_items, inverse_items, method)`` as written: ``[L, D]`` and ``[D^-1, L^-1]`` (ANTs order)."""
    matrix = result.linear.matrix()[0].detach().cpu().double().numpy()
    forward: list = [("linear", matrix)]
    inverse: list = [("linear", np.linalg.inv(matrix))]
    method = "matrix inverse"
    deformable = result.deformable
    if deformable is not None:
        dense = written_field(deformable, fixed_grid=fixed_grid)
        field, grid = _field32(dense)
        forward.append(("displacement", field, grid))
        with torch.no_grad():
            if deformable_inverse is not None:
                inv = written_field(deformable_inverse, fixed_grid=fixed_grid)
                method = inverse_method or "given inverse of the deformable part"
            elif isinstance(deformable, StationaryVelocityField):
                inv = written_field(deformable.detach().inverse(), fixed_grid=fixed_grid)
                method = f"exp(-v) by scaling and squaring ({deformable.steps} steps)"
            else:
                inv = DisplacementField(field[None], grid, learnable=False).inverse()
                method = "fixed-point iteration"
        inverse.insert(0, ("displacement", *_field32(inv)))
    return forward, inverse, method


def save_inverse_outputs(
    result, out_dir: str | Path, *, fixed, moving_grid: Grid, force: bool = False,
    deformable_inverse: Transform | None = None, inverse_method: str | None = None,
) -> InverseOutputs:
    """Write ``inverse.h5`` (``T^-1``, moving -> fixed) and ``inverse_warped.nii.gz`` into ``out_dir``.

    For ``T = L ∘ D``: ``T^-1 = D^-1 ∘ L^-1``, written as the ITK composite ``[D^-1, L^-1]`` (the last
    acts first, as ``antsApplyTransforms``). ``L^-1`` is the matrix inverse; ``D^-1`` is ``exp(-v)`` for a
    :class:`StationaryVelocityField` (exact up to the integration) and the fixed-point inverse
    (:meth:`DisplacementField.inverse`) of a displacement field, both on the field's own grid. The
    residual ``|T(T^-1(y)) - y|`` is measured through the transforms as written (float32 fields).
    ``inverse_warped.nii.gz`` is the fixed image (as float32, linear interpolation) pulled onto
    ``moving_grid``: ``inverse_warped(y) = fixed(T^-1(y))``.

    Args:
        result: a :class:`~omnireg.optim.RegistrationResult`.
        out_dir: an existing folder.
        fixed: the fixed :class:`~omnireg.core.Image` (its grid bounds the residual's points).
        moving_grid: the moving image's grid (the grid of ``inverse_warped.nii.gz``).
        force: replace existing files.
        deformable_inverse: an inverse of the deformable part computed by whoever made it (e.g. a
            diffeomorphic network's ``exp(-v)``), used instead of the above; written on its own grid.
        inverse_method: how ``deformable_inverse`` was computed (recorded as the residual's ``method``).

    Returns:
        :class:`InverseOutputs` (file names and the residual).
    """
    from .warp import resample

    out = Path(out_dir)
    forward_items, inverse_items, method = _inverse_items(result, fixed.grid, deformable_inverse, inverse_method)
    forward, inverse = _from_items(forward_items), _from_items(inverse_items)
    residual = {"method": method, **inverse_residual(forward, inverse, moving_grid=moving_grid, fixed_grid=fixed.grid)}
    log.log(logging.WARNING if residual["max"] > INVERSE_WARNING_MM else logging.INFO,
            "inverse (%s): residual |T(T^-1(y)) - y| max %.4g mm, mean %.4g mm over %d moving-grid points", method,
            residual["max"], residual["mean"], residual["points"])
    _io.write_composite_h5(inverse_items, out / "inverse.h5", force=force)
    with torch.no_grad():
        warped = resample(fixed.to(torch.float32), inverse, onto=moving_grid, interp="linear")
    _io.save_image(warped, out / "inverse_warped.nii.gz", force=force)
    return InverseOutputs({"inverse": "inverse.h5", "inverse_warped": "inverse_warped.nii.gz"}, residual)


# ---------------------------------------------------------------------------------------------- residual
def _chunked_points(grid: Grid, chunk: int):
    """World points (float64, ``(P, D)``) of every voxel centre of ``grid``, ``chunk`` at a time, C order."""
    shape = grid.shape
    for start in range(0, grid.numel, chunk):
        flat = torch.arange(start, min(grid.numel, start + chunk), dtype=torch.int64)
        index = []
        for s in reversed(shape):
            index.append(flat % s)
            flat = flat // s
        vox = torch.stack(index[::-1], dim=-1).to(torch.float64)
        yield grid.transform_points(vox, "voxel", "world")


def inverse_residual(forward: Transform, inverse: Transform, *, moving_grid: Grid, fixed_grid: Grid) -> dict:
    """How well ``inverse`` inverts ``forward``: ``|forward(inverse(y)) - y|`` over a moving grid.

    ``y`` runs over every voxel centre of ``moving_grid`` (in chunks, float64) whose image
    ``x = inverse(y)`` lies in the field of view of ``fixed_grid`` (continuous voxel index within
    ``[-0.5, S - 0.5]``, the voxels of the fixed image); points mapped elsewhere are not counted.

    Args:
        forward: ``T``, fixed -> moving world points.
        inverse: the candidate ``T^-1``, moving -> fixed world points.
        moving_grid: the grid whose voxel centres are the ``y``.
        fixed_grid: the grid whose field of view bounds ``T^-1(y)``.

    Returns:
        ``{"max": mm, "mean": mm, "points": count}`` (``max``/``mean`` NaN when no point counts).
    """
    upper = torch.tensor([s - 0.5 for s in fixed_grid.shape], dtype=torch.float64)
    total, largest, count = 0.0, 0.0, 0
    with torch.no_grad():
        for y in _chunked_points(moving_grid, _CHUNK):
            x = inverse(y[None])[0]
            vox = fixed_grid.transform_points(x, "world", "voxel")
            inside = ((vox >= -0.5) & (vox <= upper)).all(dim=-1)
            if not bool(inside.any()):
                continue
            err = (forward(x[inside][None])[0] - y[inside]).norm(dim=-1)
            total += float(err.sum())
            largest = max(largest, float(err.max()))
            count += int(inside.sum())
    nan = float("nan")
    return {"max": largest if count else nan, "mean": total / count if count else nan, "points": count}
