"""Per-pair, optimisation-based registration: configuration, presets, pyramids, initialisation, engine."""

from .config import PRESETS, Init, Optimizer, RegistrationConfig, StageConfig, TransformKind, mad_stages, preset
from .engine import register
from .result import LevelHistory, ProgressEvent, RegistrationResult

__all__ = [
    "PRESETS",
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
