"""Targets users think in: "remove 40% of the parameters" or "halve the MACs", turned into a channel ratio.

    reduce = parse_reduce("params=0.4")                     # {"params": 0.4}; also "macs=50%", "macs=2x"
    ratio = ratio_for_target(model, x, reduce, criterion="l2")
    plan = make_plan(model, x, ratio=ratio, criterion="l2")

The ratio is found by bisection on ``make_plan``'s ratio: each trial plans, applies the plan to a copy and counts
parameters (``prunekit.measure.count_params``) or MACs (``count_macs``). Reductions grow with the ratio, so the
search converges; channel counts are integers, so the result is the closest reachable point (within ``tol``).
With ``scope="uniform"`` the removed counts do not depend on the scores, so trials use the cheap ``l2`` scores
whatever the criterion; with ``scope="global"`` they use the real criterion (data-driven ones re-run the data).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from .errors import ConfigError

METRICS = ("params", "macs")


def parse_reduce(text: str) -> Dict[str, float]:
    """``"params=0.4"`` -> {"params": 0.4}. Values: a fraction (0.4), a percentage (40%) or a factor (2x = 0.5)."""
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"--reduce {text!r} is not METRIC=AMOUNT; use e.g. params=0.4, macs=50% or macs=2x")
    key, _, raw = text.partition("=")
    key, raw = key.strip().lower(), raw.strip().lower()
    if key not in METRICS:
        raise ConfigError(f"--reduce metric {key!r} is unknown; use one of {', '.join(METRICS)} (e.g. params=0.4)")
    number = raw[:-1] if raw.endswith(("%", "x")) else raw
    try:
        amount = float(number)
    except ValueError:
        raise ConfigError(f"--reduce amount {raw!r} is not a number; use e.g. {key}=0.4, {key}=40% or {key}=2x") \
            from None
    if raw.endswith("x") and not amount > 1.0:
        raise ConfigError(f"--reduce {text!r}: a factor must be > 1 (2x halves the {key})")
    value = amount / 100.0 if raw.endswith("%") else 1.0 - 1.0 / amount if raw.endswith("x") else amount
    if not 0.0 < value < 1.0:
        raise ConfigError(f"--reduce {text!r} asks to remove {value:.0%} of the {key}; use a fraction in (0, 1)")
    return {key: value}


@dataclass
class TargetSearch:
    """The chosen ratio (plus per-layer overrides when one ratio cannot land within ``tol``), what it achieves,
    and every trial (ratio, reduction) for the record."""

    ratio: float
    metric: str
    target: float
    achieved: float
    overrides: Dict[str, float] = field(default_factory=dict)
    trials: List[Tuple[float, float]] = field(default_factory=list)

    def plan_kwargs(self) -> Dict[str, Any]:
        """``make_plan`` arguments that reproduce ``achieved``: ratio and, if needed, overrides."""
        return {"ratio": self.ratio, "overrides": dict(self.overrides)} if self.overrides else {"ratio": self.ratio}


def _check_reduce(reduce: Dict[str, float]) -> Tuple[str, float]:
    if not isinstance(reduce, dict) or len(reduce) != 1:
        raise ConfigError(f"reduce={reduce!r} must name exactly one metric, e.g. {{'params': 0.4}}")
    (metric, value), = reduce.items()
    if metric not in METRICS:
        raise ConfigError(f"reduce metric {metric!r} is unknown; use one of {', '.join(METRICS)}")
    if not 0.0 < float(value) < 1.0:
        raise ConfigError(f"reduce {metric}={value} must be a fraction in (0, 1), e.g. 0.4")
    return metric, float(value)


def _size(model: nn.Module, metric: str, input_shape: Tuple[int, ...]) -> int:
    from .measure import count_macs, count_params

    return count_params(model) if metric == "params" else count_macs(model, input_shape)[0]


def search_ratio(model: nn.Module, example_inputs: Any, reduce: Dict[str, float], criterion: str = "l2",
                 tol: float = 0.01, max_ratio: float = 0.95, max_trials: int = 24, refine: bool = True,
                 **make_plan_kwargs: Any) -> TargetSearch:
    """Bisection on the channel ratio until the reduction is within ``tol`` of the target (see module doc)."""
    from .apply.structured import apply_plan
    from .plan import make_plan

    metric, target = _check_reduce(reduce)
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    shape = tuple(inputs[0].shape[1:])
    scope = make_plan_kwargs.get("scope", "uniform")
    trial_criterion = criterion if scope == "global" else "l2"
    base = _size(model, metric, shape)
    trials: List[Tuple[float, float]] = []
    traced: List[Any] = []  # the model's dependency graph, traced on the first trial and reused by the others

    def reduction_with(r: float, overrides: Dict[str, float]) -> float:
        kwargs = dict(make_plan_kwargs)
        kwargs["overrides"] = {**overrides, **(kwargs.get("overrides") or {})}  # the user's own win
        plan, graph = make_plan(model, inputs, ratio=r, criterion=trial_criterion, return_graph=True,
                                graph=traced[0] if traced else None, **kwargs)
        traced[:] = [graph]
        twin = copy.deepcopy(model)
        with torch.no_grad():
            apply_plan(twin, plan, graph=graph)
        red = 1.0 - _size(twin, metric, shape) / base
        trials.append((round(r, 6), red))
        return red

    def reduction(r: float) -> float:
        return 0.0 if r <= 0 else reduction_with(r, {})

    lo, hi = 0.0, float(max_ratio)
    red_lo, red_hi = 0.0, reduction(hi)
    if red_hi < target - tol:
        raise ConfigError(f"cannot remove {target:.0%} of the {metric}: even ratio {hi} removes only {red_hi:.1%} "
                          "(frozen or ignored layers keep the rest); ask for less")
    best = (abs(red_hi - target), hi, red_hi)
    for _ in range(max_trials):
        if best[0] <= tol / 4 or hi - lo < 1e-3:
            break
        mid = (lo + hi) / 2
        red = reduction(mid)
        best = min(best, (abs(red - target), mid, red))
        if red < target:
            lo, red_lo = mid, red
        else:
            hi, red_hi = mid, red
    result = TargetSearch(ratio=round(best[1], 6), metric=metric, target=target, achieved=best[2], trials=trials)
    if best[0] > tol / 4 and refine and scope == "uniform" and lo > 0:
        _refine(result, model, inputs, lo, hi, reduction_with, target, make_plan_kwargs.get("ignore", ()))
    return result


def _refine(result: TargetSearch, model: nn.Module, inputs: Tuple[Any, ...], lo: float, hi: float,
            reduction_with: Any, target: float, ignore: Any) -> None:
    """One uniform ratio jumps over the target (every layer drops a channel at once): give the higher ratio to
    the first k layers and the lower one to the rest, k found by bisection (the reduction grows with k)."""
    from .graph import build_graph

    layers = []
    for g in build_graph(model, inputs, ignore=ignore).groups:
        if g.prunable and g.module not in layers:
            layers.append(g.module)
    a, b = 0, len(layers)
    while b - a > 1:
        k = (a + b) // 2
        overrides = {name: hi for name in layers[:k]}
        red = reduction_with(lo, overrides)
        if abs(red - target) < abs(result.achieved - target):
            result.ratio, result.achieved, result.overrides = round(lo, 6), red, overrides
        if red < target:
            a = k
        else:
            b = k


def ratio_for_target(model: nn.Module, example_inputs: Any, reduce: Dict[str, float], criterion: str = "l2",
                     **make_plan_kwargs: Any) -> float:
    """The one channel ratio whose plan removes closest to ``reduce`` (e.g. {"params": 0.4}) of the model.

    Integer channel counts can make one ratio jump over the target on small models; ``search_ratio(...)
    .plan_kwargs()`` then adds per-layer overrides that land within ``tol``.
    """
    return search_ratio(model, example_inputs, reduce, criterion=criterion, refine=False, **make_plan_kwargs).ratio
