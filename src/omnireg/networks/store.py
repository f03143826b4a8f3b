"""Saving and loading trained models: one file holds the architecture's config, the weights and metadata.

A model file is a ``torch.save`` dictionary read with ``weights_only=True`` (no pickled code)::

    {"format": "omnireg-model", "version": 1, "kind": "disa", "config": {...}, "state_dict": {...},
     "meta": {...}}

``kind`` names an architecture registered with :func:`register_architecture`; ``config`` holds the
fields of its config dataclass, so :func:`load_model` rebuilds the network from the file alone.

Registration goes one way: this module keeps the registry and imports no architecture; each
architecture module calls ``register_architecture(kind, factory, config_cls)`` once at its end, and
``omnireg/networks/__init__.py`` imports every architecture module. Python runs that ``__init__``
before any submodule of the package, so every built-in kind is registered whenever this module is
usable. A new architecture is one ``register_architecture`` line in its module plus one import line
in ``omnireg/networks/__init__.py``.
``meta`` records how the model was made (command, data, validation figures). Weights shipped with
the package live in ``omnireg/data/weights/<kind>_<D>d.pt`` and load offline
(:func:`packaged_weights`, :func:`resolve_weights`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

__all__ = [
    "atomic_torch_save",
    "to_plain",
    "MODEL_FORMAT",
    "load_cached_model",
    "load_model",
    "packaged_weights",
    "read_model_file",
    "register_architecture",
    "resolve_weights",
    "save_model",
]

log = logging.getLogger(__name__)

MODEL_FORMAT = "omnireg-model"
_VERSION = 1
_ARCHITECTURES: dict[str, tuple[Callable[[Any], nn.Module], type]] = {}


def register_architecture(kind: str, factory: Callable[[Any], nn.Module], config_cls: type) -> None:
    """Make ``kind`` loadable: ``factory(config_cls(**file["config"]))`` rebuilds the network."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config_cls: expected a dataclass, got {config_cls!r}")
    _ARCHITECTURES[kind] = (factory, config_cls)


def atomic_torch_save(obj: dict, path: Path) -> None:
    """``torch.save`` to ``path`` (replacing it) through :func:`omnireg.io.atomic_output`: never a partial file."""
    from ..core.files import atomic_output

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, force=True) as tmp:
        torch.save(obj, tmp)


def to_plain(value: Any) -> Any:
    """Config and metadata as plain values for a weights-only file: :func:`omnireg.io.json_ready`.

    The one conversion of omnireg's values to plain data is :func:`~omnireg.io.json_ready` (tuples
    become lists, enums their value, paths strings, NumPy scalars Python numbers, NaN ``None``); this
    name is kept for the training modules that call it.
    """
    from ..core.files import json_ready

    return json_ready(value)


def save_model(path: str | Path, model: nn.Module, *, kind: str, meta: dict | None = None) -> Path:
    """Write ``model`` (which has a dataclass ``config`` attribute) to ``path`` atomically.

    Args:
        path: the output file (conventionally ``.pt``).
        model: a registered architecture built from its ``config``.
        kind: the architecture name given to :func:`register_architecture`.
        meta: provenance and validation figures (plain types).

    Returns:
        The path written.
    """
    if kind not in _ARCHITECTURES:
        raise ValueError(f"kind: unknown architecture {kind!r}; known: {sorted(_ARCHITECTURES)}")
    config = getattr(model, "config", None)
    if not dataclasses.is_dataclass(config):
        raise TypeError("model: expected a network with a dataclass `config` attribute")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    obj = {
        "format": MODEL_FORMAT,
        "version": _VERSION,
        "kind": kind,
        "config": to_plain(config),
        "state_dict": state,
        "meta": to_plain(meta or {}),
    }
    path = Path(path)
    atomic_torch_save(obj, path)
    return path


def read_model_file(path: str | Path, *, name: str = "weights") -> dict:
    """Read and check a model file; return its dictionary (``kind``, ``config``, ``state_dict``, ``meta``);
    errors name ``name`` (the option or flag that gave the file).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an omnireg model file (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such file: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        import zipfile

        why = "not a PyTorch file" if not zipfile.is_zipfile(path) else (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{name}: {path} is not a readable omnireg model file ({why})") from None
    if not isinstance(obj, dict) or obj.get("format") != MODEL_FORMAT:
        raise ValueError(f"{name}: {path} is not an omnireg model file (no '{MODEL_FORMAT}' header)")
    if obj.get("version", 0) > _VERSION:
        raise ValueError(f"{name}: {path} was written by a newer omnireg (format version {obj.get('version')})")
    return obj


def load_model(path: str | Path, *, kind: str | None = None, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the network saved in ``path``; returns ``(model in eval mode, meta)``.

    Args:
        path: a model file written by :func:`save_model`.
        kind: if given, the file must hold that architecture.
        map_location: device of the returned model.

    Raises:
        FileNotFoundError, ValueError: missing file, wrong format or kind, incompatible weights.
    """
    obj = read_model_file(path)
    file_kind = obj.get("kind")
    if kind is not None and file_kind != kind:
        raise ValueError(f"weights: {path} holds a {file_kind!r} model, expected {kind!r}")
    if file_kind not in _ARCHITECTURES:
        raise ValueError(f"weights: {path} holds an unknown architecture {file_kind!r}; known: {sorted(_ARCHITECTURES)}")
    factory, config_cls = _ARCHITECTURES[file_kind]
    names = {f.name for f in dataclasses.fields(config_cls)}
    try:
        config = config_cls(**{k: v for k, v in obj["config"].items() if k in names})
        model = factory(config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"weights: {path} has an invalid {file_kind!r} config: {str(exc).splitlines()[0]}") from None
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"weights: {path} does not match its {file_kind!r} config: {str(exc).splitlines()[0]}") from None
    model.to(map_location).eval()
    return model, obj.get("meta", {})


def packaged_weights(name: str) -> Path:
    """Path of the weights ``name`` (e.g. ``"disa_3d"``) shipped in ``omnireg/data/weights``.

    Raises:
        ValueError: no such packaged model (the message lists the shipped ones).
    """
    root = Path(str(resources.files("omnireg.data") / "weights"))
    path = root / f"{name}.pt"
    if not path.is_file():
        shipped = sorted(p.stem for p in root.glob("*.pt")) if root.is_dir() else []
        raise ValueError(f"weights: no packaged model {name!r}; shipped: {shipped}")
    return path


def resolve_weights(weights: str | Path | None, kind: str, ndim: int) -> Path:
    """The model file to use: ``weights`` if given (a path, or a packaged name), else ``<kind>_<ndim>d``."""
    if weights is None or str(weights) == "":
        return packaged_weights(f"{kind}_{ndim}d")
    path = Path(weights)
    if path.suffix == "" and not path.exists():
        return packaged_weights(str(weights))
    if not path.is_file():
        raise FileNotFoundError(f"weights: no such file: {path}")
    return path


_CACHE: dict[tuple, nn.Module] = {}
_CACHE_LOCK = threading.Lock()


def load_cached_model(weights: str | Path | None, kind: str, ndim: int, *, device: str | torch.device = "cpu") -> nn.Module:
    """The network of :func:`resolve_weights` ``(weights, kind, ndim)``, loaded once per file version and device.

    Cached models are shared: parameters frozen, eval mode. The caller checks ``model.config.ndim``.

    Raises:
        FileNotFoundError, ValueError: as :func:`resolve_weights` and :func:`load_model`.
    """
    path = resolve_weights(weights, kind, ndim)
    key = (str(Path(path).resolve()), Path(path).stat().st_mtime_ns, kind, str(torch.device(device)))
    with _CACHE_LOCK:
        model = _CACHE.get(key)
        if model is None:
            model, _ = load_model(path, kind=kind, map_location=device)
            model.requires_grad_(False)
            _CACHE[key] = model
            log.info("loaded %s model %s", kind, path)
    return model
