"""Iterative pruning (Han et al. 2015): K rounds of prune -> train, the per-round target following a curve.

Rounds happen at epoch boundaries ``start_epoch, start_epoch + every, ...`` up to ``end_epoch`` (or at ``rounds``
evenly spaced boundaries); round ``r`` of ``R`` prunes to ``ratio_at(curve, (r + 1) / R, target)``.
Unstructured rounds grow one set of magnitude masks (pruned weights are zero, so they stay pruned).
Structured rounds shrink the model physically through the structured engine (``apply_plan``, optimizer state
carried over), so later epochs train a smaller, faster network; widths count against the original model.

    fit(model, data, TrainConfig(epochs=30), callbacks=[Iterative("structured", target=0.5, end_epoch=20, every=5)])
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from ..apply.structured import apply_plan
from ..errors import ConfigError
from ..train.callbacks import TrainState
from .base import SCHEDULES, Schedule
from .channels import channel_count, group_sizes, input_shape
from .curves import check_curve, ratio_at


@SCHEDULES.register("iterative")
class Iterative(Schedule):
    """K rounds of prune -> fine-tune; see the module docstring.

    Args (beyond :class:`Schedule`):
        curve: per-round target curve, ``linear``, ``cubic`` or ``exponential`` (same share of the survivors
            each round, the default).
        rounds: number of rounds spread evenly over the window (overrides ``every``).
    """

    methods = ("unstructured", "structured")
    default_end = 0.75
    default_every = None  # auto: about four rounds over the window

    def __init__(self, method: str = "unstructured", target: float = 0.9, criterion: str = "l1",
                 start_epoch: int = 0, end_epoch: Optional[int] = None, every: Optional[int] = None,
                 curve: str = "exponential", rounds: Optional[int] = None, **common: Any) -> None:
        super().__init__(method, target, criterion, start_epoch, end_epoch, every, **common)
        if rounds is not None and (not isinstance(rounds, int) or rounds < 1):
            raise ConfigError(f"rounds={rounds!r} must be a positive integer")
        self.curve, self.rounds = check_curve(curve), rounds
        self.original: Optional[Dict[str, int]] = None  # structured: group key -> width before pruning
        self.shape: Optional[List[int]] = None
        self.plans: List[Dict[str, Any]] = []  # structured: every applied Plan, as plain data

    def boundaries(self, state: TrainState) -> List[int]:
        """Epoch counts after which a round runs, in order."""
        start, end = self.start_epoch, self.end(state)
        if self.rounds is not None:
            if self.rounds == 1 or end == start:
                return [start]
            span = end - start
            return sorted({start + round(r * span / (self.rounds - 1)) for r in range(self.rounds)})
        every = self.every or max(1, (end - start) // 4)
        return list(range(start, end + 1, every))

    def on_boundary(self, state: TrainState, boundary: int) -> None:
        """Run the next round if ``boundary`` is its epoch: unstructured masks, or a structured shrink, at the
        ratio ``curve`` gives for the rounds done so far.
        """
        marks = self.boundaries(state)
        done = len(self.history)
        if done >= len(marks) or marks[done] != boundary:
            return
        progress = (done + 1) / len(marks)
        if self.method == "unstructured":
            ratio = ratio_at(self.curve, progress, self.target)
            self.set_masks(state, self.prune_weights(state.unwrapped, ratio))
            event = {"round": done, "epoch": boundary, "step": state.step, "ratio": ratio,
                     "sparsity": self.masks.sparsity().overall}
        else:
            event = self._shrink(state, progress, boundary, done)
        self.history.append(event)

    def _shrink(self, state: TrainState, progress: float, boundary: int, round_index: int) -> Dict[str, Any]:
        model = state.unwrapped
        self.shape = input_shape(state, self.input_size, self.shape)
        example = torch.zeros([1, *self.shape], device=next(model.parameters()).device)
        if self.original is None:
            self.resolve_reduce(model, example)  # measured on the original model
        ratio, overrides = self.ratios_at(self.curve, progress)
        plan, graph = self.plan_channels(state, example, ratio, overrides, boundary, self.original,
                                         schedule=type(self).__name__.lower(), round=round_index)
        if self.original is None:
            self.original = group_sizes(graph)
        before = channel_count(graph)
        apply_plan(model, plan, graph=graph, optimizer=state.optimizer)
        self.plans.append(plan.to_dict())
        after = before - sum(len(g.remove) for g in plan.groups)
        return {"round": round_index, "epoch": boundary, "step": state.step, "ratio": ratio, "channels": after,
                "channels_original": sum(self.original.values()),
                "params": sum(p.numel() for p in model.parameters())}

    def extra_state(self) -> Dict[str, Any]:
        return {"original": self.original, "input_shape": self.shape, "plans": self.plans}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        self.original = dict(state["original"]) if state.get("original") else None
        self.shape = list(state["input_shape"]) if state.get("input_shape") else None
        self.plans = list(state.get("plans") or [])
