"""Network Slimming (Liu et al. 2017): an L1 penalty on BatchNorm scales during training, so unimportant channels'
gammas shrink toward zero and the ``bn_scale`` criterion can remove them with little loss.

    fit(model, data, TrainConfig(epochs=30), callbacks=[BNSparsity(1e-4)])
    plan = make_plan(model, x, ratio=0.5, criterion="bn_scale", scope="global")

The penalty lam * sum_c |gamma_c| is applied as its subgradient, lam * sign(gamma), added to each gamma's gradient
after backward (gradients are unscaled there, so it works with mixed precision too).
"""
from __future__ import annotations

from typing import Any, Dict, Iterator

import torch
from torch import nn

from .errors import ConfigError
from .train.callbacks import Callback, TrainState

BN = nn.modules.batchnorm._BatchNorm


def _gammas(model: nn.Module) -> Iterator[nn.Parameter]:
    for m in model.modules():
        if isinstance(m, BN) and m.affine and m.weight is not None:
            yield m.weight


def bn_l1(model: nn.Module) -> float:
    """sum |gamma| over every BatchNorm (what the penalty drives down; handy to log)."""
    return float(sum(g.detach().abs().sum() for g in _gammas(model)))


class BNSparsity(Callback):
    """Adds ``penalty * sign(gamma)`` to every BatchNorm gamma's gradient at each step."""

    def __init__(self, penalty: float = 1e-4) -> None:
        if not penalty >= 0:
            raise ConfigError(f"BN sparsity penalty={penalty!r} must be >= 0 (typical: 1e-5 to 1e-3)")
        self.penalty = float(penalty)

    def on_after_backward(self, state: TrainState) -> None:
        """Add the L1 subgradient ``penalty * sign(gamma)`` to every BatchNorm gamma's gradient."""
        if self.penalty == 0:
            return
        with torch.no_grad():
            for g in _gammas(state.unwrapped):
                if g.grad is not None:
                    g.grad.add_(torch.sign(g), alpha=self.penalty)

    def state_dict(self) -> Dict[str, Any]:
        return {"penalty": self.penalty}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.penalty = float(state.get("penalty", self.penalty))
