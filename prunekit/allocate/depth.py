"""A MACs or params target reached by depth alone: the fewest whole blocks (lowest-scored first) that get there.

    found = search_depth(model, x, {"macs": 0.3}, depth_criterion="contribution", data=batches)
    model, plan = prune_structured(model, x, **found.plan_kwargs())

Blocks are scored once; each trial replaces the first n of them by identity on a meta-device twin (shapes only)
and counts it. A block is a coarse step, so the result is the first n that reaches the target (at least the asked
reduction), not the nearest.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from ..apply.structured import apply_plan
from ..errors import ConfigError
from ..graph import build_graph
from ..measure import InputSpec
from ..plan import make_plan, plan_inputs
from .reduce import _trial_size, check_reduce, model_size


@dataclass
class DepthSearch:
    """How many blocks reach the target, by which criterion, and the reduction each trial count gave."""

    blocks: int
    criterion: str
    achieved: float
    trials: List[Tuple[int, float]] = field(default_factory=list)

    def plan_kwargs(self) -> Dict[str, Any]:
        return {"ratio": 0.0, "depth_blocks": self.blocks, "depth_criterion": self.criterion}


def search_depth(model: nn.Module, example_inputs: Any, reduce: Dict[str, float], depth_criterion: str = "magnitude",
                 **make_plan_kwargs: Any) -> DepthSearch:
    """The smallest number of blocks whose removal reaches ``reduce`` (``{"macs": 0.3}`` or ``{"params": ...}``)."""
    metric, target = check_reduce(reduce)
    inputs = plan_inputs(example_inputs)
    shape = InputSpec.from_example(inputs)  # what the model takes (token ids stay ints), per sample
    kwargs = {k: v for k, v in make_plan_kwargs.items() if k not in ("ratio", "depth", "depth_blocks")}
    graph = build_graph(model, inputs, ignore=list(kwargs.get("ignore", ())))
    if not graph.residual_blocks:
        raise ConfigError(f"depth alone cannot reach {metric}={target:g}: this model has "
                          f"{len(graph.residual_blocks)} removable (identity-residual) blocks")
    plan = make_plan(model, inputs, ratio=0.0, depth_criterion=depth_criterion, graph=graph,
                     depth_blocks=len(graph.residual_blocks), **kwargs)
    scores = plan.settings["depth_scores"]
    order = sorted(scores, key=lambda c: (scores[c], c))
    base = model_size(model, metric, shape)
    trials: List[Tuple[int, float]] = []
    for n in range(1, len(order) + 1):
        plan.blocks = sorted(order[:n])
        size = _trial_size(model, plan, graph, metric, shape)
        if size is None:  # the meta twin cannot run this model: count a real copy
            twin = copy.deepcopy(model)
            with torch.no_grad():
                apply_plan(twin, plan, graph=graph)
            size = model_size(twin, metric, shape)
        red = 1.0 - size / base
        trials.append((n, round(red, 6)))
        if red >= target - 1e-9:
            return DepthSearch(n, depth_criterion, red, trials)
    best = trials[-1][1] if trials else 0.0
    raise ConfigError(f"depth alone cannot remove {metric}={target:g}: all {len(order)} removable blocks remove "
                      f"{best:.3f}; lower the target or add channel pruning (--reduce without "
                      f"--allocation depth, plus --depth)")

