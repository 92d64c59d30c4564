"""Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune").

Every ``update_every`` optimizer steps from step ``t0 = start_epoch * steps_per_epoch``, for ``n`` updates spanning
the window up to ``end_epoch``, sparsity is raised to

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3

(``s_i = initial_ratio``, ``s_f = target``) by re-running exact-count magnitude pruning; between updates the
masks keep pruned weights at zero. Already-pruned weights are zero, so they stay pruned: the masks only grow.

    fit(model, data, TrainConfig(epochs=30), callbacks=[Gradual(target=0.9, start_epoch=2, end_epoch=20)])
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from ..errors import ConfigError
from ..train.callbacks import TrainState
from .base import SCHEDULES, Schedule, check_update_every, step_window
from .curves import ratio_at


@SCHEDULES.register("gradual")
class Gradual(Schedule):
    """Cubic sparsity ramp; see the module docstring.

    Args (beyond :class:`Schedule`):
        initial_ratio: s_i, sparsity of the first update (default 0).
        update_every: dt in optimizer steps (default: one epoch of steps).
    """

    methods = ("unstructured",)
    default_end = 0.75

    def __init__(self, method: str = "unstructured", target: float = 0.9, criterion: str = "l1",
                 start_epoch: int = 0, end_epoch: Optional[int] = None, every: Optional[int] = None,
                 initial_ratio: float = 0.0, update_every: Optional[int] = None, **common: Any) -> None:
        super().__init__(method, target, criterion, start_epoch, end_epoch, every, **common)
        if not isinstance(initial_ratio, (int, float)) or not 0.0 <= initial_ratio <= self.target:
            raise ConfigError(f"initial_ratio={initial_ratio!r} must be in [0, target={self.target}]")
        self.initial_ratio, self.update_every = float(initial_ratio), check_update_every(update_every)
        self.last_update: Optional[int] = None

    def window(self, state: TrainState) -> Tuple[int, int, int]:
        """(t0, dt, n): first update step, steps between updates, number of updates after the first."""
        first, last, dt = step_window(state, self.start_epoch, self.end(state), self.update_every)
        span = last - first
        if span <= 0:
            return first, 1, 0
        dt = min(dt, span)
        return first, dt, span // dt

    def sparsity_at(self, state: TrainState, step: int) -> Optional[float]:
        """s_t if ``step`` is an update step, else None."""
        t0, dt, n = self.window(state)
        if step < t0 or (step - t0) % dt or (step - t0) // dt > n:
            return None
        k = (step - t0) // dt
        return self.target if n == 0 else ratio_at("cubic", k / n, self.target, self.initial_ratio)

    def _maybe_update(self, state: TrainState) -> bool:
        ratio = self.sparsity_at(state, state.step)
        if ratio is None or self.last_update == state.step:
            return False
        self.set_masks(state, self.prune_weights(state.unwrapped, ratio))
        self.last_update = state.step
        self.history.append({"step": state.step, "epoch": state.epoch, "ratio": ratio,
                             "sparsity": self.masks.sparsity().overall})
        return True

    def on_train_start(self, state: TrainState) -> None:
        """Refuse a window after the run's end, then prune if step 0 is an update step."""
        self.check_window(state)
        self._maybe_update(state)

    def on_step_end(self, state: TrainState) -> None:
        """Raise the sparsity on update steps; otherwise keep masked weights at zero."""
        if not self._maybe_update(state):
            super().on_step_end(state)

    def extra_state(self) -> Dict[str, Any]:
        return {"last_update": self.last_update}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        self.last_update = state.get("last_update")
