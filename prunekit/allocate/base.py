"""What every allocator takes and returns, and the registry that names them.

An allocator answers one question: how many channels does each layer lose? It returns ``make_plan`` arguments
(a ratio, plus per-layer overrides) and a record of how it decided, so the prune job does one lookup whatever
the user asked for (a ratio, a MACs/params target, a latency-measured split, an accuracy budget).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

from torch import nn

from ..graph import DependencyGraph
from ..plan import Plan
from ..registry import Registry


@dataclass
class AllocationRequest:
    """The model, an example input and what the user asked for.

    ``plan_kwargs``: make_plan options every candidate shares (scope, data, round_to as an int, ignore);
    ``options``: what one allocator alone needs (e.g. ``runtime`` for latency, ``scan`` for the budget).
    """

    model: nn.Module
    example: Any
    criterion: str = "l2"
    ratio: float = 0.5
    reduce: Optional[Dict[str, float]] = None
    plan_kwargs: Dict[str, Any] = field(default_factory=dict)
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Allocation:
    """``make_plan`` arguments (``ratio`` and maybe ``overrides``) and what to record of the decision; ``plan`` and
    ``graph`` when the allocator already planned with them (a search's best trial, not yet verified)."""

    plan_kwargs: Dict[str, Any]
    record: Dict[str, Any] = field(default_factory=dict)
    plan: Optional[Plan] = None
    graph: Optional[DependencyGraph] = None


Allocator = Callable[[AllocationRequest], Allocation]
ALLOCATORS: Registry[Allocator] = Registry("allocation")


def allocate(kind: str, request: AllocationRequest) -> Allocation:
    """The per-layer counts of allocator ``kind`` (one of ``ALLOCATORS.names()``) for ``request``."""
    return ALLOCATORS.get(kind)(request)
