"""The plan's numeric check: where removal is exact, the pruned model must compute what the masked original does.

Removing a channel whose every coupled slice is zero changes nothing, except where a normalisation reads the
channels together (LayerNorm/RMSNorm/GroupNorm over them: ``Group.normalized``) or depth is removed. So for the
other groups (MLP neurons, attention heads or head dims, BatchNorm channels) the pruned model and a copy of the
original with the planned slices zeroed must agree on the example input. When they do not, the model has a
dimension the graph did not see (a head size computed in forward, a hard-coded width): the group is retried with
whole heads where it has them (a head size that sets the attention scale), else left whole, and ``plan.skipped``
says why, so no pruned model differs silently from what was asked.

    check_exact(model, plan, graph, (x,))   # edits plan in place
"""
from __future__ import annotations

import copy
from typing import Any, List, Optional, Sequence

import torch
from torch import nn

from ..graph import DependencyGraph
from ..graph.trace import flatten_outputs
from ..plan import GroupPlan, Plan, select
from .structured import apply_plan, zero_channels

# Relative tolerance per dtype: summation order changes when zero terms leave a product.
_RTOL = {torch.float64: 1e-9, torch.float32: 1e-3, torch.bfloat16: 5e-2, torch.float16: 1e-2}


def _outputs(model: nn.Module, inputs: Sequence[Any]) -> List[torch.Tensor]:
    with torch.no_grad():
        return [t for t in flatten_outputs(model(*inputs)) if t.is_floating_point()]


def _difference(model: nn.Module, plan: Plan, graph: DependencyGraph, inputs: Sequence[Any],
                strict: bool = False) -> Optional[float]:
    """Max |pruned - masked original| over the outputs, relative to the outputs' scale; None when within tolerance."""
    masked = zero_channels(copy.deepcopy(model), plan, graph)
    try:
        pruned = _outputs(apply_plan(copy.deepcopy(model), plan, graph=graph), inputs)
    except Exception:  # noqa: BLE001  a part of a plan that ran whole (a width tied to a normalised group): no verdict,
        return float("inf") if strict else None  # but a change the check proposes itself must run
    worst = 0.0
    for a, b in zip(pruned, _outputs(masked, inputs)):
        if a.shape != b.shape:
            return float("inf")
        scale = float(b.abs().max()) if b.numel() else 0.0
        diff = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
        if diff > _RTOL.get(b.dtype, 1e-3) * max(scale, 1e-6):
            worst = max(worst, diff / max(scale, 1e-6))
    return worst or None


def _only(plan: Plan, groups: List[GroupPlan]) -> Plan:
    trial = copy.copy(plan)
    trial.groups, trial.blocks = list(groups), []
    return trial


def check_exact(model: nn.Module, plan: Plan, graph: DependencyGraph, inputs: Sequence[Any]) -> None:
    """Compare the pruned model with the masked original on ``inputs`` for the plan's exact groups; a group that
    disagrees is retried with whole heads (if it has them), else left whole and recorded in ``plan.skipped``."""
    exact = [gp for gp in plan.groups if not graph.group(gp.key).normalized]
    if not exact:
        return
    was = model.training
    model.eval()
    try:
        if _difference(model, _only(plan, exact), graph, inputs) is None:
            return  # the usual case: one pair of forwards
        dims = [gp for gp in exact if graph.group(gp.key).heads and not _whole_heads(graph, gp)]
        rest = [gp for gp in exact if not any(gp is d for d in dims)]
        bad = _disagreeing(model, plan, graph, inputs, rest)
        whole = {gp.key: _as_whole_heads(graph, gp) for gp in dims}
        good = [gp for gp in rest if not any(gp is b for b in bad)]
        if dims and _difference(model, _only(plan, good + list(whole.values())), graph, inputs, strict=True) is None:
            for gp in dims:  # head dims set the attention scale here (computed from the head size in forward)
                gp.remove = whole[gp.key].remove
                plan.settings.setdefault("whole_heads", []).append(gp.module)
            dims = []
        for gp in bad + _disagreeing(model, plan, graph, inputs, dims):
            _retry_or_skip(model, plan, graph, inputs, gp)
        plan.groups = [gp for gp in plan.groups if gp.remove]
    finally:
        model.train(was)


def _whole_heads(graph: DependencyGraph, gp: GroupPlan) -> bool:
    """True when the plan removes whole heads of this group (every head all kept or all removed)."""
    gone = set(gp.remove)
    heads = graph.group(gp.key).heads or []
    return all(len(gone & set(h)) in (0, len(h)) for h in heads)


def _as_whole_heads(graph: DependencyGraph, gp: GroupPlan) -> GroupPlan:
    """The same share of the group removed as whole heads, those that lost the most channels first."""
    g = graph.group(gp.key)
    kept = torch.ones(g.size)
    kept[gp.remove] = 0.0
    return GroupPlan(gp.key, gp.module, gp.size, select(g, kept, len(gp.remove) / g.size, None, 1, True))


def _disagreeing(model: nn.Module, plan: Plan, graph: DependencyGraph, inputs: Sequence[Any],
                 groups: List[GroupPlan]) -> List[GroupPlan]:
    """The groups whose removal changes the output, found by halving (one forward pair when all agree)."""
    if _difference(model, _only(plan, groups), graph, inputs) is None:
        return []
    if len(groups) == 1:
        return list(groups)
    mid = len(groups) // 2
    return (_disagreeing(model, plan, graph, inputs, groups[:mid])
            + _disagreeing(model, plan, graph, inputs, groups[mid:]))


def _retry_or_skip(model: nn.Module, plan: Plan, graph: DependencyGraph, inputs: Sequence[Any],
                   gp: GroupPlan) -> None:
    if graph.group(gp.key).heads and not _whole_heads(graph, gp):
        whole = _as_whole_heads(graph, gp)
        if whole.remove and _difference(model, _only(plan, [whole]), graph, inputs, strict=True) is None:
            gp.remove = whole.remove
            plan.settings.setdefault("whole_heads", []).append(gp.module)
            return
    diff = _difference(model, _only(plan, [gp]), graph, inputs)
    plan.groups = [x for x in plan.groups if x.key != gp.key]
    plan.skipped[gp.key] = (f"left whole: removing these channels changes the output by {diff or float('nan'):.2g} (relative) "
                            "beyond zeroing them (a width the forward computes itself)")
