"""Soft filter pruning with reconstruction (He et al. 2018, SFP; the soft schedule of PFAM, Zhang et al. 2020).

At the end of every ``every`` epochs from ``start_epoch`` (boundary 0 is skipped: a filter zeroed before any
training has no momentum to grow back from), the channel groups are rescored with any registered criterion and the
lowest-scored channels are zeroed up to the current target: every coupled slice, so a conv filter, its BatchNorm
scale and shift, and the next layer's input slice are exactly 0. They stay trainable: the next epoch's updates
(momentum first, then gradients) can rebuild them, and the next stage may pick other channels. The target can
ramp up over the first ``ramp_epochs`` epochs. When training ends, a last stage runs if the weights were trained
since the previous one, and the final zero channels are removed physically through the structured engine
(``apply_plan``), which leaves the outputs unchanged.

``zero="filters"`` zeroes only the producing filters at the intermediate stages (He et al.'s SFP), so the channel's
BatchNorm and the next layer stay alive and gradients reach the filter again; the default ``zero="group"`` zeroes
every coupled slice, which keeps each stage's model exactly removable but leaves a zeroed channel without any
gradient (only leftover momentum moves it). The final stage always zeroes the whole group before removal.

``hard_epochs=k`` ends the soft phase ``k`` epochs early (soft-then-hard): at boundary ``epochs - k`` the last stage
runs and its zero channels are removed physically at once (optimizer state carried), so the network trains its
final, smaller shape for ``k`` epochs. Without it, a criterion that does not look at magnitude (PFAM's cosine,
random) can swap channels at the very last stage with no epoch left to recover.

    fit(model, data, TrainConfig(epochs=30), callbacks=[SoftFilter(target=0.4, criterion="pfam", ramp_epochs=5)])
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from ..apply.structured import apply_plan, channel_masks, zero_channels
from ..errors import ConfigError
from ..graph import build_graph
from ..importance.observe import is_filter_slice
from ..plan import Plan
from ..train.callbacks import TrainState
from .base import SCHEDULES, Schedule, tensor_dict
from .channels import input_shape
from .curves import check_curve


@SCHEDULES.register("soft")
class SoftFilter(Schedule):
    """Zero -> regrow -> rescore every epoch, physical removal at the end; see the module docstring.

    Args (beyond :class:`Schedule`):
        ramp_epochs: epochs over which the target rises from 0 (0: the full target from the first stage).
        ramp_curve: shape of that rise: ``linear``, ``cubic`` or ``exponential``.
        remove: remove the final zero channels physically at train end (default True).
        hard_epochs: epochs trained after an early physical removal (0: remove only when training ends).
        zero: what an intermediate stage zeroes: ``group`` (every coupled slice) or ``filters`` (SFP).
    """

    methods = ("structured",)
    default_end = 1.0
    default_every = 1

    def __init__(self, method: str = "structured", target: float = 0.5, criterion: str = "l2",
                 start_epoch: int = 0, end_epoch: Optional[int] = None, every: Optional[int] = None,
                 ramp_epochs: int = 0, ramp_curve: str = "linear", remove: bool = True,
                 hard_epochs: int = 0, zero: str = "group", **common: Any) -> None:
        super().__init__(method, target, criterion, start_epoch, end_epoch, every, **common)
        if not isinstance(ramp_epochs, int) or ramp_epochs < 0:
            raise ConfigError(f"ramp_epochs={ramp_epochs!r} must be an integer >= 0")
        if not isinstance(hard_epochs, int) or hard_epochs < 0:
            raise ConfigError(f"hard_epochs={hard_epochs!r} must be an integer >= 0")
        if hard_epochs and not remove:
            raise ConfigError("hard_epochs removes channels physically before training ends; it needs remove=True")
        if zero not in ("group", "filters"):
            raise ConfigError(f"zero={zero!r} must be 'group' (every coupled slice) or 'filters' (SFP)")
        self.hard_epochs, self.zero = hard_epochs, zero
        self.ramp_epochs, self.ramp_curve = ramp_epochs, check_curve(ramp_curve)
        self.remove = bool(remove)
        self.plan: Optional[Dict[str, Any]] = None  # last stage's Plan as plain data
        self.keep: Dict[str, torch.Tensor] = {}  # group key -> kept channels after the last stage
        self.shape: Optional[list] = None
        self.trained_since_stage = False
        self.removed = False  # soft-then-hard: the channels are already gone
        self._removed_from: Optional[int] = None

    def progress(self, boundary: int) -> float:
        """How far the ramp is at ``boundary`` (1 without a ramp)."""
        return 1.0 if not self.ramp_epochs else (boundary - self.start_epoch) / self.ramp_epochs

    def hard_boundary(self, state: TrainState) -> Optional[int]:
        """The boundary where soft-then-hard removes channels for good (None: at train end)."""
        if not self.hard_epochs:
            return None
        if self.hard_epochs >= state.epochs:
            raise ConfigError(f"hard_epochs={self.hard_epochs} leaves no soft epoch in a {state.epochs}-epoch run; "
                              "use fewer hard epochs or train longer")
        return state.epochs - self.hard_epochs

    def is_stage(self, state: TrainState, boundary: int) -> bool:
        """True when ``boundary`` is a soft stage: every ``every`` epochs from ``start_epoch`` (never boundary 0)
        up to the window's end or the hard boundary.
        """
        hard = self.hard_boundary(state)
        last = self.end(state) if hard is None else min(self.end(state), hard)
        return (boundary >= max(1, self.start_epoch) and boundary <= last
                and (boundary - self.start_epoch) % self.every == 0)

    def on_step_end(self, state: TrainState) -> None:
        """Note that the weights trained since the last stage (zeroed channels may have regrown); nothing is
        masked.
        """
        self.trained_since_stage = True

    def on_boundary(self, state: TrainState, boundary: int) -> None:
        """Remove the zero channels at the hard boundary, or rescore and zero channels at a stage."""
        if self.removed:
            return
        if boundary == self.hard_boundary(state):
            self._remove(state, boundary)
        elif self.is_stage(state, boundary):
            self.stage(state, self.progress(boundary), boundary)

    def stage(self, state: TrainState, progress: float, boundary: int, final: bool = False) -> Plan:
        """Rescore and zero the lowest channels up to the target ``progress`` of the way along the ramp."""
        model = state.unwrapped
        self.shape = input_shape(state, self.input_size, self.shape)
        example = torch.zeros([1, *self.shape], device=next(model.parameters()).device)
        self.resolve_reduce(model, example)
        ratio, overrides = self.ratios_at(self.ramp_curve, progress)
        plan, graph = self.plan_channels(state, example, ratio, overrides, boundary, schedule="soft", epoch=boundary)
        zero_channels(model, plan, graph, only=None if final or self.zero == "group" else is_filter_slice)
        keep = channel_masks(plan)
        swapped = sum(int((~keep[k] & self.keep[k]).sum()) for k in keep
                      if k in self.keep and self.keep[k].shape == keep[k].shape)
        self.plan, self.keep, self.trained_since_stage = plan.to_dict(), keep, False
        self.history.append({"epoch": boundary, "step": state.step, "ratio": ratio, "progress": min(1.0, progress),
                             "zeroed": sum(len(g.remove) for g in plan.groups), "swapped": swapped})
        return plan

    def on_train_end(self, state: TrainState) -> None:
        """Last stage if needed, then remove the zero channels for good (in place; optimizer state carried)."""
        if self.remove and not self.removed and self._removed_from != id(state.unwrapped):
            self._remove(state, -1)

    def _remove(self, state: TrainState, boundary: int) -> None:
        model = state.unwrapped
        last_progress = self.history[-1].get("progress") if self.history else None
        if self.plan is None or self.trained_since_stage or last_progress != 1.0 or self.zero != "group":
            self.stage(state, 1.0, boundary, final=True)
        plan = Plan.from_dict(self.plan)
        example = torch.zeros([1, *self.shape], device=next(model.parameters()).device)
        apply_plan(model, plan, graph=build_graph(model, (example,), ignore=plan.ignore), optimizer=state.optimizer)
        self._removed_from = id(model)
        self.removed = boundary >= 0  # removed mid-training: later boundaries and train end leave the model alone
        self.history.append({"event": "removed", "epoch": boundary, "channels_removed": sum(
            len(g["remove"]) for g in self.plan["groups"])})

    def extra_state(self) -> Dict[str, Any]:
        return {"plan": self.plan, "keep": tensor_dict(self.keep), "input_shape": self.shape,
                "trained_since_stage": self.trained_since_stage, "removed": self.removed}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        self.plan = state.get("plan")
        self.keep = dict(state.get("keep") or {})
        self.shape = list(state["input_shape"]) if state.get("input_shape") else None
        self.trained_since_stage = bool(state.get("trained_since_stage"))
        self.removed = bool(state.get("removed"))
