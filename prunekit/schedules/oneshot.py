"""One-shot pruning: prune once to the target at ``start_epoch``, then train (fine-tune) the rest of the run.

Start from a trained model with ``start_epoch=0``, or train from scratch for ``start_epoch`` epochs first: the
same total budget as every other schedule. Structured one-shot shrinks the model physically at that boundary.

    fit(model, data, TrainConfig(epochs=20), callbacks=[OneShot("unstructured", target=0.9, start_epoch=10)])
"""
from __future__ import annotations

from typing import Any, List, Optional

from ..train.callbacks import TrainState
from .base import SCHEDULES
from .iterative import Iterative


@SCHEDULES.register("oneshot")
class OneShot(Iterative):
    """A single round at ``start_epoch`` (``end_epoch`` and ``every`` are ignored)."""

    def __init__(self, method: str = "unstructured", target: float = 0.9, criterion: str = "l1",
                 start_epoch: int = 0, end_epoch: Optional[int] = None, every: Optional[int] = None,
                 **common: Any) -> None:
        super().__init__(method, target, criterion, start_epoch, None, None, rounds=1, **common)

    def boundaries(self, state: TrainState) -> List[int]:
        """One round, at ``start_epoch``."""
        return [self.start_epoch]
