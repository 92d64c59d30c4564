"""Latency-aware allocation: prune more where this device's latency falls fastest per MAC removed.

A uniform ratio removes the same fraction of every group, but a removed MAC buys back different amounts of time in
different places: a 1x1 convolution whose input and output both shrink loses MACs quadratically and time less than
that (small matrix products run less efficiently), while the MACs of depthwise convolutions and the time of
normalizations and activations shrink only linearly. So a model pruned uniformly to 4x fewer MACs is rarely 4x
faster. Here each prunable group is pruned *alone* at ``probe`` on a copy, its latency saving and MACs saving are
measured, and each group gets the ratio ``r0 * (e_g / mean e) ** alpha`` (``e_g`` = ms saved per MAC removed,
capped at ``max_ratio``), with ``r0`` found by bisection so the whole model reaches the requested reduction.
The result is a ``make_plan`` override table, so any criterion still decides *which* channels go. Additive
savings are an approximation (irregular widths can run slower than regular ones), so by default the allocation
is timed once more against the uniform plan of the same target and the faster one is kept.

    alloc = latency_allocation(model, x, {"macs": 0.7})
    plan = make_plan(model, x, criterion="l2", **alloc.plan_kwargs())

Measurement assumes savings add up across groups (they nearly do: groups touch disjoint layers, or share only
normalizations and activations). The probes cost one plan, one copy and two timed forward sets per group (the
dense model is timed right before each probe, so a slow drift of the machine's speed cancels). With ``cache`` they
are kept per device, runtime and architecture (``prunekit.measure.latency_cache``): a second allocation of the same
architecture, whatever its weights, reuses the probes, and one for the same target reuses the whole result.
"""
from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..apply.oneshot import pruned_copy
from ..errors import ConfigError
from ..export import OrtModule
from ..graph import build_graph
from ..measure import InputSpec
from ..measure.latency import measure_latency
from ..measure.latency_cache import LatencyCache, arch_fingerprint, device_fingerprint
from ..measure.latency_cuda import CudaSettings, Timer, measure_cuda_latency, parse_runtime
from .reduce import check_reduce, model_size, reach, search_ratio, warn_if_short
from .round_to import resolve_round_to

LatencyFn = Callable[[nn.Module], float]
BLENDS = (0.0, 0.25, 0.5, 0.75, 1.0)  # uniform share tried in turn when the measured split cannot reach a target


@dataclass
class LatencyAllocation:
    """Per-group ratios (``overrides``, keyed by producing module) and the measurements behind them."""

    overrides: Dict[str, float]
    base_ratio: float
    metric: str
    target: float
    achieved: float
    dense_ms: float
    saved_ms: Dict[str, float] = field(default_factory=dict)
    saved_macs: Dict[str, int] = field(default_factory=dict)
    trials: List[Tuple[float, float]] = field(default_factory=list)
    chosen: str = "latency"
    uniform_kwargs: Dict[str, Any] = field(default_factory=dict)
    pruned_ms: Dict[str, float] = field(default_factory=dict)
    cached: str = "no"  # "no": measured now; "probes": per-group timings reused; "result": the whole allocation
    blend: float = 0.0  # share of uniform weight mixed in because the measured split alone could not reach the target

    def plan_kwargs(self) -> Dict[str, Any]:
        """``make_plan`` arguments of the faster allocation: per-group ratios (ratio 0 elsewhere), or the uniform
        ratio when the final check measured that faster."""
        if self.chosen == "uniform":
            return dict(self.uniform_kwargs)
        return {"ratio": 0.0, "overrides": dict(self.overrides)}


def timed_latency(inputs: Tuple[torch.Tensor, ...], repeats: int = 7, warmup: int = 2) -> LatencyFn:
    """Median latency (ms) at the first input's batch size, shape and device, by ``prunekit.measure``'s
    ``measure_latency`` (warm-up until runs settle, CUDA synchronized)."""
    x = inputs[0]
    batch, spec = int(x.shape[0]), InputSpec.from_example(inputs)

    def fn(model: nn.Module) -> float:
        median, _ = measure_latency(model, spec, (batch,), warmup=warmup, repeats=repeats, device=x.device)
        return median[batch]

    return fn


def runtime_label(runtime: str) -> str:
    """How the latency cache names what timings ran in: the runtime, its version where it has its own (ONNX
    Runtime), and torch's thread count (both CPU runtimes time with it), since probes from another differ; on CUDA
    the dtype and memory format (the GPU, driver and cuDNN are in the cache key's device part)."""
    _, cuda = parse_runtime(runtime)
    if cuda is not None:
        return cuda.label()
    threads = f"{torch.get_num_threads()}thread"
    if runtime == "ort":
        import onnxruntime

        return f"ort-{onnxruntime.__version__}-{threads}"
    return f"{runtime}-{threads}"


def cuda_latency(inputs: Tuple[torch.Tensor, ...], settings: CudaSettings, timer: Optional[Timer] = None
                 ) -> LatencyFn:
    """Median GPU latency (ms) at the first input's batch size and shape, by ``measure_cuda_latency`` (CUDA events,
    warm-up until stable, autocast dtype and memory format of ``settings``; ``timer`` replaces the events, the model
    then runs on the inputs' device: a CPU test)."""
    batch, spec = int(inputs[0].shape[0]), InputSpec.from_example(inputs)

    def fn(model: nn.Module) -> float:
        median, _ = measure_cuda_latency(model, spec, (batch,), settings, inputs[0].device if timer else None, timer)
        return median[batch]

    return fn


def runtime_timer(inputs: Tuple[torch.Tensor, ...], runtime: str = "eager") -> Tuple[LatencyFn, str]:
    """The latency function of the runtime a model will be deployed in, and its latency-cache label
    (:func:`runtime_label`): ``"eager"`` (PyTorch as built), ``"ort"`` (exported to ONNX and run by ONNX Runtime
    on the CPU, one export per call) or ``"cuda"`` / ``"cuda-bf16"`` / ``"cuda-fp16"`` (on the GPU, that autocast
    dtype, channels-last)."""
    _, cuda = parse_runtime(runtime)
    if cuda is not None:
        return cuda_latency(inputs, cuda), runtime_label(runtime)
    timed = timed_latency(inputs)
    if runtime == "eager":
        return timed, runtime_label(runtime)
    if runtime == "ort":
        spec = InputSpec.from_example(inputs)
        return (lambda m: timed(OrtModule(m, spec))), runtime_label(runtime)
    raise ConfigError(f"runtime={runtime!r}: latency is timed in 'eager' (PyTorch), 'ort' (ONNX Runtime) or "
                      "'cuda' (the GPU; 'cuda-bf16' / 'cuda-fp16' under autocast)")


def latency_allocation(model: nn.Module, example_inputs: Any, reduce: Dict[str, float], probe: float = 0.5,
                       alpha: float = 1.0, max_ratio: float = 0.9, latency_fn: Optional[LatencyFn] = None,
                       tol: float = 0.01, max_trials: int = 20, ignore: Sequence[str] = (),
                       round_to: Any = None, check_uniform: bool = True,
                       cache: Union[None, str, Path, LatencyCache] = None,
                       runtime: Optional[str] = None) -> LatencyAllocation:
    """Measure each group's latency-per-MAC saving, then search the per-group ratios that reach ``reduce``.

    ``check_uniform``: also build the uniform-ratio model of the same target, time both (interleaved, alternating
    which goes first, three rounds) and keep the faster (``chosen``), so the result is never slower than the uniform
    plan as measured.

    ``cache``: a folder, ``"auto"`` (the default folder) or a ``LatencyCache``; ``runtime`` names what ``latency_fn``
    times, as :func:`runtime_label` writes it (default: eager PyTorch at torch's thread count; e.g.
    ``"ort-1.20.1-1thread"`` for the timer of ``runtime_timer(x, "ort")``, ``"cuda-bf16-cl"`` for a GPU timer, whose
    key then names the GPU) and is part of the cache key, so timings of different runtimes never mix.
    """
    metric, target = check_reduce(reduce)
    round_to = resolve_round_to(round_to)  # "auto" / "auto-ort" measured once, then an int from here on
    if not 0.0 < probe < 1.0 or not 0.0 < max_ratio < 1.0 or alpha < 0:
        raise ConfigError(f"probe={probe}, max_ratio={max_ratio} must be fractions in (0, 1) and alpha={alpha} >= 0")
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    shape = InputSpec.from_example(inputs)  # what the model takes (token ids stay ints), per sample
    latency_fn = latency_fn or timed_latency(inputs)
    store = LatencyCache.resolve(cache)
    key_runtime = runtime or runtime_label("eager")
    key = {"what": "latency_alloc probes", "runtime": key_runtime,
           "device": device_fingerprint("cuda" if key_runtime.startswith("cuda") else inputs[0].device),
           "arch": arch_fingerprint(model, shape), "batch": int(inputs[0].shape[0]), "probe": probe,
           "round_to": round_to, "ignore": sorted(ignore)}
    entry = store.load(key) if store else {}
    settings = f"{metric}={target}|alpha={alpha}|max_ratio={max_ratio}|tol={tol}|check_uniform={check_uniform}"
    if settings in entry.get("results", {}):
        return LatencyAllocation(**{**entry["results"][settings], "cached": "result"})
    graph = build_graph(model, inputs, ignore=list(ignore))
    modules = graph.prunable_modules()
    if not modules:
        raise ConfigError("the model has no prunable channel group; nothing to allocate")

    def pruned(**plan_kwargs: Any) -> nn.Module:
        return pruned_copy(model, inputs, graph, ignore=ignore, round_to=round_to, **plan_kwargs)

    dense_macs = model_size(model, "macs", shape)
    reused = "probes" in entry and set(entry["probes"]["saved_ms"]) == set(modules)
    if reused:
        saved_ms, saved_macs = entry["probes"]["saved_ms"], entry["probes"]["saved_macs"]
        dense_ms = entry["probes"]["dense_ms"]
    else:
        saved_ms, saved_macs, dense_ms = _probe(model, modules, pruned, latency_fn, probe, dense_macs, shape)
        entry = {"probes": {"saved_ms": saved_ms, "saved_macs": saved_macs, "dense_ms": dense_ms}}
        if store:
            store.store(key, entry)
    eff = {n: max(saved_ms[n], 0.0) / saved_macs[n] if saved_macs[n] > 0 else 0.0 for n in modules}
    mean = statistics.mean(v for v in eff.values()) if any(eff.values()) else 0.0
    weight = {n: (eff[n] / mean) ** alpha if mean > 0 else 1.0 for n in modules}

    base = dense_macs if metric == "macs" else model_size(model, metric, shape)
    trials: List[Tuple[float, float]] = []

    def ratios(r0: float) -> Dict[str, float]:
        return {n: round(min(max_ratio, r0 * w), 4) for n, w in weight.items() if r0 * w > 0}

    def reduction(r0: float) -> float:
        red = 1.0 - model_size(pruned(ratio=0.0, overrides=ratios(r0)), metric, shape) / base if r0 > 0 else 0.0
        trials.append((round(r0, 6), red))
        return red

    # Groups whose timed saving is noise (<= 0) get weight 0 and keep every channel; if the rest cannot reach the
    # target under the cap, mix uniform weight in step by step (blend 1 = the uniform split) rather than give up.
    measured = dict(weight)
    for blend in BLENDS:
        weight = {n: (1 - blend) * w + blend for n, w in measured.items()}
        lo, hi = 0.0, max_ratio / min(w for w in weight.values() if w > 0)
        red_hi = reduction(hi)
        if red_hi >= target - tol:
            break
    else:
        raise ConfigError(f"cannot remove {target:.0%} of the {metric} with per-group ratios capped at {max_ratio}: "
                          f"the most reaches {red_hi:.1%}; ask for less or raise max_ratio"
                          + (f" (round_to={key['round_to']} keeps whole multiples of {key['round_to']} channels; a "
                             "smaller one lets narrow layers shrink further)" if key["round_to"] else ""))
    best = (abs(red_hi - target), hi, red_hi)
    for _ in range(max_trials):
        if best[0] <= tol / 4:
            break
        mid = (lo + hi) / 2
        red = reduction(mid)
        best = min(best, (abs(red - target), mid, red))
        lo, hi = (mid, hi) if red < target else (lo, mid)
    result = LatencyAllocation(overrides=ratios(best[1]),
                               base_ratio=round(best[1], 6), metric=metric, target=target, achieved=best[2],
                               dense_ms=dense_ms, saved_ms=saved_ms, saved_macs=saved_macs, trials=trials,
                               blend=blend)
    if check_uniform:
        found = search_ratio(model, inputs, reduce, tol=tol, ignore=list(ignore), round_to=round_to, warn=False)
        result.uniform_kwargs = found.plan_kwargs()
        candidates = {"latency": pruned(**result.plan_kwargs()), "uniform": pruned(**result.uniform_kwargs)}
        times: Dict[str, List[float]] = {k: [] for k in candidates}
        for i in range(3):  # alternate which goes first, so neither always runs on the other's caches
            for k in (("latency", "uniform") if i % 2 == 0 else ("uniform", "latency")):
                times[k].append(latency_fn(candidates[k]))
        result.pruned_ms = {k: statistics.median(v) for k, v in times.items()}
        result.chosen = min(result.pruned_ms, key=result.pruned_ms.get)
        if result.chosen == "uniform":
            result.achieved = found.achieved
    warn_if_short(reach(metric, target, result.achieved, tol))
    result.cached = "probes" if reused else "no"
    if store:
        entry.setdefault("results", {})[settings] = {k: v for k, v in dataclasses.asdict(result).items()
                                                    if k != "cached"}
        store.store(key, entry)
    return result


def _probe(model: nn.Module, modules: List[str], pruned: Callable[..., nn.Module], latency_fn: LatencyFn,
           probe: float, dense_macs: int, shape: InputSpec) -> Tuple[Dict[str, float], Dict[str, int], float]:
    """Each group pruned alone at ``probe``: ms saved and MACs saved; the dense model timed back to back with each
    probe (slow drifts of the machine's speed cancel), its median returned as the dense latency."""
    saved_ms: Dict[str, float] = {}
    saved_macs: Dict[str, int] = {}
    dense_times = []
    for name in modules:
        twin = pruned(ratio=0.0, overrides={name: probe})
        saved_macs[name] = dense_macs - model_size(twin, "macs", shape)
        dense_times.append(latency_fn(model))
        saved_ms[name] = dense_times[-1] - latency_fn(twin)
    return saved_ms, saved_macs, statistics.median(dense_times)
