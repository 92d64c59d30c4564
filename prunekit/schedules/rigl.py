"""RigL (Evci et al. 2020, "Rigging the Lottery"): sparse from the start, constant sparsity, masks that move.

At ``start_epoch`` the model is pruned to the target (magnitude masks; ``criterion="erk"`` gives the paper's ERK
layer densities). Every ``update_every`` steps until ``end_epoch``, each layer drops the ``k`` active weights of
smallest magnitude and grows the ``k`` inactive ones with the largest dense gradient, with

    k = f(t) * active,   f(t) = update_fraction / 2 * (1 + cos(pi * (t - t0) / (t_end - t0)))

so the per-layer count of active weights, and thus the sparsity, never changes. Grown weights start at zero with
zero optimizer state. Ties are broken by position, so the masks are the same on every run.

    fit(model, data, TrainConfig(epochs=30), callbacks=[RigL(target=0.9, criterion="erk", update_every=100)])
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import torch

from ..errors import ConfigError
from ..train.callbacks import TrainState
from .base import SCHEDULES, Schedule, check_update_every, step_window


@SCHEDULES.register("rigl")
class RigL(Schedule):
    """Drop-and-grow at constant sparsity; see the module docstring.

    Args (beyond :class:`Schedule`):
        update_fraction: alpha, the fraction of active weights moved at the first update (cosine-decayed to 0).
        update_every: optimizer steps between updates (default: one epoch of steps).
    """

    methods = ("unstructured",)
    default_end = 0.75

    def __init__(self, method: str = "unstructured", target: float = 0.9, criterion: str = "l1",
                 start_epoch: int = 0, end_epoch: Optional[int] = None, every: Optional[int] = None,
                 update_fraction: float = 0.3, update_every: Optional[int] = None, **common: Any) -> None:
        super().__init__(method, target, criterion, start_epoch, end_epoch, every, **common)
        if not isinstance(update_fraction, (int, float)) or not 0.0 < update_fraction <= 1.0:
            raise ConfigError(f"update_fraction={update_fraction!r} must be in (0, 1], e.g. 0.3")
        self.update_fraction, self.update_every = float(update_fraction), check_update_every(update_every)
        self._grads: Optional[Dict[str, torch.Tensor]] = None  # dense |grad| captured on an update step

    def on_boundary(self, state: TrainState, boundary: int) -> None:
        """At ``start_epoch``, prune to the target with magnitude masks (sparsity then stays constant)."""
        if boundary == self.start_epoch and self.masks is None:
            self.set_masks(state, self.prune_weights(state.unwrapped, self.target))
            self.history.append({"step": state.step, "event": "start", "sparsity": self.masks.sparsity().overall})

    def fraction_at(self, state: TrainState, step: int) -> Optional[float]:
        """f(t) if ``step`` is an update step, else None."""
        first, last, every = step_window(state, self.start_epoch, self.end(state), self.update_every)
        if self.masks is None or not first < step < last or (step - first) % every:
            return None
        return self.update_fraction / 2 * (1 + math.cos(math.pi * (step - first) / (last - first)))

    @torch.no_grad()
    def on_after_backward(self, state: TrainState) -> None:
        """Before an update step, keep the dense |gradient| (the grow criterion), then mask the gradients."""
        if self.fraction_at(state, state.step + 1) is not None:  # the step about to be taken is an update step
            self._grads = {name: (p.grad.detach().abs().float() if p.grad is not None else torch.zeros_like(p))
                           for name, p in self.masks.check(state.unwrapped).items()}
        super().on_after_backward(state)

    @torch.no_grad()
    def on_step_end(self, state: TrainState) -> None:
        """On update steps, drop the smallest active weights and grow the inactive ones with the largest
        gradient in every layer, then re-apply the masks.
        """
        fraction = self.fraction_at(state, state.step)
        if fraction is None or self._grads is None:
            return super().on_step_end(state)
        params = self.masks.check(state.unwrapped)
        moved = 0
        for name, param in params.items():
            moved += self._drop_and_grow(name, param, self._grads[name], fraction)
        self._grads = None
        super().on_step_end(state)  # dropped weights -> 0, their optimizer state -> 0
        self.history.append({"step": state.step, "epoch": state.epoch, "fraction": fraction, "moved": moved,
                             "sparsity": self.masks.sparsity().overall})

    def _drop_and_grow(self, name: str, param: torch.Tensor, grad: torch.Tensor, fraction: float) -> int:
        old = self.masks[name].to(param.device).flatten()
        n_active = int(old.sum())
        k = min(int(fraction * n_active), old.numel() - n_active, n_active)
        if k <= 0:
            return 0
        inf = torch.tensor(float("inf"), device=param.device)
        drop_score = torch.where(old, param.detach().abs().flatten().float(), inf)
        drop = torch.argsort(drop_score, stable=True)[:k]
        after_drop = old.clone()
        after_drop[drop] = False
        grow_score = torch.where(after_drop, -inf, grad.to(param.device).flatten())
        grow = torch.argsort(grow_score, descending=True, stable=True)[:k]
        new = after_drop.clone()
        new[grow] = True
        fresh = new & ~old  # grown connections that were inactive start from zero
        param.view(-1).masked_fill_(fresh, 0.0)
        self.masks[name] = new.view(param.shape)
        return int(fresh.sum())
