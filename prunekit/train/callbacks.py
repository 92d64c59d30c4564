"""Hooks the training loop calls, so pruning schedules and masks plug in without the loop knowing them.

A callback that holds state (masks, a schedule's step) returns it from ``state_dict`` as tensors and JSON-able
values; the loop saves it in the checkpoint and restores it on resume, so a killed run ends exactly as an
uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch
from torch import nn


@dataclass
class TrainState:
    """What a callback may read (and, for model/optimizer, change) at each hook."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epoch: int = 0  # 0-based epoch being run
    step: int = 0  # global optimizer steps done so far
    epochs: int = 0  # total epochs planned
    steps_per_epoch: int = 0
    metrics: Dict[str, Any] = field(default_factory=dict)  # last validation metrics
    stop: bool = False  # a callback may ask the loop to stop early
    loader: Optional[Any] = None  # the training batch iterator, for data-driven criteria
    data: Optional[Any] = None  # the dataset (SceneDataset): splits, classes, image size

    @property
    def unwrapped(self) -> nn.Module:
        """The model without a DistributedDataParallel wrapper."""
        return getattr(self.model, "module", self.model)


class Callback:
    """No-op base; override what you need."""

    def on_train_start(self, state: TrainState) -> None:
        """Before the first epoch of a fresh run (not called when fit resumes from a checkpoint)."""

    def on_epoch_start(self, state: TrainState) -> None:
        """Before the epoch ``state.epoch`` trains."""

    def on_after_backward(self, state: TrainState) -> None:
        """Gradients exist, optimizer has not stepped: mask gradients here."""

    def on_step_end(self, state: TrainState) -> None:
        """Optimizer has stepped: re-apply masks here."""

    def on_epoch_end(self, state: TrainState) -> None:
        """After validation of the epoch (``state.metrics`` is fresh); soft pruning stages run here."""

    def on_train_end(self, state: TrainState) -> None:
        """After the last epoch (or early stop, with the best epoch restored); may replace ``state.model``."""

    def state_dict(self) -> Dict[str, Any]:
        """State saved in every training checkpoint (tensors and JSON-able values) so a run can resume."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned, when fit resumes from a checkpoint."""
