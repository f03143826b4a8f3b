"""What a registration returns, and the progress events it reports through callbacks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..core import Image

__all__ = ["ProgressEvent", "Callback", "LevelHistory", "RegistrationResult"]


@dataclass(frozen=True)
class ProgressEvent:
    """One optimiser iteration (or a phase change when ``iteration`` is 0).

    ``stage``/``level`` are 0-based; ``loss`` is the value being minimised at this iteration.
    """

    stage: int
    n_stages: int
    level: int
    n_levels: int
    iteration: int
    max_iterations: int
    loss: float
    phase: str = "optimize"  # "init", "search", "optimize", "done"


Callback = Callable[[ProgressEvent], None]


@dataclass
class LevelHistory:
    """Loss values of one pyramid level of one stage, in iteration order."""

    stage: int
    level: int
    transform: str
    metric: str
    shrink: float
    losses: list[float] = field(default_factory=list)
    converged: bool = False
    runtime_s: float = 0.0


@dataclass
class RegistrationResult:
    """The outcome of :func:`omnireg.optim.register`.

    Attributes:
        transform: the whole fixed -> moving mapping (``linear`` then, on the points, after the deformable part:
            ``transform(x) = linear(deformable(x))``).
        linear: the linear part (initialisation and every linear stage), an ``Affine``.
        deformable: the deformable part (a ``DisplacementField`` on the fixed grid, applied to fixed points
            first), or ``None``.
        warped: the moving image resampled onto the fixed grid through ``transform``.
        history: the loss history per stage and level.
        metric_before / metric_after: the last stage's similarity at the start and at the end (full resolution).
        runtime_s: total wall time; ``stage_runtimes_s``: per stage.
        config: the configuration used (a dict).
        stage_checks: per stage, the guard's record (:class:`omnireg.optim.stage.StageCheck` as a dict:
            ``loss_start``, ``loss_end``, ``kept``, ``starts``).
        initialization: how the start was chosen (method, field-of-view analysis, candidates and scores).
    """

    transform: Any
    linear: Any
    deformable: Any
    warped: Image
    history: list[LevelHistory]
    metric_before: dict[str, float]
    metric_after: dict[str, float]
    runtime_s: float
    stage_runtimes_s: list[float]
    config: dict
    stage_checks: list[dict] = field(default_factory=list)
    initialization: dict = field(default_factory=dict)

    @property
    def discarded_stages(self) -> list[int]:
        """0-based indices of the stages whose result was worse than their start and was discarded."""
        return [c["stage"] for c in self.stage_checks if not c["kept"]]
