"""How many channels each layer loses: a uniform ratio, a MACs/params target, a latency-measured split, or the
most a sensitivity scan allows within an accuracy budget. Each allocator is registered in ``ALLOCATORS`` and
returns an :class:`Allocation` (``make_plan`` arguments + a record).

    found = plan_for_target(model, x, Target.of(reduce="macs=2x"), criterion="fpgm")   # the checked plan
    alloc = allocate("reduce", AllocationRequest(model, x, reduce=parse_reduce("macs=2x")))  # one allocator alone
"""
from . import allocators  # noqa: F401  (registers ratio, reduce, depth, latency, latency_target, fastest, budget)
from .base import ALLOCATORS, Allocation, AllocationRequest, allocate
from .budget import BudgetChoice, budget_search, ladder
from .depth import DepthSearch, search_depth
from .fastest import FastestSplit, fastest_at
from .latency_target import LatencyTarget, latency_target
from .reduce import parse_reduce, ratio_for_target, search_ratio
from .round_to import resolve_round_to
from .sensitivity import Sensitivity, layer_sensitivity
from .target import Target, TargetPlan, plan_for_target

__all__ = ["ALLOCATORS", "Allocation", "AllocationRequest", "BudgetChoice", "DepthSearch", "FastestSplit", "LatencyTarget",
           "Sensitivity", "allocate", "budget_search", "fastest_at", "ladder", "latency_target", "layer_sensitivity",
           "parse_reduce", "plan_for_target", "ratio_for_target", "resolve_round_to", "search_depth", "search_ratio",
           "Target", "TargetPlan"]
