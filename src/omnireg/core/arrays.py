"""Array-like inputs (NumPy arrays, sequences, tensors) as checked float64 NumPy arrays.

The one place of the checks of point lists ``(P, D)`` and homogeneous matrices ``(D+1, D+1)`` given by
users (landmark fits, thin-plate splines, target errors, transform files): each problem raises a
``TypeError``/``ValueError`` whose message starts with the argument's name.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["as_float64_array", "as_homogeneous_matrix", "as_point_array"]


def as_float64_array(value: object, name: str, expected: str) -> np.ndarray:
    """``value`` (a tensor is detached and moved to the CPU) as a float64 NumPy array.

    Args:
        value: array-like or tensor.
        name: the argument's name, used in the error message.
        expected: what the caller expects, e.g. ``"a (P, D) array of world coordinates"``.

    Raises:
        TypeError: ``value`` is not array-like.

    Example:
        >>> as_float64_array(torch.tensor([1, 2]), "x", "a vector")
        array([1., 2.])
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected {expected}, got {type(value).__name__}") from exc


def as_point_array(points: object, name: str = "points", *, ndim: int | None = None) -> np.ndarray:
    """``points`` as a float64 ``(P, D)`` array of finite world coordinates (RAS mm), D = 2 or 3.

    Args:
        points: ``(P, D)`` points (array-like or tensor).
        name: the argument's name, used in error messages.
        ndim: if given, the required D.

    Raises:
        TypeError: ``points`` is not array-like.
        ValueError: another shape, a dimension other than ``ndim``, or non-finite values.
    """
    arr = as_float64_array(points, name, "a (P, D) array of world coordinates")
    if arr.ndim != 2 or arr.shape[1] not in (2, 3) or (ndim is not None and arr.shape[1] != ndim):
        want = f"(P, {ndim})" if ndim else "(P, 2) or (P, 3)"
        raise ValueError(f"{name}: expected shape {want} (points, world RAS mm components), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite coordinates, got NaN or infinite values")
    return arr


def as_homogeneous_matrix(matrix: object, name: str = "matrix", *, ndim: int | None = None) -> np.ndarray:
    """``matrix`` as a finite float64 homogeneous ``(D+1, D+1)`` matrix with last row ``(0, ..., 0, 1)``.

    A leading batch axis of size 1 (``(1, D+1, D+1)``, e.g. a transform's batched matrix) is dropped.

    Args:
        matrix: the matrix (array-like or tensor).
        name: the argument's name, used in error messages.
        ndim: if given, the required D (2 or 3); otherwise either.

    Raises:
        TypeError: ``matrix`` is not array-like.
        ValueError: another shape, non-finite values, or another last row (tolerance 1e-9).
    """
    m = as_float64_array(matrix, name, "a (D+1, D+1) array")
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    shapes = [(ndim + 1, ndim + 1)] if ndim is not None else [(3, 3), (4, 4)]
    if m.shape not in shapes:
        want = " or ".join(str(s) for s in shapes)
        raise ValueError(f"{name}: expected a homogeneous {want} matrix, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name}: expected finite values")
    last = np.zeros(m.shape[0])
    last[-1] = 1.0
    if not np.allclose(m[-1], last, rtol=0.0, atol=1e-9):
        raise ValueError(f"{name}: expected the last row to be {last.tolist()}, got {m[-1].tolist()}")
    return m
