"""The registered allocators: ``ratio`` (one fraction for every layer), ``reduce`` (the ratio that reaches a MACs
or params target), ``depth`` (the fewest whole blocks that reach it), ``latency`` (per-layer ratios from timed
probes), ``latency_target`` (blocks, channels or both, whichever reaches a measured latency target keeping the most
MACs), ``fastest`` (a MACs or params target split between blocks and channels the way that runs fastest) and
``budget`` (the most MACs a sensitivity scan allows within an accuracy budget)."""
from __future__ import annotations

from typing import Any, Tuple

from ..errors import ConfigError
from .base import ALLOCATORS, Allocation, AllocationRequest
from .budget import BudgetChoice, budget_record, budget_search
from .depth import search_depth
from .fastest import fastest_at
from .latency import latency_allocation, runtime_label, runtime_timer
from .latency_target import latency_target, paired_timer
from .reduce import reach, search_ratio


@ALLOCATORS.register("ratio")
def uniform_ratio(req: AllocationRequest) -> Allocation:
    """``req.ratio`` of the channels of every group (uniform scope) or of all channels (global scope)."""
    return Allocation({"ratio": req.ratio})


@ALLOCATORS.register("reduce")
def reduce_target(req: AllocationRequest) -> Allocation:
    """The ratio (plus overrides where one ratio cannot land within tolerance) that reaches ``req.reduce``."""
    found = search_ratio(req.model, req.example, _target(req), criterion=req.criterion, **req.plan_kwargs)
    return Allocation(found.plan_kwargs(), {"reduce_achieved": found.achieved,
                                            "reduce_target": reach(found.metric, found.target, found.achieved)},
                      plan=found.plan, graph=found.graph)


@ALLOCATORS.register("depth")
def depth_target(req: AllocationRequest) -> Allocation:
    """No channel goes: the fewest residual blocks (lowest by ``options["depth_criterion"]``) that reach
    ``req.reduce``."""
    found = search_depth(req.model, req.example, _target(req), req.options.get("depth_criterion", "magnitude"),
                         **req.plan_kwargs)
    return Allocation(found.plan_kwargs(), {"reduce_achieved": found.achieved, "allocation": "depth",
                                            "depth_trials": found.trials})


@ALLOCATORS.register("latency")
def latency_measured(req: AllocationRequest) -> Allocation:
    """Per-layer ratios from each group's timed latency saving per MAC, in ``options["runtime"]`` (eager, ort or
    cuda), probes cached in ``options["cache"]``, timed at batch ``options["batch"]`` (default 1: a GPU at batch 1
    waits on launches, so a GPU allocation should be probed at the batch it serves)."""
    x1, batch = req.example[:1], _batch(req)
    latency_fn, runtime = runtime_timer((_batch_of(x1, batch),), req.options.get("runtime", "eager"))
    runtime = runtime if batch == 1 else f"{runtime}-b{batch}"  # the probes' cache key names the batch
    alloc = latency_allocation(req.model, x1, _target(req), cache=req.options.get("cache"),
                               round_to=req.plan_kwargs.get("round_to"), latency_fn=latency_fn, runtime=runtime)
    return Allocation(alloc.plan_kwargs(), {
        "reduce_achieved": alloc.achieved, "allocation": "latency",
        "reduce_target": reach(alloc.metric, alloc.target, alloc.achieved), "allocation_ratios": alloc.overrides,
        "allocation_chosen": alloc.chosen, "allocation_cached": alloc.cached, "allocation_blend": alloc.blend,
        "allocation_runtime": runtime, f"dense_latency_ms_b{batch}": round(alloc.dense_ms, 3)})


@ALLOCATORS.register("fastest")
def fastest_split(req: AllocationRequest) -> Allocation:
    """``req.reduce`` (MACs or params) by whole blocks, channels or both, whichever split runs fastest measured in
    ``options["runtime"]`` at batch ``options["batch"]`` (default 1; or by ``options["latency_fn"]``)."""
    x1 = req.example[:1]
    latency_fn, pair_fn, runtime = _timers(req, x1)
    found = fastest_at(req.model, x1, _target(req), latency_fn=latency_fn, pair_fn=pair_fn,
                       depth_criterion=req.options.get("depth_criterion", "magnitude"), **req.plan_kwargs)
    record = {**found.record(), "runtime": runtime, "batch": _batch(req)}
    return Allocation(found.plan_kwargs(), {
        "reduce_achieved": record["reached"], "allocation": "fastest", "fastest": record,
        "reduce_target": reach(found.metric, found.target, found.chosen.reduction),
        "fastest_arm": f"{found.chosen.arm}: {found.chosen.blocks} blocks, channel ratio {found.chosen.ratio}"
                       + (f", residual streams {found.chosen.stream}" if found.chosen.stream is not None else "")})


@ALLOCATORS.register("latency_target")
def measured_latency_target(req: AllocationRequest) -> Allocation:
    """Whole blocks, a uniform channel ratio or both, whichever removes ``req.reduce["latency"]`` of the batch-1
    latency measured in ``options["runtime"]`` (dense and candidate round-robin; or by ``options["latency_fn"]``)
    while keeping the most MACs."""
    if not req.reduce or set(req.reduce) != {"latency"}:
        raise ConfigError("the latency_target allocation reaches a measured latency target: give e.g. "
                          "--reduce latency=2x")
    x1 = req.example[:1]
    latency_fn, pair_fn, runtime = _timers(req, x1)
    found = latency_target(req.model, x1, req.reduce["latency"], latency_fn=latency_fn, pair_fn=pair_fn,
                           depth_criterion=req.options.get("depth_criterion", "magnitude"), **req.plan_kwargs)
    record = {**found.record(), "runtime": runtime, "batch": _batch(req)}
    return Allocation(found.plan_kwargs(), {
        "reduce_achieved": record["reached"], "allocation": "latency_target", "latency_target": record,
        "latency_arm": f"{found.chosen.arm}: {found.chosen.blocks} blocks, channel ratio {found.chosen.ratio}",
        "dense_latency_ms_b1": record["dense_ms"], "pruned_latency_ms_b1": record["ms"]})


@ALLOCATORS.register("budget")
def accuracy_budget(req: AllocationRequest) -> Allocation:
    """The most MACs removed while the score drops at most ``options["max_drop"]`` points, from the scan
    ``options["sensitivity"]`` scored by ``options["score"]`` (plus ``recalibrate`` / ``finetune`` when given);
    ``options["split"]`` and ``options["epochs"]`` are recorded (and named when nothing fits)."""
    o = req.options
    choice = budget_choice(req)
    if not choice.overrides:
        raise ConfigError(f"no layer can lose channels within --max-drop {o['max_drop']} (accuracy points on the "
                          f"{o.get('split', 'val')} split after {o.get('epochs', 0)} recovery epochs); allow a "
                          "larger drop or more --budget-epochs")
    return Allocation(choice.plan_kwargs(),
                      {"budget": budget_record(choice, o["max_drop"], o.get("split", "val"), o.get("epochs", 0))})


def budget_choice(req: AllocationRequest) -> BudgetChoice:
    """The budget search on ``req`` (options as :func:`accuracy_budget` reads them), empty when nothing fits:
    ``prunekit sensitivity`` reports that, the ``budget`` allocator refuses it."""
    o = req.options
    return budget_search(req.model, req.example, o["sensitivity"], o["score"], max_drop=o["max_drop"] / 100.0,
                         recalibrate=o.get("recalibrate"), criterion=req.criterion, finetune=o.get("finetune"),
                         **req.plan_kwargs)


def _timers(req: AllocationRequest, x1: Any) -> Tuple[Any, Any, str]:
    """(latency_fn, pair_fn, runtime label): the caller's ``options["latency_fn"]`` (tests, custom timers), else
    dense and candidate timed round-robin in ``options["runtime"]``."""
    latency_fn = req.options.get("latency_fn")
    if latency_fn is not None:
        return latency_fn, None, "given latency_fn"
    runtime = req.options.get("runtime", "eager")
    return None, paired_timer((_batch_of(x1, _batch(req)),), runtime), runtime_label(runtime)


def _batch(req: AllocationRequest) -> int:
    """The batch size candidates are timed at (``options["batch"]``, default 1): the one the model is deployed at,
    since which split runs fastest can differ between batch 1 and a full batch."""
    batch = int(req.options.get("batch") or 1)
    if batch < 1:
        raise ConfigError(f"latency batch {batch} must be >= 1")
    return batch


def _batch_of(x1: Any, batch: int) -> Any:
    return x1 if batch == 1 else x1.expand(batch, *x1.shape[1:]).contiguous()


def _target(req: AllocationRequest):
    if not req.reduce:
        raise ConfigError("this allocation reaches a target: give one, e.g. --reduce macs=0.5 (or reduce={'macs': 0.5})")
    return req.reduce
