"""Structured helpers shared by the iterative and soft schedules: trace inputs, calibration batches and the
widths bookkeeping (each round plans with ``make_plan`` against the *original* widths, ``original=``, so a group
of 64 channels at target 0.5 ends with 32 whether it got there in one round or five).
"""
from __future__ import annotations

import itertools
from typing import Any, Dict, Iterator, List, Optional

import torch

from ..data import calibration_batches
from ..errors import ConfigError
from ..graph import DependencyGraph
from ..train.callbacks import TrainState


def input_shape(state: TrainState, input_size: Optional[int], known: Optional[List[int]]) -> List[int]:
    """[C, H, W] of one input: remembered, from ``input_size``, or from the training data the loop holds."""
    if known:
        return list(known)
    loader = state.loader
    images = getattr(getattr(loader, "ds", None), "images", None)
    if input_size is not None:
        channels = int(images.shape[1]) if isinstance(images, torch.Tensor) else 3
        return [channels, input_size, input_size]
    if isinstance(images, torch.Tensor):
        return [int(s) for s in images.shape[1:]]
    if loader is not None:
        x, _ = next(iter(loader))
        return [int(s) for s in x.shape[1:]]
    raise ConfigError("a structured schedule that prunes before the first epoch needs the input size to trace "
                      "the model; pass input_size=<pixels> (e.g. the --image-size of the data)")


class CalibrationBatches:
    """``n`` unaugmented training batches with the classes taking turns (``prunekit.data.calibration_batches``), the
    same on every DDP rank (so every rank scores alike and picks the same channels), re-iterable, for data-driven
    criteria (``ctx["data"]``)."""

    def __init__(self, loader: Any, n: int) -> None:
        self.loader, self.n = loader, n

    def __iter__(self) -> Iterator[Any]:
        ds = getattr(self.loader, "ds", None)
        if ds is None:  # not a prunekit loader: take its own first batches
            return itertools.islice(iter(self.loader), self.n)
        return iter(calibration_batches(ds, self.n, self.loader.batch_size, device=self.loader.device,
                                        split=getattr(self.loader, "split", "train")))


def calibration(state: TrainState, n: int) -> Optional[CalibrationBatches]:
    """Calibration batches for ``ctx["data"]``, or None before the loop has data (data-driven criteria then say
    they need data)."""
    return CalibrationBatches(state.loader, n) if state.loader is not None and n > 0 else None


def group_sizes(graph: DependencyGraph) -> Dict[str, int]:
    """Channel count of every group, by group key (the widths before a schedule prunes)."""
    return {g.key: g.size for g in graph.groups}


def channel_count(graph: DependencyGraph) -> int:
    """Total number of channels over all groups of ``graph``."""
    return sum(g.size for g in graph.groups)
