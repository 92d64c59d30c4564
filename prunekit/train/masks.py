"""The training side of unstructured masks: pruned weights stay exactly 0 through fine-tuning.

    masks = magnitude_prune(model, ratio=0.9)
    fit(model, data, cfg, callbacks=[MaskCallback(masks)])
"""
from __future__ import annotations

from typing import Dict

import torch

from ..errors import CheckpointError
from ..sparse.masks import Masks
from .callbacks import Callback, TrainState


class MaskCallback(Callback):
    """Keeps pruned weights at exactly 0 through fine-tuning, whatever the optimizer does.

    * after backward: pruned gradients are zeroed (under DDP this runs after the all-reduce, and the masks are the
      same on every rank, so every rank applies the same update);
    * after each step: pruned weights are re-zeroed, and the optimizer's per-weight state (momentum buffers,
      Adam moments, ...) at pruned positions is zeroed, so momentum or weight decay cannot resurrect them later
      and a mask that is later relaxed starts from a clean state.
    """

    def __init__(self, masks: Masks) -> None:
        self.masks = masks

    def on_train_start(self, state: TrainState) -> None:
        """Zero the pruned weights and their optimizer state before the first step."""
        self.masks.apply(state.unwrapped)
        self._clear_optimizer_state(state)

    @torch.no_grad()
    def on_after_backward(self, state: TrainState) -> None:
        """Zero the gradients of pruned weights."""
        for name, param in self.masks.check(state.unwrapped).items():
            if param.grad is not None:
                param.grad.masked_fill_(~self.masks._on(name, param.grad.device), 0.0)

    def on_step_end(self, state: TrainState) -> None:
        """Re-zero pruned weights and their optimizer state after the optimizer step."""
        self.masks.apply(state.unwrapped)
        self._clear_optimizer_state(state)

    @torch.no_grad()
    def _clear_optimizer_state(self, state: TrainState) -> None:
        opt_state = state.optimizer.state
        for name, param in self.masks.check(state.unwrapped).items():
            for value in opt_state.get(param, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    value.masked_fill_(~self.masks._on(name, value.device), 0)

    def state_dict(self) -> Dict[str, object]:
        return {"masks": self.masks.state_dict()}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Restore the masks saved by ``state_dict``; raises CheckpointError when the state holds none."""
        saved = state.get("masks") if isinstance(state, dict) else None
        if not isinstance(saved, dict):
            raise CheckpointError("MaskCallback state has no 'masks' entry; resume from a checkpoint written by a "
                                  "run that used masks, or start a fresh run")
        self.masks = Masks.from_state_dict(saved)
