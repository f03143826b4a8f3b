"""Everything one registration reads, loaded and checked before any work starts (the pipeline's first step).

:func:`load_inputs` reads the images, masks, label maps and landmark files of a pair (files, or images
already in memory) and checks the initial transform; :func:`check_config` checks an engine configuration.
Each problem raises one
``ValueError``/``FileNotFoundError`` whose message starts with the name the caller gives the input
(``--fixed-labels`` on the command line, ``fixed_labels`` in Python), so that no registration runs, and
no output is written, for inputs that would fail later.

Rules:

* **Images** (fixed, moving): readable, the same dimension and number of channels, finite, not constant.
* **Masks**: on the grid of their image (1e-3 mm tolerance), finite, at least one non-zero voxel.
* **Label maps**: on the grid of their image, one channel, and integer *values*: an integer (or boolean)
  image is a label map; a floating-point image is accepted when every value is a whole number (NIfTI
  files written by many tools store labels as float) and is then cast to ``int32``; a floating-point
  image with any fractional, NaN or infinite value is an intensity image given by mistake and is refused, and so
  is a whole-number image with more than 32 values that is not piecewise constant (an int16 MRI).
* **Landmarks**: both files or neither, points of the images' dimension in both, pairable (by name or
  by order, :func:`omnireg.landmarks.pair_landmarks`).
* **Initial transform**: a finite, invertible homogeneous ``(D+1, D+1)`` matrix with last row ``(0, ..., 0, 1)``.
* **Configuration**: a preset name, a dict or a :class:`~omnireg.optim.RegistrationConfig` that validates,
  whose metrics are registered similarity measures and whose device exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["ImageSource", "RegistrationInputs", "as_config", "as_label_map", "check_config", "check_device",
           "describe_source", "load_inputs"]

Namer = Callable[[str], str]
#: an input image: a file (any format :func:`omnireg.io.load_image` reads) or an :class:`omnireg.core.Image`
ImageSource = Any


@dataclass
class RegistrationInputs:
    """The checked inputs of one registration (images as :class:`omnireg.core.Image`; world RAS mm).

    Attributes:
        fixed, moving: the images.
        fixed_mask, moving_mask: optional masks on the fixed / moving grid.
        fixed_labels, moving_labels: optional label maps (integer dtype) on the fixed / moving grid.
        landmarks: ``(fixed_points (P, D), moving_points (P, D), names or None)`` in RAS mm, or ``None``.
        initial: the initial fixed -> moving world matrix ``(D+1, D+1)`` float64, or ``None``.
    """

    fixed: Any
    moving: Any
    fixed_mask: Any = None
    moving_mask: Any = None
    fixed_labels: Any = None
    moving_labels: Any = None
    landmarks: tuple | None = None
    initial: np.ndarray | None = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_image(value: object) -> bool:
    from ..core import Image

    return isinstance(value, Image)


def describe_source(value: ImageSource | None) -> str | None:
    """How ``result.json`` names an input: the path of a file, ``"<in memory>"`` for an image, or ``None``."""
    if value is None:
        return None
    return "<in memory>" if _is_image(value) else str(value)


def _load(path: ImageSource, what: str):
    """An image from a file (or the image itself); errors name the input (``what``) and the file."""
    from ..io import load_image

    if _is_image(path):
        return path
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what}: expected a file path or an omnireg Image, got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what}: no such file or directory: {p}")
    try:
        return load_image(p)
    except (ValueError, OSError, RuntimeError) as exc:
        msg = _first_line(exc)
        raise ValueError(f"{what}: {msg}" if str(p) in msg else f"{what}: cannot read image {p}: {msg}") from exc


def _check_intensities(image, what: str) -> None:
    import torch

    data = image.data
    if data.is_floating_point() and not bool(torch.isfinite(data).all()):
        raise ValueError(f"{what}: the image contains NaN or infinite values")
    if float(data.max()) == float(data.min()):
        raise ValueError(f"{what}: the image is constant; nothing to register")


def as_label_map(image, what: str):
    """``image`` as a label map with an integer dtype, or a ``ValueError`` naming ``what`` (rules above).

    Args:
        image: an :class:`omnireg.core.Image` read from a label file.
        what: the input's name for messages (``--fixed-labels``).

    Returns:
        The image itself when its dtype is integer, ``uint8`` for a boolean image, an ``int32`` copy for a
        floating-point image that holds whole numbers only.

    Raises:
        ValueError: more than one channel, or a floating-point image with a fractional, NaN or infinite value.
    """
    import torch

    if image.channels != 1:
        raise ValueError(f"{what}: expected a label map with one channel, got {image.channels} channels")
    data = image.data
    if data.dtype == torch.bool:
        return image.to(torch.uint8)
    if not data.is_floating_point():
        _check_piecewise_constant(data, what)
        return image
    finite = torch.isfinite(data)
    fractional = finite & (data != torch.round(data))
    if not bool(finite.all()) or bool(fractional.any()):
        example = data[~finite][0] if not bool(finite.all()) else data[fractional][0]
        raise ValueError(f"{what}: expected a label map (integer values), got non-integer values such as "
                         f"{float(example):.6g} in a {str(data.dtype).replace('torch.', '')} image; give a "
                         "segmentation, not an intensity image")
    limit = float(torch.iinfo(torch.int32).max)
    if float(data.abs().max()) > limit:
        raise ValueError(f"{what}: expected label values within +-{limit:.0f}, got {float(data.abs().max()):.6g}")
    _check_piecewise_constant(data, what)
    return image.to(torch.int32)


#: a label map with more distinct values than this must also be piecewise constant (:func:`_check_piecewise_constant`)
LABEL_VALUES_CHECKED = 32
#: the smallest share of equal neighbours (among pairs touching a non-zero voxel) of such a label map
LABEL_MIN_EQUAL_NEIGHBOURS = 0.2


def _check_piecewise_constant(data, what: str) -> None:
    """Refuse a whole-number intensity image given as labels (an int16 MRI, say).

    Segmentations are piecewise constant: measured on real files, 72-98 % of the neighbour pairs that touch a
    non-zero voxel hold the same value (SCT cord masks, SynthSeg maps with 53 labels), against 0.5-13 % in integer
    intensity images (SCT T1w / T2w int16 with 853 / 1210 values, ANTsPy's uint8 slices, Colin27 in whole-number
    float). A map with more than :data:`LABEL_VALUES_CHECKED` distinct values and fewer than
    :data:`LABEL_MIN_EQUAL_NEIGHBOURS` equal pairs is refused.
    """
    import torch

    values = torch.unique(data)
    if values.numel() <= LABEL_VALUES_CHECKED:
        return
    grid = data[0]  # (1, *S): one channel, checked before
    equal = touching = 0
    for ax in range(grid.dim()):
        a, b = grid.narrow(ax, 1, grid.shape[ax] - 1), grid.narrow(ax, 0, grid.shape[ax] - 1)
        nz = (a != 0) | (b != 0)
        equal += int(((a == b) & nz).sum())
        touching += int(nz.sum())
    share = equal / max(touching, 1)
    if share < LABEL_MIN_EQUAL_NEIGHBOURS:
        raise ValueError(f"{what}: expected a label map, got an image with {values.numel()} distinct values where only "
                         f"{100 * share:.1f} % of neighbouring voxels agree (labels are piecewise constant); give a "
                         "segmentation, not an intensity image")


def _on_grid(image, ref, what: str, ref_what: str) -> None:
    if not image.grid.same_as(ref.grid, atol=1e-3):
        raise ValueError(f"{what}: expected the grid of the {ref_what} image {ref.grid!r}, got {image.grid!r}")


def _check_mask(mask, what: str) -> None:
    import torch

    data = mask.data
    if data.is_floating_point() and not bool(torch.isfinite(data).all()):
        raise ValueError(f"{what}: the mask contains NaN or infinite values")
    if not bool((data != 0).any()):
        raise ValueError(f"{what}: the mask is empty (all zero)")


def _landmarks(fixed_path, moving_path, ndim: int, name: Namer):
    from ..landmarks import pair_landmarks, read_landmarks

    sets = []
    for key, path in (("fixed_landmarks", fixed_path), ("moving_landmarks", moving_path)):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{name(key)}: no such file: {path}")
        try:
            sets.append(read_landmarks(path))
        except ValueError as exc:
            raise ValueError(f"{name(key)}: {_first_line(exc)}") from exc
    fixed, moving = sets
    if fixed.ndim != ndim:
        raise ValueError(f"{name('fixed_landmarks')}: expected {ndim}D points for {ndim}D images, got {fixed.ndim}D")
    if moving.ndim != fixed.ndim:
        raise ValueError(f"{name('moving_landmarks')}: expected {fixed.ndim}D points like "
                         f"{name('fixed_landmarks')}, got {moving.ndim}D")
    try:
        return pair_landmarks(fixed, moving)
    except ValueError as exc:
        msg = _first_line(exc)
        msg = msg.split(": ", 1)[1] if msg.startswith(("moving: ", "fixed: ")) else msg
        raise ValueError(f"{name('moving_landmarks')}: {msg}") from exc


def _initial_matrix(initial, ndim: int, what: str) -> np.ndarray:
    from ..core.arrays import as_homogeneous_matrix

    m = as_homogeneous_matrix(initial, what, ndim=ndim)
    if abs(np.linalg.det(m[:-1, :-1])) < 1e-12:
        raise ValueError(f"{what}: the matrix is singular (not invertible)")
    return m


def load_inputs(
    fixed_path: ImageSource,
    moving_path: ImageSource,
    *,
    fixed_mask: ImageSource | None = None,
    moving_mask: ImageSource | None = None,
    fixed_labels: ImageSource | None = None,
    moving_labels: ImageSource | None = None,
    fixed_landmarks: str | os.PathLike | None = None,
    moving_landmarks: str | os.PathLike | None = None,
    initial=None,
    name: Namer = str,
) -> RegistrationInputs:
    """Read and check every input of a registration (rules in the module docstring).

    Args:
        fixed_path, moving_path: the image files, or :class:`omnireg.core.Image` objects.
        fixed_mask, moving_mask, fixed_labels, moving_labels: optional images (files or Images) on the fixed /
            moving grid.
        fixed_landmarks, moving_landmarks: optional landmark files (both or neither).
        initial: optional initial fixed -> moving world matrix ``(D+1, D+1)``.
        name: how the caller calls each input in messages: ``name("fixed_labels")`` -> ``"--fixed-labels"``.

    Returns:
        :class:`RegistrationInputs`.

    Raises:
        FileNotFoundError: an input file does not exist.
        ValueError: an input breaks a rule; the message starts with ``name(<input>)``.
    """
    if (fixed_landmarks is None) != (moving_landmarks is None):
        missing = "moving_landmarks" if moving_landmarks is None else "fixed_landmarks"
        raise ValueError(f"{name(missing)}: required as well; the TRE needs landmarks of both images")
    for key, path in (("fixed", fixed_path), ("moving", moving_path), ("fixed_mask", fixed_mask),
                      ("moving_mask", moving_mask), ("fixed_labels", fixed_labels), ("moving_labels", moving_labels),
                      ("fixed_landmarks", fixed_landmarks), ("moving_landmarks", moving_landmarks)):
        if path is not None and not _is_image(path) and isinstance(path, (str, os.PathLike)) and not Path(path).exists():
            # every missing file before reading any image
            raise FileNotFoundError(f"{name(key)}: no such file or directory: {path}")
    fixed = _load(fixed_path, name("fixed"))
    moving = _load(moving_path, name("moving"))
    if fixed.ndim != moving.ndim:
        raise ValueError(f"{name('moving')}: expected a {fixed.ndim}D image like {name('fixed')}, got {moving.ndim}D")
    if fixed.channels != moving.channels:
        raise ValueError(f"{name('moving')}: expected {fixed.channels} channel(s) like {name('fixed')}, "
                         f"got {moving.channels}")
    _check_intensities(fixed, name("fixed"))
    _check_intensities(moving, name("moving"))
    out = RegistrationInputs(fixed=fixed, moving=moving)
    for key, path in (("fixed_mask", fixed_mask), ("moving_mask", moving_mask), ("fixed_labels", fixed_labels),
                      ("moving_labels", moving_labels)):
        if path is None:
            continue
        side = key.split("_")[0]
        img = _load(path, name(key))
        if img.ndim != fixed.ndim:
            raise ValueError(f"{name(key)}: expected a {fixed.ndim}D image like {name(side)}, got {img.ndim}D")
        _on_grid(img, fixed if side == "fixed" else moving, name(key), name(side))
        if key.endswith("_mask"):
            _check_mask(img, name(key))
        else:
            img = as_label_map(img, name(key))
        setattr(out, key, img)
    if fixed_landmarks is not None:
        out.landmarks = _landmarks(fixed_landmarks, moving_landmarks, fixed.ndim, name)
    if initial is not None:
        out.initial = _initial_matrix(initial, fixed.ndim, name("initial"))
    return out


def check_device(device: str, what: str = "device") -> str:
    """``device`` if it names a usable device (``cpu``, ``cuda``, ``cuda:N``, ``mps``), else a ``ValueError``."""
    import torch

    try:
        dev = torch.device(str(device))
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{what}: expected cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what}: {device!r} was asked for but no CUDA device is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{what}: {device!r} does not exist ({torch.cuda.device_count()} CUDA device(s))")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{what}: 'mps' was asked for but is not available")
    elif dev.type != "cpu":
        raise ValueError(f"{what}: expected cpu, cuda or cuda:N, got {device!r}")
    return str(device)


def as_config(config):
    """``config`` as a :class:`~omnireg.optim.RegistrationConfig` (not validated).

    Args:
        config: a RegistrationConfig (returned as is), a dict of one, or a preset name.

    Raises:
        TypeError: ``config`` has another type (the message names ``config``).
        ValueError: an unknown preset, or an invalid key or value in the dict.
    """
    from ..optim import RegistrationConfig, preset

    if isinstance(config, str):
        config = preset(config)
    elif isinstance(config, dict):
        config = RegistrationConfig.from_dict(config)
    if not isinstance(config, RegistrationConfig):
        raise TypeError(f"config: expected a RegistrationConfig, a dict or a preset name, got {type(config).__name__}")
    return config


def check_config(config, name: Namer = str):
    """The registration configuration as a validated :class:`~omnireg.optim.RegistrationConfig`.

    Args:
        config: a :class:`~omnireg.optim.RegistrationConfig`, a dict of one, or a preset name.
        name: how the caller calls the configuration (``name("config")``) and its device (``name("device")``).

    Raises:
        TypeError: ``config`` has another type.
        ValueError: an invalid preset, key or value, an unknown metric or an unusable device.
    """
    from ..similarity import available_similarities

    what = name("config")
    try:
        config = as_config(config)
        known = available_similarities()
        for i, st in enumerate(config.stages):
            if str(st.metric).lower() not in known:
                raise ValueError(f"stages[{i}].metric: expected one of {', '.join(known)}, got {st.metric!r}")
        config.validate()
    except (TypeError, ValueError) as exc:
        msg = _first_line(exc)
        raise type(exc)(f"{what}: {msg[len('config: '):] if msg.startswith('config: ') else msg}") from exc
    check_device(config.device, name("device"))
    return config
