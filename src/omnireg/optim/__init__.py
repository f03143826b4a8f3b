"""Per-pair, optimisation-based registration: configuration, presets, pyramids, initialisation, engine."""

from .config import Init, Optimizer, RegistrationConfig, StageConfig, TransformKind
from .presets import DEFAULT_PRESET, PRESETS, configure, mad_stages, preset
from .engine import register
from .result import LevelHistory, ProgressEvent, RegistrationResult

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "configure",
    "Init",
    "LevelHistory",
    "Optimizer",
    "ProgressEvent",
    "RegistrationConfig",
    "RegistrationResult",
    "StageConfig",
    "TransformKind",
    "mad_stages",
    "preset",
    "register",
]
