"""The one one-shot structured path: decide (``make_plan``), check (the meta-device dry run), remove.

The CLI's prune job, the criteria comparison, attention, the searches and the front door all come here, so a plan
is checked the same way whoever asks for it; the schedules, which plan each round against the original widths
(``schedules/channels.py``), run the same ``verify_plan`` on their plans.

    model, plan = prune_structured(model, x, ratio=0.5, criterion="l2")
    plan, graph = checked_plan(model, x, ratio=0.5)          # decide + check, apply later (apply_plan)
"""
from __future__ import annotations

import copy
from typing import Any, Tuple

import torch
from torch import nn

from ..graph import DependencyGraph
from ..plan import Plan, make_plan
from .structured import apply_plan
from .verify import verify_plan


def checked_plan(model: nn.Module, example_inputs: Any, verify: bool = True, **make_plan_kwargs: Any
                 ) -> Tuple[Plan, DependencyGraph]:
    """``make_plan`` then, unless ``verify`` is False, :func:`verify_plan`; returns ``(plan, graph)``."""
    plan, graph = make_plan(model, example_inputs, return_graph=True, **make_plan_kwargs)
    if verify:
        inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        verify_plan(model, plan, graph, inputs)
    return plan, graph


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
    """Plan, dry-run and apply in one call; returns (model, plan). Options are those of ``make_plan`` and
    ``verify`` (default True)."""
    plan, graph = checked_plan(model, example_inputs, ratio=ratio, criterion=criterion, **options)
    apply_plan(model, plan, graph=graph)
    return model, plan
