"""Targets users think in: "remove 40% of the parameters" or "halve the MACs", turned into a channel ratio.

    reduce = parse_reduce("params=0.4")                     # {"params": 0.4}; also "macs=50%", "macs=2x"
    found = search_ratio(model, x, reduce, criterion="fpgm")
    found.plan, found.graph                                 # the plan it found (unverified), on the model's graph

The ratio is found by a bracketed search on ``make_plan``'s ratio: each trial plans and counts the parameters
(``prunekit.measure.count_params``) or MACs (``count_macs``) of the planned model's meta-device twin (shapes only).
Reductions grow with the ratio, so the search converges; channel counts are integers, so the result is the
closest reachable point (within ``tol``, with per-layer overrides where one ratio jumps over it).
The model is traced and scored by ``criterion`` once for the whole search, and the best trial's plan is handed back,
so nobody traces and scores the model again to plan the ratio found (``prunekit.allocate.target.plan_for_target``
checks and returns it). With ``scope="uniform"`` the counts do not depend on the scores: a caller that wants only
the ratio searches with the cheap default ``l2``.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..apply.oneshot import checked_plan
from ..apply.structured import apply_plan
from ..errors import ConfigError
from ..graph import DependencyGraph, build_graph, meta_twin
from ..importance import score_groups
from ..measure import InputSpec, count_macs, count_params
from ..measure.state import InputLike
from ..plan import Plan, make_plan

METRICS = ("params", "macs")
MEASURED = "latency"  # reached by timing candidate models (allocate.latency_target), not by counting them
log = logging.getLogger(__name__)


def parse_reduce(text: str, measured: bool = False) -> Dict[str, float]:
    """``"params=0.4"`` -> {"params": 0.4}. Values: a fraction (0.4), a percentage (40%) or a factor (2x = 0.5).

    ``measured``: also accept ``latency=...`` (the fraction of the measured latency to remove), which only a caller
    that times candidates reaches (structured one-shot pruning); elsewhere it is refused with the fix.
    """
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"--reduce {text!r} is not METRIC=AMOUNT; use e.g. params=0.4, macs=50% or macs=2x")
    key, _, raw = text.partition("=")
    key, raw = key.strip().lower(), raw.strip().lower()
    if key == MEASURED and not measured:
        raise ConfigError(f"--reduce {text!r}: a measured latency target is reached only by structured one-shot "
                          f"pruning (prunekit prune --structured --reduce {text}); here give macs=... or params=...")
    if key not in METRICS + ((MEASURED,) if measured else ()):
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
        raise ConfigError(f"--reduce {text!r} asks to remove {value:.0%} of the {key}; use a fraction in (0, 1), a percentage (40%) or a factor (2x)")
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
    plan: Optional[Plan] = None  # the chosen trial's plan (not yet verified), on ``graph``
    graph: Optional[DependencyGraph] = None

    def plan_kwargs(self) -> Dict[str, Any]:
        """``make_plan`` arguments that reproduce ``achieved``: ratio and, if needed, overrides."""
        return {"ratio": self.ratio, "overrides": dict(self.overrides)} if self.overrides else {"ratio": self.ratio}


def reach(metric: str, target: float, achieved: float, tol: float = 0.01) -> Dict[str, Any]:
    """Requested against reached, for a result's JSON. ``reached`` is False when the plan falls more than ``tol``
    short of the requested fraction, or keeps over a quarter more than the requested remainder: ``macs=1000x``
    (keep 0.1%) met by a 177x model (keep 0.56%) is 99.4% removed, within ``tol`` of 99.9%, yet not the target."""
    ok = achieved >= target - tol and 1.0 - achieved <= 1.25 * (1.0 - target)
    return {"metric": metric, "requested": round(target, 6), "reached": round(achieved, 6),
            "requested_factor": round(1.0 / (1.0 - target), 2), "reached_factor": round(1.0 / max(1.0 - achieved,
                                                                                                   1e-12), 2),
            "target_reached": ok}


def warn_if_short(record: Dict[str, Any]) -> None:
    """One line on stderr (a logging warning) when ``record`` (from :func:`reach`) says the target was missed."""
    if not record["target_reached"]:
        log.warning(f"warning: the {record['metric']} target was not reached: asked to remove "
                    f"{record['requested']:.2%} ({record['requested_factor']:g}x smaller), the closest plan removes "
                    f"{record['reached']:.2%} ({record['reached_factor']:g}x smaller); every layer keeps "
                    "some of its channels. The result is larger than asked; ask for less to silence this")


def check_reduce(reduce: Dict[str, float]) -> Tuple[str, float]:
    """Validate a one-metric reduction target such as ``{"params": 0.4}``; returns (metric, fraction).

    Raises ConfigError for several metrics, an unknown metric or a value outside (0, 1).
    """
    if not isinstance(reduce, dict) or len(reduce) != 1:
        raise ConfigError(f"reduce={reduce!r} must name exactly one metric, e.g. {{'params': 0.4}}")
    (metric, value), = reduce.items()
    if metric not in METRICS:
        raise ConfigError(f"reduce metric {metric!r} is unknown; use one of {', '.join(METRICS)}")
    if not 0.0 < float(value) < 1.0:
        raise ConfigError(f"reduce {metric}={value} must be a fraction in (0, 1), e.g. 0.4")
    return metric, float(value)


def model_size(model: nn.Module, metric: str, input_shape: InputLike) -> int:
    """Parameters or MACs of ``model`` at ``input_shape`` (an InputSpec, or an image shape (C, H, W)), whichever
    ``metric`` names."""
    return count_params(model) if metric == "params" else count_macs(model, input_shape)[0]


def _shrink(red: float) -> float:
    """Reduction -> equivalent uniform ratio: MACs and params of a uniformly pruned network fall as (1 - r)^2 (every
    layer loses inputs and outputs), so ``1 - sqrt(1 - red)`` is nearly linear in r and interpolates well."""
    return 1.0 - math.sqrt(max(0.0, 1.0 - red))


def _bracketed(f: Callable[[float], float], target: float, lo: float, hi: float, f_lo: float, f_hi: float,
               good: Callable[[float], bool], budget: int, step: float, width: float) -> None:
    """Shrink [lo, hi] (f(lo) < target <= f(hi), f non-decreasing) until ``good`` or the bracket is no wider than
    ``width``: the next point is interpolated in ``_shrink`` space, a bisection whenever the same end moved twice
    (so a flat stretch of the step function cannot stall it), rounded to a multiple of ``step``."""
    last = ""
    for _ in range(budget):
        if hi - lo <= max(step, width):
            return
        if last.endswith(("lolo", "hihi")) or f_hi <= f_lo:
            x = (lo + hi) / 2
        else:
            t = (_shrink(target) - _shrink(f_lo)) / (_shrink(f_hi) - _shrink(f_lo))
            x = lo + min(max(t, 0.05), 0.95) * (hi - lo)
        x = min(max(round(x / step) * step, lo + step), hi - step)
        val = f(x)
        if good(val):
            return
        if val < target:
            lo, f_lo, last = x, val, last + "lo"
        else:
            hi, f_hi, last = x, val, last + "hi"


def _trial_size(model: nn.Module, plan: Any, graph: Any, metric: str, shape: InputLike) -> Optional[int]:
    """Size of what ``plan`` makes of ``model``, counted on a meta-device twin: shapes only, no weights copied and no
    arithmetic (vgg16's trial 0.65 s -> 0.02 s); None when the twin cannot be pruned or run there."""

    try:
        twin = meta_twin(model)
        with torch.no_grad():
            apply_plan(twin, plan, graph=graph)
        return model_size(twin, metric, shape)
    except Exception:  # data-dependent code (a .item(), a nonzero) needs real tensors: the caller counts a copy
        return None


def search_ratio(model: nn.Module, example_inputs: Any, reduce: Dict[str, float], criterion: str = "l2",
                 tol: float = 0.01, max_ratio: float = 0.95, max_trials: int = 24, refine: bool = True,
                 warn: bool = True, **make_plan_kwargs: Any) -> TargetSearch:
    """The channel ratio whose plan lands within ``tol`` of the target reduction (see module doc).

    Each trial plans without the verify pass and counts a meta-device twin (a trial that cannot run there is planned
    with verification and counted on a real copy, as before). The model is traced and scored (by ``criterion``) once,
    and the chosen trial's plan comes back in ``.plan`` (with ``.graph``). The first trial
    is the ratio that would hit the target if every layer shrank alike (MACs ~ (1 - r)^2), the next ones
    interpolate inside the bracket, so four to eight trials usually land within ``tol / 4``. A target no plan
    reaches (:func:`reach`) is logged as a warning unless ``warn=False``.
    """

    metric, target = check_reduce(reduce)
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    shape = InputSpec.from_example(inputs)  # what the model takes (token ids stay ints), per sample
    scope = make_plan_kwargs.get("scope", "uniform")
    base = model_size(model, metric, shape)
    trials: List[Tuple[float, float]] = []
    plans: Dict[Tuple[float, Tuple[str, ...]], Plan] = {}  # (ratio, override names) -> the trial's plan
    graph = build_graph(model, inputs, ignore=list(make_plan_kwargs.get("ignore", ())))  # traced and scored once
    scores = score_groups(graph, model, criterion,
                          ctx={"data": make_plan_kwargs.get("data"), "seed": make_plan_kwargs.get("seed", 0)})

    def reduction_with(r: float, overrides: Dict[str, float]) -> float:
        kwargs = dict(make_plan_kwargs)
        kwargs["overrides"] = {**overrides, **(kwargs.get("overrides") or {})}  # the user's own win
        plan = make_plan(model, inputs, ratio=r, criterion=criterion, graph=graph, scores=scores, **kwargs)
        size = _trial_size(model, plan, graph, metric, shape)
        if size is None:
            plan, _ = checked_plan(model, inputs, ratio=r, criterion=criterion, graph=graph, scores=scores, **kwargs)
            twin = copy.deepcopy(model)
            with torch.no_grad():
                apply_plan(twin, plan, graph=graph)
            size = model_size(twin, metric, shape)
        red = 1.0 - size / base
        trials.append((round(r, 6), red))
        plans[(round(r, 6), tuple(overrides))] = plan
        return red

    def reduction(r: float) -> float:
        return reduction_with(r, {})

    def good(red: float) -> bool:
        return abs(red - target) <= tol / 4

    lo, red_lo = 0.0, 0.0
    hi = min(float(max_ratio), round(_shrink(target), 4))
    red_hi = reduction(hi)
    while red_hi < target and not good(red_hi):  # below the target: step up (extrapolated), up to max_ratio
        if hi >= max_ratio:
            if red_hi < target - tol:
                raise ConfigError(f"cannot remove {target:.0%} of the {metric}: even ratio {hi} removes only "
                                  f"{red_hi:.1%} (frozen or ignored layers keep the rest); ask for less")
            break
        lo, red_lo = hi, red_hi
        grow = _shrink(target) / max(_shrink(red_hi), 1e-6)
        hi = min(float(max_ratio), round(max(hi * grow, hi + 0.01), 4))
        red_hi = reduction(hi)
    if not good(red_hi) and red_hi >= target:
        _bracketed(reduction, target, lo, hi, red_lo, red_hi, good, max_trials - len(trials), 1e-4, 1e-3)
    ratio, achieved = min(trials, key=lambda t: (abs(t[1] - target), t[0]))  # so far every trial is one ratio
    result = TargetSearch(ratio=round(ratio, 6), metric=metric, target=target, achieved=achieved, trials=trials)
    plans = {(result.ratio, ()): plans[(result.ratio, ())]}  # the other one-ratio trials cannot be chosen now
    lo = max((r for r, red in trials if red < target), default=0.0)
    hi = min((r for r, red in trials if red >= target), default=0.0)
    if not good(achieved) and refine and scope == "uniform" and lo > 0 and hi > lo:
        _refine(result, graph, lo, hi, reduction_with, target, good)
    if warn:
        warn_if_short(reach(metric, target, result.achieved, tol))
    result.plan, result.graph = plans[(result.ratio, tuple(result.overrides))], graph
    return result


def _refine(result: TargetSearch, graph: Any, lo: float, hi: float, reduction_with: Any, target: float,
            good: Callable[[float], bool]) -> None:
    """One uniform ratio jumps over the target (every layer drops a channel at once): give the higher ratio to
    the first k layers and the lower one to the rest, k searched like the ratio (the reduction grows with k)."""
    layers = graph.prunable_modules()

    def with_first(k: float) -> float:
        overrides = {name: hi for name in layers[:int(k)]}
        red = reduction_with(lo, overrides)
        if abs(red - target) < abs(result.achieved - target):
            result.ratio, result.achieved, result.overrides = round(lo, 6), red, overrides
        return red

    red_lo = next(red for r, red in result.trials if r == round(lo, 6))
    red_hi = next(red for r, red in result.trials if r == round(hi, 6))
    _bracketed(with_first, target, 0, len(layers), red_lo, red_hi, good, 12, 1, 1)


def ratio_for_target(model: nn.Module, example_inputs: Any, reduce: Dict[str, float], criterion: str = "l2",
                     **make_plan_kwargs: Any) -> float:
    """The one channel ratio whose plan removes closest to ``reduce`` (e.g. {"params": 0.4}) of the model.

    Integer channel counts can make one ratio jump over the target on small models; ``search_ratio(...)
    .plan_kwargs()`` then adds per-layer overrides that land within ``tol``.
    """
    return search_ratio(model, example_inputs, reduce, criterion=criterion, refine=False, **make_plan_kwargs).ratio


def check_reachable(model: nn.Module, example_inputs: Any, reduce: Dict[str, float], closest: bool = False,
                    tol: float = 0.01, max_ratio: float = 0.95, **make_plan_kwargs: Any) -> Dict[str, Any]:
    """Whether a target can be met at all, decided before any training: the plan at the largest ratio the search
    tries (``max_ratio``) removes the most of the metric that any plan can; :func:`reach` compares it with the
    target. Unreachable: a ConfigError naming what can be reached, unless ``closest`` (then the search lands as
    near as it can and :func:`warn_if_short` says so). Returns the :func:`reach` record of that most.

    The removed counts of ``scope="uniform"`` do not depend on the weights, so an untrained model answers for the
    trained one; with ``scope="global"`` (counts follow the scores) it is an estimate on the weights given.
    """
    metric, target = check_reduce(reduce)
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    shape = InputSpec.from_example(inputs)
    kwargs = {k: v for k, v in make_plan_kwargs.items() if k not in ("ratio", "criterion", "data")}
    plan, graph = make_plan(model, inputs, ratio=max_ratio, criterion="l2", return_graph=True, **kwargs)
    size = _trial_size(model, plan, graph, metric, shape)
    if size is None:  # data-dependent code needs real tensors: count a pruned copy
        twin = copy.deepcopy(model)
        with torch.no_grad():
            apply_plan(twin, plan, graph=graph)
        size = model_size(twin, metric, shape)
    record = reach(metric, target, 1.0 - size / model_size(model, metric, shape), tol)
    if not record["target_reached"] and not closest:
        raise ConfigError(f"the {metric} target {record['requested_factor']:g}x smaller cannot be reached: the most "
                          f"any plan removes is {record['reached']:.2%} ({record['reached_factor']:g}x smaller; every "
                          f"layer keeps some channels); ask for less, or add --closest (closest=True) to prune as "
                          f"close as possible")
    return record
