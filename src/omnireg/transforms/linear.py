"""Linear transforms: identity, translation, rigid, similarity and affine, in 2D and 3D.

Convention:
    Every linear transform maps fixed-space world points (RAS mm) to moving-space world points and is
    parameterised about a fixed world **center** ``c`` (default: the world origin)::

        T(x) = A (x - c) + c + t

    so an optimiser can rotate about the image centre while ``t`` stays a plain shift in mm.
    ``A`` is ``I`` (translation), ``R`` (rigid), ``s R`` (similarity) or a free ``D x D`` matrix
    (affine). The homogeneous world matrix ``moving_from_fixed`` is
    ``[[A, c + t - A c], [0, 1]]`` (:meth:`LinearTransform.matrix`).

    Rotations: in 2D one angle ``theta`` in radians,
    ``R = [[cos, -sin], [sin, cos]]`` (positive angles turn world axis 0 (R) towards axis 1 (A)).
    In 3D a **rotation vector** ``r`` (axis-angle; world RAS components, radians) with the exponential
    map (Rodrigues) ``R = I + sin|r|/|r| [r]x + (1 - cos|r|)/|r|^2 [r]x^2``, evaluated with Taylor
    series near ``|r| = 0`` so values and gradients stay finite (like ITK's VersorRigid3DTransform,
    whose versor is the same rotation).

    Flat parameter order (:meth:`LinearTransform.get_flat_parameters`), per batch element, like ITK
    (linear part first, translation last):

    ============  =====================================================
    Identity      (none)
    Translation   ``t_0 .. t_{D-1}``
    Rigid         ``theta`` (2D) or ``r_0, r_1, r_2`` (3D), then ``t``
    Similarity    rotation as in Rigid, ``log_scale``, then ``t``
    Affine        ``A`` row-major (``D*D`` values), then ``t``
    ============  =====================================================

    The center is a fixed parameter (a buffer), never optimised.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from scipy.spatial.transform import Rotation as _ScipyRotation

from .base import Transform

__all__ = [
    "LinearTransform",
    "Identity",
    "Translation",
    "Rigid",
    "Similarity",
    "Affine",
    "rotation_matrix",
]

logger = logging.getLogger(__name__)

TensorLike = torch.Tensor | np.ndarray | Sequence[float] | float


# ---------------------------------------------------------------------------- functional core
def _skew(r: torch.Tensor) -> torch.Tensor:
    """``[r]x`` of rotation vectors ``(N, 3)`` -> ``(N, 3, 3)``."""
    z = torch.zeros_like(r[:, 0])
    x, y, w = r[:, 0], r[:, 1], r[:, 2]
    return torch.stack(
        [torch.stack([z, -w, y], -1), torch.stack([w, z, -x], -1), torch.stack([-y, x, z], -1)], dim=-2
    )


def rotation_matrix(rotation: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from 2D angles ``(N, 1)`` or 3D rotation vectors ``(N, 3)``.

    2D: ``R = [[cos a, -sin a], [sin a, cos a]]``. 3D (Rodrigues, exponential map of so(3)):
    ``R = I + a(θ) K + b(θ) K²`` with ``K = [r]x``, ``θ = |r|``, ``a = sin θ / θ``,
    ``b = (1 - cos θ) / θ²``; Taylor series for ``θ² < 1e-4`` keep it smooth at ``r = 0``.

    Args:
        rotation: ``(N, 1)`` angles in radians (2D) or ``(N, 3)`` rotation vectors in radians (3D).

    Returns:
        ``(N, D, D)`` rotation matrices (same dtype and device).

    Raises:
        ValueError: if the last axis is neither 1 nor 3.
    """
    if rotation.ndim != 2 or rotation.shape[-1] not in (1, 3):
        raise ValueError(f"rotation: expected shape (N, 1) (2D) or (N, 3) (3D), got {tuple(rotation.shape)}")
    if rotation.shape[-1] == 1:
        c, s = torch.cos(rotation[:, 0]), torch.sin(rotation[:, 0])
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], dim=-2)
    theta2 = (rotation * rotation).sum(-1)
    small = theta2 < 1e-4
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(safe2)
    a = torch.where(small, 1 - theta2 / 6 + theta2 * theta2 / 120, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24 + theta2 * theta2 / 720, (1 - torch.cos(theta)) / safe2)
    k = _skew(rotation)
    eye = torch.eye(3, dtype=rotation.dtype, device=rotation.device).expand_as(k)
    return eye + a[:, None, None] * k + b[:, None, None] * (k @ k)


def _rotation_parameters(rot: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rotation_matrix` for float64 NumPy matrices ``(N, D, D)`` -> ``(N, 1 | 3)``."""
    if rot.shape[-1] == 2:
        return np.arctan2(rot[:, 1, 0], rot[:, 0, 0])[:, None]
    return _ScipyRotation.from_matrix(rot).as_rotvec()


def _polar(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest proper rotations ``(N, D, D)`` (polar decomposition) and isotropic scales ``(N,)``."""
    u, s, vh = np.linalg.svd(a)
    sign = np.sign(np.linalg.det(u @ vh))
    fix = np.ones(s.shape)
    fix[:, -1] = sign
    rot = u @ (fix[:, :, None] * vh)
    scale = np.abs(np.linalg.det(a)) ** (1.0 / a.shape[-1])
    return rot, scale


# ---------------------------------------------------------------------------- input helpers
def _as_batched(
    value: TensorLike | None,
    tail: tuple[int, ...],
    name: str,
    dtype: torch.dtype,
    device: torch.device | str | None,
) -> torch.Tensor | None:
    """``value`` as a tensor ``(n, *tail)``; a value of shape ``tail`` gets n = 1 (broadcast later)."""
    if value is None:
        return None
    t = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.array(value, dtype=np.float64))
    t = t.to(dtype=dtype, device=device)
    if tail == (1,) and t.ndim == 0:
        t = t.reshape(1)
    if tuple(t.shape) == tail:
        return t.unsqueeze(0)
    if t.ndim == len(tail) + 1 and tuple(t.shape[1:]) == tail:
        return t
    shape = ", ".join(map(str, tail))
    raise ValueError(f"{name}: expected shape ({shape}) or (N, {shape}), got {tuple(t.shape)}")


def _batch_size(batch_size: int | None, values: dict[str, torch.Tensor | None]) -> int:
    sizes = {k: v.shape[0] for k, v in values.items() if v is not None and v.shape[0] != 1}
    if batch_size is None:
        found = set(sizes.values())
        if len(found) > 1:
            raise ValueError(f"batch sizes of the given values disagree: {sizes}")
        return found.pop() if found else 1
    for k, n in sizes.items():
        if n != batch_size:
            raise ValueError(f"{k}: expected batch size {batch_size} (or 1), got {n}")
    return batch_size


# ---------------------------------------------------------------------------- classes
class LinearTransform(Transform):
    """Base of the linear transforms ``T(x) = A (x - c) + c + t`` (see the module docstring).

    Subclasses define :meth:`linear_part` and the ordered list ``_flat`` of their parameter names.
    """

    is_linear = True
    _flat: tuple[str, ...] = ()

    def __init__(
        self,
        ndim: int,
        batch_size: int,
        center: TensorLike | None,
        dtype: torch.dtype,
        device: torch.device | str | None,
    ) -> None:
        super().__init__(ndim, batch_size)
        c = _as_batched(center, (ndim,), "center", dtype, device)
        c = torch.zeros(1, ndim, dtype=dtype, device=device) if c is None else c
        _batch_size(batch_size, {"center": c})
        self.register_buffer("center", c.expand(batch_size, ndim).clone())

    def _init_batched(
        self,
        ndim: int,
        batch_size: int | None,
        center: TensorLike | None,
        values: dict[str, tuple[TensorLike | None, tuple[int, ...]]],
        dtype: torch.dtype,
        device: torch.device | str | None,
    ) -> list[torch.Tensor | None]:
        """Initialise the base from the subclass's values ``{name: (value, tail shape)}``; returns them batched.

        Each value becomes ``(1 or N, *tail)`` (``None`` stays ``None``); N is ``batch_size`` or the one batch
        size of the given values and ``center`` (else 1).
        """
        given = {name: _as_batched(v, tail, name, dtype, device) for name, (v, tail) in values.items()}
        c = _as_batched(center, (ndim,), "center", dtype, device)
        LinearTransform.__init__(self, ndim, _batch_size(batch_size, {**given, "center": c}), c, dtype, device)
        return list(given.values())

    def _register_batched(self, name: str, value: torch.Tensor | None, default: torch.Tensor, learnable: bool) -> None:
        """Register ``value`` (``(1 or N, *tail)``, ``None``: ``default`` ``(1, *tail)``) expanded to the batch."""
        value = default.to(self.center) if value is None else value
        self._register(name, value.expand(self.batch_size, *value.shape[1:]), learnable)

    # ---------------------------------------------------------------- parts
    def linear_part(self) -> torch.Tensor:
        """``A``: ``(N, D, D)``."""
        raise NotImplementedError

    def translation_part(self) -> torch.Tensor:
        """``t``: ``(N, D)`` world mm (the shift of the center)."""
        return self.translation  # type: ignore[attr-defined, return-value]

    def matrix(self) -> torch.Tensor:
        """Homogeneous world matrix ``moving_from_fixed``: ``[[A, c + t - A c], [0, 1]]``, ``(N, D+1, D+1)``."""
        a = self.linear_part()
        n, d = a.shape[0], self.ndim
        c = self.center.to(a.dtype)
        b = c + self.translation_part().to(a.dtype) - (a @ c.unsqueeze(-1)).squeeze(-1)
        top = torch.cat([a, b.unsqueeze(-1)], dim=-1)
        bottom = torch.zeros(n, 1, d + 1, dtype=a.dtype, device=a.device)
        bottom[..., d] = 1
        return torch.cat([top, bottom], dim=-2)

    def _transform(self, points: torch.Tensor) -> torch.Tensor:
        m = self.matrix().to(dtype=points.dtype, device=points.device)
        d = self.ndim
        return points @ m[:, :d, :d].transpose(-1, -2) + m[:, None, :d, d]

    # ---------------------------------------------------------------- conversions
    def as_affine(self) -> "Affine":
        """An :class:`Affine` with the same center and current values (a copy, not linked)."""
        return Affine.from_transform(self)

    def inverse(self) -> "Affine":
        """The exact inverse as an :class:`Affine` about the moving-space center ``c + t``.

        ``T^-1(y) = A^-1 (y - (c + t)) + (c + t) - t``. A copy, not linked to these parameters.
        """
        with torch.no_grad():
            a = self.linear_part().detach()
            t = self.translation_part().detach()
            return Affine(
                self.ndim,
                self.batch_size,
                linear=torch.linalg.inv(a),
                translation=-t,
                center=self.center + t,
                dtype=a.dtype,
                device=a.device,
            )

    @classmethod
    def from_transform(cls, other: Transform, *, center: TensorLike | None = None):
        """A ``cls`` initialised from another linear transform (e.g. an Affine from a Rigid result).

        The new transform keeps ``other``'s center unless ``center`` is given, and maps that center
        exactly where ``other`` maps it. The linear part is copied when ``cls`` can represent it;
        otherwise it is projected: Rigid takes the nearest rotation (polar decomposition), Similarity
        also the scale ``|det A|^(1/D)``, Translation drops it (an INFO log reports the residual).

        Raises:
            TypeError: if ``other`` is not a linear transform.
        """
        if not isinstance(other, Transform) or not other.is_linear:
            raise TypeError(f"other: expected a linear Transform, got {type(other).__name__}")
        m_t = other.matrix().detach()
        dtype, device = m_t.dtype, m_t.device
        m = m_t.to(torch.float64).cpu().numpy()
        d, n = other.ndim, other.batch_size
        if center is None:
            c = other.center.detach() if isinstance(other, LinearTransform) else torch.zeros(n, d)
            c = c.to(torch.float64).cpu().numpy()
        else:
            c_t = _as_batched(center, (d,), "center", torch.float64, "cpu")
            c = np.broadcast_to(c_t.numpy(), (n, d))
        a, b = m[:, :d, :d], m[:, :d, d]
        image_of_center = np.einsum("nij,nj->ni", a, c) + b
        t = image_of_center - c
        kw = dict(center=c, translation=t, dtype=dtype, device=device)
        rot, scale = _polar(a)
        if cls is Affine:
            out = cls(d, n, linear=a, **kw)
        elif cls is Translation:
            out, fitted = cls(d, n, **kw), np.broadcast_to(np.eye(d), a.shape)
        elif cls is Rigid:
            out, fitted = cls(d, n, rotation=_rotation_parameters(rot), **kw), rot
        elif cls is Similarity:
            out = cls(d, n, rotation=_rotation_parameters(rot), scale=scale[:, None], **kw)
            fitted = scale[:, None, None] * rot
        elif cls is Identity:
            out, fitted = cls(d, n, dtype=dtype, device=device), np.broadcast_to(np.eye(d), a.shape)
        else:
            raise TypeError(f"from_transform is not available for {cls.__name__}")
        if cls is not Affine:
            residual = float(np.abs(a - fitted).max())
            if residual > 1e-6:
                logger.info("%s.from_transform: projected the linear part (max residual %.3g)", cls.__name__, residual)
        return out

    # ---------------------------------------------------------------- flat parameters
    @property
    def num_parameters(self) -> int:
        """Number K of parameters per batch element (order in the module docstring)."""
        return sum(getattr(self, name)[0].numel() for name in self._flat)

    def get_flat_parameters(self) -> torch.Tensor:
        """The parameters as ``(N, K)`` (order in the module docstring); differentiable."""
        n = self.batch_size
        parts = [getattr(self, name).reshape(n, -1) for name in self._flat]
        if not parts:
            return self.center.new_zeros(n, 0)
        return torch.cat(parts, dim=1)

    def set_flat_parameters(self, values: TensorLike) -> None:
        """Overwrite the parameters in place from ``(N, K)`` values, or ``(K,)`` values for every element.

        Raises:
            ValueError: on a wrong shape.
        """
        k, n = self.num_parameters, self.batch_size
        v = _as_batched(values, (k,), "values", self.center.dtype, self.center.device)
        _batch_size(n, {"values": v})
        v = v.expand(n, k)
        offset = 0
        with torch.no_grad():
            for name in self._flat:
                current = getattr(self, name)
                size = current[0].numel()
                new = v[:, offset : offset + size].reshape(current.shape).to(current.dtype)
                if isinstance(current, torch.nn.Parameter):
                    current.copy_(new)
                else:
                    setattr(self, name, new.clone())
                offset += size

    def parameter_scales(self, radius_mm: float) -> torch.Tensor:
        """Per-parameter scales ``(K,)``: the approximate shift in mm, of a point at ``radius_mm`` from
        the center, per unit change of each parameter.

        Translations get 1 (mm per mm); rotations (radians), log-scale and affine matrix entries get
        ``radius_mm``. Dividing a parameter step by these scales makes steps comparable in mm, as ITK's
        ``RegistrationParameterScalesFromPhysicalShift`` does.

        Raises:
            ValueError: if ``radius_mm`` is not positive.
        """
        if not radius_mm > 0:
            raise ValueError(f"radius_mm: expected a positive radius in mm, got {radius_mm!r}")
        scales = []
        for name in self._flat:
            size = getattr(self, name)[0].numel()
            scales += [1.0 if name == "translation" else float(radius_mm)] * size
        return torch.tensor(scales, dtype=self.center.dtype, device=self.center.device)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_parameters={self.num_parameters}"


class Identity(LinearTransform):
    """The identity ``T(x) = x`` (no parameters).

    Args:
        ndim: 2 or 3.
        batch_size: N (default 1).
        dtype, device: of the (empty) parameterisation and its matrix.
    """

    def __init__(
        self,
        ndim: int = 3,
        batch_size: int = 1,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(ndim, batch_size, None, dtype, device)

    def linear_part(self) -> torch.Tensor:
        eye = torch.eye(self.ndim, dtype=self.center.dtype, device=self.center.device)
        return eye.expand(self.batch_size, self.ndim, self.ndim)

    def translation_part(self) -> torch.Tensor:
        return torch.zeros_like(self.center)

    def inverse(self) -> "Identity":
        """The identity itself (a copy)."""
        return Identity(self.ndim, self.batch_size, dtype=self.center.dtype, device=self.center.device)


class Translation(LinearTransform):
    """``T(x) = x + t``.

    Args:
        ndim: 2 or 3.
        batch_size: N; ``None`` infers it from the given values (else 1).
        center: ``(D,)`` or ``(N, D)`` world mm (kept for conversions; no effect on the map).
        translation: ``(D,)`` or ``(N, D)`` world mm (default 0).
        learnable: register values as ``nn.Parameter`` copies (True) or keep them as buffers in their
            autograd graph (False, e.g. a network output).
        dtype, device: of the parameters.
    """

    _flat = ("translation",)

    def __init__(
        self,
        ndim: int = 3,
        batch_size: int | None = None,
        *,
        center: TensorLike | None = None,
        translation: TensorLike | None = None,
        learnable: bool = True,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        (t,) = self._init_batched(ndim, batch_size, center, {"translation": (translation, (ndim,))}, dtype, device)
        self._register_batched("translation", t, torch.zeros(1, ndim), learnable)

    def linear_part(self) -> torch.Tensor:
        eye = torch.eye(self.ndim, dtype=self.translation.dtype, device=self.translation.device)
        return eye.expand(self.batch_size, self.ndim, self.ndim)


class Rigid(LinearTransform):
    """``T(x) = R (x - c) + c + t`` with a rotation ``R`` (see the module docstring).

    Args:
        ndim: 2 or 3.
        batch_size: N; ``None`` infers it from the given values (else 1).
        center: ``(D,)`` or ``(N, D)`` world mm (default: the origin).
        rotation: 2D: angle ``()``/``(1,)`` or ``(N, 1)`` radians; 3D: rotation vector ``(3,)`` or
            ``(N, 3)`` radians (default 0).
        translation: ``(D,)`` or ``(N, D)`` world mm (default 0).
        learnable, dtype, device: as in :class:`Translation`.

    Example:
        >>> import math, torch
        >>> t = Rigid(3, rotation=[0.0, 0.0, math.pi / 2], center=[10.0, 0.0, 0.0])
        >>> t(torch.tensor([[[11.0, 0.0, 0.0]]])).round().tolist()  # a quarter turn about S, around c
        [[[10.0, 1.0, 0.0]]]
        >>> t.get_flat_parameters().shape  # rotation vector, then translation
        torch.Size([1, 6])
    """

    _flat = ("rotation", "translation")

    def __init__(
        self,
        ndim: int = 3,
        batch_size: int | None = None,
        *,
        center: TensorLike | None = None,
        rotation: TensorLike | None = None,
        translation: TensorLike | None = None,
        learnable: bool = True,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        nr = 1 if ndim == 2 else 3
        r, t = self._init_batched(ndim, batch_size, center, {"rotation": (rotation, (nr,)),
                                                             "translation": (translation, (ndim,))}, dtype, device)
        self._register_batched("rotation", r, torch.zeros(1, nr), learnable)
        self._register_batched("translation", t, torch.zeros(1, ndim), learnable)

    def linear_part(self) -> torch.Tensor:
        return rotation_matrix(self.rotation)


class Similarity(LinearTransform):
    """``T(x) = s R (x - c) + c + t``: rigid plus an isotropic scale ``s = exp(log_scale) > 0``.

    Args:
        ndim, batch_size, center, rotation, translation, learnable, dtype, device: as in :class:`Rigid`.
        scale: ``()``/``(1,)`` or ``(N, 1)`` positive scale (default 1); stored as ``log_scale``, the
            optimised parameter.

    Raises:
        ValueError: if a scale is not positive.
    """

    _flat = ("rotation", "log_scale", "translation")

    def __init__(
        self,
        ndim: int = 3,
        batch_size: int | None = None,
        *,
        center: TensorLike | None = None,
        rotation: TensorLike | None = None,
        scale: TensorLike | None = None,
        translation: TensorLike | None = None,
        learnable: bool = True,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        nr = 1 if ndim == 2 else 3
        r, s, t = self._init_batched(ndim, batch_size, center, {"rotation": (rotation, (nr,)), "scale": (scale, (1,)),
                                                                "translation": (translation, (ndim,))}, dtype, device)
        if s is not None and not bool((s > 0).all()):
            raise ValueError(f"scale: expected positive values, got {s.detach().flatten().tolist()}")
        self._register_batched("rotation", r, torch.zeros(1, nr), learnable)
        self._register_batched("log_scale", None if s is None else torch.log(s), torch.zeros(1, 1), learnable)
        self._register_batched("translation", t, torch.zeros(1, ndim), learnable)

    @property
    def scale(self) -> torch.Tensor:
        """``(N, 1)`` isotropic scale ``exp(log_scale)``."""
        return torch.exp(self.log_scale)

    def linear_part(self) -> torch.Tensor:
        return torch.exp(self.log_scale)[:, :, None] * rotation_matrix(self.rotation)


class Affine(LinearTransform):
    """``T(x) = A (x - c) + c + t`` with a free matrix ``A`` (initialised to the identity).

    Args:
        ndim, batch_size, center, translation, learnable, dtype, device: as in :class:`Rigid`.
        linear: ``A``: ``(D, D)`` or ``(N, D, D)`` (default identity).
    """

    _flat = ("linear", "translation")

    def __init__(
        self,
        ndim: int = 3,
        batch_size: int | None = None,
        *,
        center: TensorLike | None = None,
        linear: TensorLike | None = None,
        translation: TensorLike | None = None,
        learnable: bool = True,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        a, t = self._init_batched(ndim, batch_size, center, {"linear": (linear, (ndim, ndim)),
                                                             "translation": (translation, (ndim,))}, dtype, device)
        self._register_batched("linear", a, torch.eye(ndim).unsqueeze(0), learnable)
        self._register_batched("translation", t, torch.zeros(1, ndim), learnable)

    def linear_part(self) -> torch.Tensor:
        return self.linear

    @classmethod
    def from_matrix(
        cls,
        matrix: TensorLike,
        *,
        center: TensorLike | None = None,
        learnable: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> "Affine":
        """An Affine from a homogeneous world matrix ``moving_from_fixed``.

        Args:
            matrix: ``(D+1, D+1)`` or ``(N, D+1, D+1)`` world (RAS mm) matrix ``[[A, b], [0, 1]]``.
            center: ``(D,)`` or ``(N, D)`` world mm (default origin); ``t = b - c + A c``.
            learnable: as in :class:`Translation`; with ``False`` a matrix in an autograd graph stays in it.
            dtype, device: default those of ``matrix`` when it is a floating tensor, else float32 / CPU.

        Raises:
            ValueError: if ``matrix`` is not square homogeneous of size 3 or 4.
        """
        m = matrix if isinstance(matrix, torch.Tensor) else torch.as_tensor(np.asarray(matrix, dtype=np.float64))
        if dtype is None:
            dtype = m.dtype if m.dtype.is_floating_point and isinstance(matrix, torch.Tensor) else torch.float32
        device = device if device is not None else m.device
        m = m.to(dtype=dtype, device=device)
        if m.ndim == 2:
            m = m.unsqueeze(0)
        if m.ndim != 3 or m.shape[-1] != m.shape[-2] or m.shape[-1] not in (3, 4):
            raise ValueError(f"matrix: expected shape (D+1, D+1) or (N, D+1, D+1) with D in (2, 3), got {tuple(m.shape)}")
        d = m.shape[-1] - 1
        c = _as_batched(center, (d,), "center", dtype, device)
        c = torch.zeros(1, d, dtype=dtype, device=device) if c is None else c
        a, b = m[:, :d, :d], m[:, :d, d]
        t = b - c + (a @ c.unsqueeze(-1)).squeeze(-1)
        n = _batch_size(None, {"matrix": m, "center": c})
        return cls(d, n, linear=a, translation=t, center=c, learnable=learnable, dtype=dtype, device=device)

