"""Dynamic Network Surgery (Guo et al. 2016): prune, keep training the pruned weights, splice them back.

From ``start_epoch`` the forward pass uses ``W * T`` (T the mask), but the optimizer updates the full dense ``W``
with that gradient, so a pruned weight keeps learning. Every ``update_every`` steps the mask is recomputed with
two thresholds around the magnitude ``t`` that would give the target sparsity:

    T = 0 where |W| < a = (1 - margin) * t,   T = 1 where |W| >= b = (1 + margin) * t,   unchanged in between

so a pruned weight whose magnitude recovers past ``b`` is spliced back, and the band stops flip-flopping.
At ``end_epoch`` the mask is frozen at exactly the target sparsity (magnitude of the dense weights) and the rest
of the run fine-tunes with it. (The paper updates masks with a decaying probability; here updates are on a fixed
step grid so a resumed run replays them exactly.)

    fit(model, data, TrainConfig(epochs=30), callbacks=[DynamicSurgery(target=0.9, end_epoch=20)])
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from ..errors import ConfigError
from ..sparse import select_targets
from ..train.callbacks import TrainState
from .base import SCHEDULES, UNSTRUCTURED_CRITERIA, Schedule, check_update_every, step_window, tensor_dict


@SCHEDULES.register("dns")
class DynamicSurgery(Schedule):
    """DNS with hysteresis thresholds; see the module docstring.

    Args (beyond :class:`Schedule`):
        margin: half-width of the hysteresis band, as a fraction of the threshold (a = (1-m) t, b = (1+m) t).
        update_every: optimizer steps between mask updates (default: one epoch of steps).
    """

    methods = ("unstructured",)
    default_end = 0.75

    def __init__(self, method: str = "unstructured", target: float = 0.9, criterion: str = "l1",
                 start_epoch: int = 0, end_epoch: Optional[int] = None, every: Optional[int] = None,
                 margin: float = 0.1, update_every: Optional[int] = None, **common: Any) -> None:
        super().__init__(method, target, criterion, start_epoch, end_epoch, every, **common)
        if not isinstance(margin, (int, float)) or not 0.0 <= margin < 1.0:
            raise ConfigError(f"margin={margin!r} must be a fraction in [0, 1), e.g. 0.1")
        self.margin, self.update_every = float(margin), check_update_every(update_every)
        self.dense: Dict[str, torch.Tensor] = {}  # full weights while splicing is on
        self.layer_ratio: Dict[str, float] = {}  # per-layer share of the budget (layer scope, LAMP or ERK)

    # -- phases ----------------------------------------------------------------------------------------------------
    def on_boundary(self, state: TrainState, boundary: int) -> None:
        """At ``start_epoch`` prune to the target and keep a dense copy of the weights (splicing starts); at the
        window's end freeze exact-count masks on the dense weights.
        """
        model = state.unwrapped
        if boundary == self.start_epoch and self.masks is None:
            dense = {}
            for t in select_targets(model, skip=self.skip or None):
                dense[t.param_name] = t.param.detach().clone()
            self.masks = self.prune_weights(model, self.target)  # zeroes the pruned weights in the model
            self.dense = {name: dense[name] for name in self.masks}
            self.history.append({"step": state.step, "event": "start", "sparsity": self.masks.sparsity().overall})
        if boundary == self.end(state) and self.dense:
            self._freeze(state)

    @torch.no_grad()
    def _freeze(self, state: TrainState) -> None:
        """Dense weights back in, then exact-count magnitude masks: the run ends at exactly the target."""
        params = dict(state.unwrapped.named_parameters())
        for name, w in self.dense.items():
            params[name].copy_(w)
        self.dense = {}
        self.set_masks(state, self.prune_weights(state.unwrapped, self.target))
        self.history.append({"step": state.step, "event": "freeze", "sparsity": self.masks.sparsity().overall})

    # -- training steps while splicing -----------------------------------------------------------------------------
    @torch.no_grad()
    def on_after_backward(self, state: TrainState) -> None:
        """The gradient was taken at W * T; let the optimizer apply it to the dense W."""
        if not self.dense:
            return super().on_after_backward(state)
        for name, param in self.masks.check(state.unwrapped).items():
            if self.dense[name].device != param.device:
                self.dense[name] = self.dense[name].to(param.device)
            param.copy_(self.dense[name])

    @torch.no_grad()
    def on_step_end(self, state: TrainState) -> None:
        """While splicing: store the updated dense weights, re-threshold the masks on update steps, then apply
        the masks to the forward weights. After the freeze, plain masking.
        """
        if not self.dense:
            return super().on_step_end(state)
        params = self.masks.check(state.unwrapped)
        for name, param in params.items():
            self.dense[name].copy_(param)
        first, last, every = step_window(state, self.start_epoch, self.end(state), self.update_every)
        if first < state.step < last and (state.step - first) % every == 0:
            self.update_masks(state.step, state.epoch)
        for name, param in params.items():
            param.masked_fill_(~self.masks._on(name, param.device), 0.0)

    @torch.no_grad()
    def update_masks(self, step: int = -1, epoch: int = -1) -> Dict[str, int]:
        """Re-threshold every mask from the dense weights; returns counts of spliced and newly pruned weights."""
        # one global magnitude threshold, unless the budget was shared out per layer (scope "layer", or a LAMP /
        # ERK allocation): then each layer keeps the share its first masks gave it
        shared = self.scope == "global" and UNSTRUCTURED_CRITERIA[self.criterion] is None
        if shared:
            flat = torch.cat([w.abs().flatten().float().cpu() for w in self.dense.values()])
            k = round(self.target * flat.numel())
            t_all = float(torch.kthvalue(flat, k).values) if k > 0 else 0.0
        elif not self.layer_ratio:
            self.layer_ratio = {n: float(self.target if self.scope == "layer" else (~self.masks[n]).float().mean())
                                for n in self.dense}
        spliced = pruned = 0
        for name, w in self.dense.items():
            mag = w.abs().float().cpu()
            if shared:
                t = t_all
            else:
                k = round(self.layer_ratio[name] * mag.numel())
                t = float(torch.kthvalue(mag.flatten(), k).values) if k > 0 else 0.0
            old = self.masks[name]
            new = (mag >= (1 + self.margin) * t) | (old & (mag >= (1 - self.margin) * t)) if k > 0 else \
                torch.ones_like(old)
            spliced += int((new & ~old).sum())
            pruned += int((old & ~new).sum())
            self.masks[name] = new
        event = {"step": step, "epoch": epoch, "spliced": spliced, "pruned": pruned,
                 "sparsity": self.masks.sparsity().overall}
        self.history.append(event)
        return event

    # -- state -----------------------------------------------------------------------------------------------------
    def extra_state(self) -> Dict[str, Any]:
        return {"dense": tensor_dict(self.dense), "layer_ratio": dict(self.layer_ratio)}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        """Restore the dense weights and layer ratios; while splicing, drop the masker so pruned weights keep
        training.
        """
        self.dense = dict(state.get("dense") or {})
        self.layer_ratio = {k: float(v) for k, v in (state.get("layer_ratio") or {}).items()}
        if self.dense:
            self._masker = None  # splicing: the dense weights train, the masks only shape the forward pass
