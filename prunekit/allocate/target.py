"""What the user asks for -> the plan that does it: the one route every caller takes (the front door, the prune
job, compare, attention, the schedules' ``reduce``).

    target = Target.of(reduce="macs=2x")                    # or Target.of(ratio=0.3), Target.of(reduce="params=0.4")
    found = plan_for_target(model, x, target, criterion="fpgm", scope="uniform", round_to=8)
    remove_planned(model, found.plan, found.graph)          # prunekit.apply.oneshot

The registered allocator of the target decides how many channels each layer loses; a search hands back the plan it
found (traced and scored once), which is verified here, never planned again; other allocators' ``make_plan``
arguments are planned here, once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Union

from torch import nn

from ..apply.oneshot import check_plan, checked_plan
from ..errors import ConfigError
from ..graph import DependencyGraph
from ..plan import Plan
from .base import AllocationRequest, allocate
from .reduce import MEASURED, parse_reduce

DEFAULT_RATIO = 0.5
# how a MACs / params target is split between layers (and blocks); "budget" reads a sensitivity scan instead
ALLOCATIONS = ("uniform", "latency", "fastest", "depth", "budget")


@dataclass(frozen=True)
class Target:
    """A channel ratio (``ratio``, plus per-module ``overrides``), or a reduction ``reduce`` ({"macs": 0.5},
    {"params": 0.4}, {"latency": 0.5}) split between layers by ``allocation``; or ``allocation="budget"`` (the most
    an accuracy budget allows, its scan in ``plan_for_target``'s ``options``)."""

    ratio: Optional[float] = None
    reduce: Optional[Dict[str, float]] = None
    allocation: str = "uniform"
    overrides: Dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, ratio: Optional[float] = None, reduce: Union[None, str, Dict[str, float]] = None,
           allocation: str = "uniform", overrides: Optional[Dict[str, float]] = None) -> "Target":
        """The target the user typed, checked: ratio or reduce (``"macs=2x"``, ``"params=40%"``, ``"latency=2x"``
        or a dict), not both; no ratio and no reduce means ratio 0.5."""
        if ratio is not None and reduce is not None:
            raise ConfigError("give ratio or reduce, not both (reduce finds the ratio that reaches the target)")
        if allocation not in ALLOCATIONS:
            raise ConfigError(f"allocation={allocation!r}: use one of {', '.join(map(repr, ALLOCATIONS))}")
        if allocation not in ("uniform", "budget") and reduce is None:
            raise ConfigError(f"allocation={allocation!r} splits a target: give reduce, e.g. 'macs=2x'")
        parsed = parse_reduce(reduce, measured=True) if isinstance(reduce, str) else reduce
        return cls(ratio=DEFAULT_RATIO if ratio is None and parsed is None else ratio, reduce=parsed,
                   allocation=allocation, overrides=dict(overrides or {}))

    @property
    def kind(self) -> str:
        """The registered allocator (``prunekit.allocate.ALLOCATORS``) that reaches this target."""
        if self.allocation == "budget":
            return "budget"
        if self.reduce is None:
            return "ratio"
        if MEASURED in self.reduce:
            return "latency_target"
        return "reduce" if self.allocation == "uniform" else self.allocation


@dataclass
class TargetPlan:
    """The checked plan (apply it with ``remove_planned`` or ``apply_plan``), the graph it was made on (this very
    model's), the ``make_plan`` arguments that reproduce it and the allocator's record of how it decided."""

    plan: Plan
    graph: DependencyGraph
    plan_kwargs: Dict[str, Any]
    record: Dict[str, Any]


def plan_for_target(model: nn.Module, example_inputs: Any, target: Target, criterion: str = "l2", *,
                    options: Optional[Dict[str, Any]] = None, exact: bool = False,
                    **plan_kwargs: Any) -> TargetPlan:
    """The plan that reaches ``target`` on ``model``, checked (the meta-device dry run; ``exact``: the numeric check).

    ``plan_kwargs``: ``make_plan`` options every candidate shares (scope, data, round_to as an int, ignore, seed,
    depth, ...); ``options``: what one allocator alone needs (``runtime``, ``cache``, ``batch``, ``latency_fn``,
    ``depth_criterion``; the budget's scan).
    """
    if target.overrides:
        plan_kwargs = {**plan_kwargs, "overrides": {**plan_kwargs.get("overrides", {}), **target.overrides}}
    request = AllocationRequest(model, example_inputs, criterion=criterion,
                                ratio=DEFAULT_RATIO if target.ratio is None else target.ratio, reduce=target.reduce,
                                plan_kwargs=plan_kwargs, options=dict(options or {}))
    alloc = allocate(target.kind, request)
    kwargs = {**plan_kwargs, **alloc.plan_kwargs}
    if plan_kwargs.get("overrides"):  # the caller's own overrides win, as the searches count them
        kwargs["overrides"] = {**alloc.plan_kwargs.get("overrides", {}), **plan_kwargs["overrides"]}
    if alloc.plan is not None and alloc.graph is not None:  # the search's own plan: checked, not planned again
        check_plan(model, example_inputs, alloc.plan, alloc.graph, exact)
        return TargetPlan(alloc.plan, alloc.graph, kwargs, alloc.record)
    plan, graph = checked_plan(model, example_inputs, criterion=criterion, exact=exact, **kwargs)
    return TargetPlan(plan, graph, kwargs, alloc.record)
