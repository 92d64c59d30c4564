"""The balancing act: how sensitive each layer is, and the most pruning a score budget allows.

    score, recal = data_scorer(ds, split="val")                  # accuracy on a split; BN re-estimation
    sens = layer_sensitivity(model, x, score, recalibrate=recal)  # per layer x ratio drop
    choice = budget_search(model, x, sens, score, max_drop=0.01, recalibrate=recal)
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

from torch import nn

from .budget import BudgetChoice, budget_search, ladder
from .sensitivity import Sensitivity, layer_sensitivity

__all__ = ["BudgetChoice", "Sensitivity", "budget_search", "data_scorer", "ladder", "layer_sensitivity"]


def data_scorer(ds: Any, split: str = "val", recal_batches: int = 8, batch_size: int = 64,
                device: Any = None) -> Tuple[Callable[[nn.Module], float], Optional[Callable[[nn.Module], Any]]]:
    """``(score, recalibrate)`` for a prunekit dataset: accuracy on ``split`` (not the test split: decisions are
    made on data the final report does not use), and BatchNorm re-estimation on ``recal_batches`` un-augmented
    training batches (the same batches for every candidate; None when ``recal_batches`` is 0)."""
    from ..data import calibration_batches
    from ..errors import ConfigError
    from ..train import evaluate
    from ..train.bn import recalibrate_bn

    if split not in ds.splits or len(ds.splits[split]) == 0:
        raise ConfigError(f"split {split!r} is empty or missing (splits: {', '.join(ds.splits)}); give the dataset a "
                          "validation part (--val-frac) or score on another split")
    batches = calibration_batches(ds, recal_batches, batch_size, device=device or "cpu")

    def score(model: nn.Module) -> float:
        return float(evaluate(model, ds, split)["accuracy"])

    def recalibrate(model: nn.Module) -> None:
        recalibrate_bn(model, batches)
        model.eval()

    return score, recalibrate if recal_batches else None
