"""Structured helpers shared by the iterative and soft schedules: trace inputs, calibration batches, and a Plan
that leaves each channel group at an exact width measured against its *original* width.

Counting against the original width (not the current one) keeps repeated rounds exact: a group of 64 channels
at target 0.5 ends with 32, whether it got there in one round or five.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..apply.verify import verify_plan
from ..data import calibration_batches
from ..errors import ConfigError
from ..graph import DependencyGraph, build_graph, within
from ..importance import score_groups
from ..plan import GroupPlan, Plan, select
from ..train.callbacks import TrainState

MAX_GROUP_RATIO = 0.9  # global scope never empties a group below a tenth of its original width


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


def plan_to_ratio(model: nn.Module, example: torch.Tensor, ratio: float, criterion: str, scope: str,
                  original: Optional[Dict[str, int]] = None, ctx: Optional[Dict[str, Any]] = None,
                  ignore: Sequence[str] = (), settings: Optional[Dict[str, Any]] = None,
                  overrides: Optional[Dict[str, float]] = None) -> Tuple[Plan, DependencyGraph]:
    """A Plan leaving every scored group at ``keep = size0 - floor(ratio * size0)`` channels (scope "layer"), or
    removing ``ratio`` of all original channels with one threshold on mean-normalized scores (scope "global").

    ``original`` maps group key -> width before any pruning (default: the current widths); ``overrides`` maps a
    module-name prefix to the ratio of the groups produced there (longest prefix wins, as in ``make_plan``).
    """
    graph = build_graph(model, (example,), ignore=list(ignore))
    scores = score_groups(graph, model, criterion, ctx=ctx or {})
    original = dict(original or group_sizes(graph))
    prunable = [g for g in graph.groups if g.key in scores]
    if scope == "global":
        remove_counts = _global_counts(prunable, scores, original, ratio)
    else:
        remove_counts = {g.key: g.size - _keep(original.get(g.key, g.size), _ratio_of(g.module, ratio, overrides))
                         for g in prunable}
    groups: List[GroupPlan] = []
    for g in prunable:
        n_remove = remove_counts.get(g.key, 0)
        if n_remove <= 0:
            continue
        remove = select(g, scores[g.key], n_remove / g.size, None, 1, False)
        if remove:
            groups.append(GroupPlan(g.key, g.module, g.size, remove))
    plan = Plan(groups, [list(example.shape)], ignore=list(ignore),
                settings={"ratio": ratio, "criterion": criterion, "scope": scope, "overrides": dict(overrides or {}),
                          **(settings or {})})
    verify_plan(model, plan, graph, (example,))  # the same dry run as every one-shot plan
    return plan, graph


def _ratio_of(module: str, ratio: float, overrides: Optional[Dict[str, float]]) -> float:
    best, value = "", ratio
    for prefix, r in (overrides or {}).items():
        if within(module, prefix) and len(prefix) >= len(best):
            best, value = prefix, r
    return value


def _keep(size0: int, ratio: float) -> int:
    return max(1, size0 - int(math.floor(ratio * size0 + 1e-9)))


def _global_counts(groups: Sequence[Any], scores: Dict[str, torch.Tensor], original: Dict[str, int],
                   ratio: float) -> Dict[str, int]:
    """Per-group removal counts: the lowest normalized scores overall, each group kept above its floor."""
    total0 = sum(original.get(g.key, g.size) for g in groups)
    total_now = sum(g.size for g in groups)
    budget = total_now - (total0 - int(math.floor(ratio * total0 + 1e-9)))
    floors = {g.key: _keep(original.get(g.key, g.size), MAX_GROUP_RATIO) for g in groups}
    entries = sorted(((float(s), g.key, i) for g in groups for i, s in enumerate(scores[g.key].tolist())),
                     key=lambda e: (e[0], e[1], e[2]))
    counts = {g.key: 0 for g in groups}
    size = {g.key: g.size for g in groups}
    for _, key, _ in entries:
        if budget <= 0:
            break
        if size[key] - counts[key] > floors[key]:
            counts[key] += 1
            budget -= 1
    return counts


def channel_count(graph: DependencyGraph) -> int:
    """Total number of channels over all groups of ``graph``."""
    return sum(g.size for g in graph.groups)
