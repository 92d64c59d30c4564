"""Budget-aware attention training: the gate penalty falls only on as many channels per layer as the plan removes.

    counts = budget_counts(model, inputs, ratio=0.67)     # {layer: channels to push toward 0}, before insertion
    train_attention(model, data, sparsity=1e-2, budget=counts)

A uniform L1 penalty on every gate pushes whole layers down (docs/criteria.md: penalty 1e-2 silences layers); the
plan, though, removes a known number of channels per layer. With a budget, each training batch penalizes only
that many channels of each layer, the ones whose batch-mean gate is lowest, so the attention learns which set of
channels the frozen network can lose *together* (a channel whose loss hurts resists the push and another takes
its place) while the other gates are free to compensate (up to 2x, folded into the BN afterwards). The counts come
from a dry plan on the plain model: under uniform scope they do not depend on the criterion.
"""
from __future__ import annotations

from typing import Any, Dict

from torch import nn

from ..errors import ConfigError
from ..plan import make_plan


def budget_counts(model: nn.Module, inputs: Any, **plan_options: Any) -> Dict[str, int]:
    """Layer name -> how many of its output channels the plan ``make_plan(model, inputs, **plan_options)`` removes
    (every layer whose weight rows are a group's channels: convs, BNs, Linears; attention hosts are among them).

    A layer that holds only part of a group (a concat's input) gets the group's removed fraction of its own
    channels. Call it on the plain model, before attention is inserted."""
    if plan_options.get("scope", "uniform") != "uniform":
        raise ConfigError("the attention budget needs uniform scope (per-layer counts known before training); "
                          "drop the budget or the global scope")
    plan, graph = make_plan(model, inputs, criterion="l2", return_graph=True, **plan_options)
    counts: Dict[str, int] = {}
    for gp in plan.groups:
        for m in graph.group(gp.key).members:
            if m.kind == "param" and m.attr == "weight" and m.dim == 0:
                own = int((m.index >= 0).sum())
                counts[m.module] = max(counts.get(m.module, 0), round(len(gp.remove) * own / gp.size))
    return counts
