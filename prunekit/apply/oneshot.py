"""The one one-shot structured path: decide (``make_plan``), check (the meta-device dry run), remove.

The CLI's prune job, the criteria comparison, attention, the searches, the schedules (each round planned against
the original widths, ``make_plan(original=...)``) and the front door all come here, so a plan is checked the same
way whoever asks for it.

    model, plan = prune_structured(model, x, ratio=0.5, criterion="l2")
    plan, graph = checked_plan(model, x, ratio=0.5)          # decide + check, apply later (apply_plan)
"""
from __future__ import annotations

import copy
import warnings
from typing import Any, Tuple

import torch
from torch import nn

from ..errors import NothingPrunedError, PruningWarning
from ..graph import DependencyGraph, Group
from ..plan import Plan, make_plan
from .structured import apply_plan
from .exact import check_exact
from .verify import verify_plan


def checked_plan(model: nn.Module, example_inputs: Any, verify: bool = True, exact: bool = False,
                 **make_plan_kwargs: Any) -> Tuple[Plan, DependencyGraph]:
    """``make_plan`` then, unless ``verify`` is False, :func:`verify_plan` (the forward runs) and, with ``exact``,
    :func:`check_exact` (where removal is exact, the pruned model equals the masked original); returns
    ``(plan, graph)``."""
    plan, graph = make_plan(model, example_inputs, return_graph=True, **make_plan_kwargs)
    if verify:
        check_plan(model, example_inputs, plan, graph, exact)
    return plan, graph


def check_plan(model: nn.Module, example_inputs: Any, plan: Plan, graph: DependencyGraph, exact: bool = False) -> None:
    """:func:`verify_plan` (the forward runs; groups that break it are left whole, in ``plan.skipped``) and, with
    ``exact``, :func:`check_exact`: what a plan made elsewhere (a search's best trial) needs before it is applied."""
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    verify_plan(model, plan, graph, inputs)
    if exact:
        check_exact(model, plan, graph, inputs)


def pruned_copy(model: nn.Module, example_inputs: Any, graph: DependencyGraph, **make_plan_kwargs: Any) -> nn.Module:
    """A pruned deep copy of ``model`` (planned with ``make_plan_kwargs`` on its traced ``graph``), the model left
    whole: what searches that compare many candidate plans of one model need."""
    plan, _ = checked_plan(model, example_inputs, graph=graph, **make_plan_kwargs)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        apply_plan(twin, plan, graph=graph)
    return twin


def prune_structured(model: nn.Module, example_inputs: Any, ratio: float = 0.5, criterion: str = "l2",
                     **options: Any) -> Tuple[nn.Module, Plan]:
    """Plan, dry-run, check and apply in one call; returns (model, plan). Options are those of ``make_plan``,
    ``verify`` (default True) and ``exact`` (default True: the numeric check of :func:`check_exact`)."""
    options.setdefault("exact", True)
    plan, graph = checked_plan(model, example_inputs, ratio=ratio, criterion=criterion, **options)
    return remove_planned(model, plan, graph), plan


def remove_planned(model: nn.Module, plan: Plan, graph: DependencyGraph) -> nn.Module:
    """Apply a checked plan in place after :func:`report_shortfall` said what it could not do (channels were asked
    for when its ratio or overrides ask for any)."""
    asked = plan.settings.get("ratio", 0) > 0 or bool(plan.settings.get("overrides"))
    report_shortfall(model, plan, graph, asked=asked)
    return apply_plan(model, plan, graph=graph)


def group_params(model: nn.Module, group: Group) -> int:
    """Parameter entries in the slices of ``group`` (what removing all of its channels would take away)."""
    total = 0
    for m in group.members:
        t = getattr(model.get_submodule(m.module), m.attr, None) if m.kind in ("param", "grouped_in") else None
        if isinstance(t, torch.Tensor) and t.dim():
            per_index = t.numel() // (t.shape[m.dim] if m.kind == "param" else t.shape[m.dim] * m.index.shape[0])
            total += int((m.index >= 0).sum()) * per_index
    return total


def report_shortfall(model: nn.Module, plan: Plan, graph: DependencyGraph, asked: bool) -> None:
    """Say what the plan could not do: a NothingPrunedError when channels were asked for and none can go, a
    PruningWarning naming the groups left whole (and the parameters they hold) or the heads removed whole."""
    left = {key: group_params(model, graph.group(key)) for key in plan.skipped if _has_group(graph, key)}
    for key, n in left.items():
        plan.skipped[key] = f"{plan.skipped[key]} [{n:,} parameters]"
    whole = plan.settings.get("whole_heads", [])
    if asked and not plan.groups and not plan.blocks:
        prunable = [g for g in graph.groups if g.prunable]
        why = (f"{len(left)} group(s) holding {sum(left.values()):,} parameters were left whole, e.g. "
               f"{next(iter(plan.skipped.items()))[0]}: {next(iter(plan.skipped.values()))}" if plan.skipped else
               "the dependency graph has no prunable group (every channel reaches a model output or an op that "
               "pins it)" if not prunable else "the ratio is too small to remove one channel of any group")
        raise NothingPrunedError(f"structured pruning removed nothing: {why}; print(prunekit.graph.build_graph(model, "
                                 "x)) lists the groups; pass ignore=[...] for a module the trace cannot follow")
    if left:
        first = next(iter(left))
        warnings.warn(f"{len(left)} group(s) holding {sum(left.values()):,} parameters were left whole "
                      f"(first: {first}: {plan.skipped[first]}); the rest was pruned", PruningWarning, stacklevel=3)
    if whole:
        warnings.warn(f"attention heads of {len(whole)} module(s) (first: {whole[0]}) were removed as whole heads: "
                      "shrinking their head size would change the attention (its scale comes from the head size "
                      "in forward)", PruningWarning, stacklevel=3)


def _has_group(graph: DependencyGraph, key: str) -> bool:
    return any(g.key == key for g in graph.groups)
