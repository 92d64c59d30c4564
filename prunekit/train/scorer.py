"""A score for searches that decide on data: accuracy on a held-out split, with BatchNorm re-estimated first.

    score, recal = data_scorer(ds, split="val")                  # for layer_sensitivity / budget_search
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

from torch import nn

from ..data import calibration_batches
from ..errors import ConfigError
from .bn import recalibrate_bn
from .loop import evaluate


def data_scorer(ds: Any, split: str = "val", recal_batches: int = 8, batch_size: int = 64,
                device: Any = None) -> Tuple[Callable[[nn.Module], float], Optional[Callable[[nn.Module], Any]]]:
    """``(score, recalibrate)`` for a prunekit dataset: accuracy on ``split`` (not the test split: decisions are
    made on data the final report does not use), and BatchNorm re-estimation on ``recal_batches`` un-augmented
    training batches (the same batches for every candidate; None when ``recal_batches`` is 0)."""
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
