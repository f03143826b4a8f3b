"""Progress bars of the command line (tqdm on stderr), fed by the engine's progress events."""

from __future__ import annotations

__all__ = ["RegistrationProgress"]


class RegistrationProgress:
    """One tqdm bar per stage and pyramid level, fed with :class:`omnireg.optim` progress events.

    Args:
        enabled: ``False`` makes every call a no-op (``--no-progress``, ``--quiet``).
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        self.key = None

    def __call__(self, ev) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        key = (ev.stage, ev.level)
        if ev.phase == "optimize" and key != self.key:
            self.close()
            self.key = key
            self.bar = tqdm(total=ev.max_iterations, desc=f"stage {ev.stage + 1}/{ev.n_stages} level {ev.level + 1}/{ev.n_levels}",
                            leave=False, dynamic_ncols=True)
        if self.bar is not None and ev.phase == "optimize":
            self.bar.n = ev.iteration
            self.bar.set_postfix(loss=f"{ev.loss:.4g}", refresh=False)
            self.bar.refresh()

    def close(self) -> None:
        """Close the current bar (call it when the registration ends, also on errors)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
