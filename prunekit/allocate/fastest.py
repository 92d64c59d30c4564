"""A MACs or params target reached the way that runs fastest here: by channels, by whole blocks, or by a mix.

    found = fastest_at(model, x[:1], {"macs": 0.75})     # 4x fewer MACs, the split between depth and width timed
    model, plan = prune_structured(model, x, **found.plan_kwargs())

Counting MACs says nothing of how a device spends its time: a narrower layer saves fewer milliseconds than MACs on
small matrices and keeps its normalization, activation and per-op overheads, while a removed block saves all of
them. So at one target the candidates are n whole residual blocks (lowest-scored first by ``depth_criterion``)
plus the uniform channel ratio that fills the rest of the target, for a few n from 0 (width alone) up to the
fewest blocks that reach it alone. Each block count is tried with one ratio for every group and, where the model
has residual streams, with the streams cut less (``stream_ratios``: the groups every block adds to keep that ratio,
the groups inside the blocks take the rest): cutting the insides harder shrinks, more than a uniform cut does, the
layers whose time grows with the width but whose MACs are few (depthwise convolutions on a block's expanded
channels, their normalizations and activations). In ONNX Runtime that lifts the mobile networks and is not chosen
on resnet50, so it is measured per model, not assumed (results/structured_speed/log.md). Every candidate lands on
the same reduction (within ``tol``), so they differ only in where the cut falls; each is timed round-robin with the dense
model, the fastest few and the uniform cut are timed ``FINAL_ROUNDS`` more times, and the one with the lowest median
latency relative to its dense twin is kept. Every candidate is in ``candidates``.

What it does not weigh is accuracy: on UC Merced, removing blocks kept as much accuracy as removing channels at
the same MACs after fine-tuning (docs/structured/depth_accuracy.md), but that is one dataset and one network.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from statistics import median
from typing import Any, Dict, List, Optional, Tuple

from torch import nn

from ..apply.oneshot import pruned_copy
from ..errors import ConfigError
from ..graph import build_graph
from ..measure import InputSpec, count_macs, count_params
from ..plan import plan_inputs
from .depth import search_depth
from .latency import LatencyFn
from .latency_target import PairFn, paired_timer
from .reduce import check_reduce, search_ratio

RETIMES = 3  # finalists: one timing of each candidate ranks them, the closest few (and the uniform cut) need more
FINAL_ROUNDS = 3  # more timings of each finalist, round-robin: two candidates' latencies differ by less than one
# timing's noise (the same candidate timed twice moved by up to 7% in ONNX Runtime here), so one or two timings
# picked a slower split over the uniform cut about as often as a faster one
STREAM_RATIOS = (0.0, 0.25)  # ratios tried for the residual streams besides the uniform one


@dataclass
class SplitCandidate:
    """``blocks`` removed, then ``ratio`` of every group's channels (the residual streams at ``stream`` when it is
    set); each timing is candidate ms / dense ms of the same round."""

    blocks: int
    ratio: float
    reduction: float
    macs: int
    params: int
    overrides: Dict[str, float] = field(default_factory=dict)
    timings: List[float] = field(default_factory=list)
    stream: Optional[float] = None

    @property
    def relative(self) -> float:
        """Latency as a fraction of the dense model's (median of its timings, so one disturbed timing does not
        decide; lower is faster)."""
        return median(self.timings)

    @property
    def arm(self) -> str:
        return "width" if not self.blocks else "depth" if not self.ratio else "mix"

    def row(self) -> Dict[str, Any]:
        return {**asdict(self), "arm": self.arm, "timings": [round(t, 4) for t in self.timings],
                "relative_latency": round(self.relative, 4), "speedup": round(1 / self.relative, 3)}


@dataclass
class FastestSplit:
    """The chosen candidate and every one timed."""

    metric: str
    target: float
    chosen: SplitCandidate
    candidates: List[SplitCandidate]
    depth_criterion: str
    blocks_available: int

    def plan_kwargs(self) -> Dict[str, Any]:
        kwargs: Dict[str, Any] = {"ratio": self.chosen.ratio}
        if self.chosen.overrides:
            kwargs["overrides"] = dict(self.chosen.overrides)
        if self.chosen.blocks:
            kwargs.update(depth_blocks=self.chosen.blocks, depth_criterion=self.depth_criterion)
        return kwargs

    def record(self) -> Dict[str, Any]:
        c = self.chosen
        return {"metric": self.metric, "requested": round(self.target, 6), "reached": round(c.reduction, 6),
                "arm": c.arm, "blocks": c.blocks, "ratio": c.ratio, "stream_ratio": c.stream,
                "blocks_available": self.blocks_available,
                "depth_criterion": self.depth_criterion, "speedup": round(1 / c.relative, 3),
                "why": "the lowest latency relative to the dense model among candidates at the same target "
                       f"(the fastest {RETIMES} and the uniform cut timed {FINAL_ROUNDS} more times, median)",
                "candidates": [k.row() for k in self.candidates]}


def fastest_at(model: nn.Module, example_inputs: Any, reduce: Dict[str, float],
               latency_fn: Optional[LatencyFn] = None, pair_fn: Optional[PairFn] = None,
               depth_criterion: str = "magnitude", points: int = 4, tol: float = 0.01,
               stream_ratios: Tuple[float, ...] = STREAM_RATIOS, runtime: str = "eager",
               **plan_kwargs: Any) -> FastestSplit:
    """The (blocks, channel ratio) reaching ``reduce`` whose measured latency is lowest.

    ``pair_fn(dense, candidate) -> (ms, ms)`` times the two (default: :func:`paired_timer` in ``runtime``: eager,
    ort or cuda[-bf16|-fp16], at the example's batch size), or ``latency_fn(model) -> ms`` one at a time (a fake
    one makes tests deterministic).
    ``points``: block counts tried besides 0, spread up to the fewest blocks that reach the target alone (or every
    block when none does). ``stream_ratios``: ratios tried for the residual streams (``DependencyGraph.
    stream_modules``) besides the uniform cut; () tries the uniform cut only. ``plan_kwargs``: ``make_plan``
    options all candidates share (round_to, ignore, data).
    """
    metric, target = check_reduce(reduce)
    inputs = plan_inputs(example_inputs)
    shape = InputSpec.from_example(inputs)  # what the model takes (token ids stay ints), per sample
    if pair_fn is None:
        pair_fn = paired_timer(inputs, runtime) if latency_fn is None else \
            lambda a, b: (latency_fn(a), latency_fn(b))
    kwargs = {k: v for k, v in plan_kwargs.items()
              if k not in ("ratio", "depth", "depth_blocks", "depth_criterion", "overrides", "scope", "criterion")}
    graph = build_graph(model, inputs, ignore=list(kwargs.get("ignore", ())))
    n_all = len(graph.residual_blocks)
    streams = graph.stream_modules()
    candidates: List[SplitCandidate] = []
    twins: Dict[int, nn.Module] = {}
    for n in _block_counts(model, inputs, reduce, n_all, depth_criterion, points, kwargs):
        for stream in (None, *(stream_ratios if streams else ())):
            found = _candidate(model, inputs, graph, reduce, n, depth_criterion, tol, shape, kwargs,
                               {name: stream for name in streams} if stream is not None else {})
            if found is None or any((c.macs, c.params) == (found[0].macs, found[0].params) for c in candidates):
                continue
            found[0].stream = stream
            candidates.append(found[0])
            twins[id(found[0])] = found[1]
    if not candidates:
        raise ConfigError(f"no split of blocks and channels reaches {metric}={target:g}; lower the target")

    def timed(cands: List[SplitCandidate]) -> None:
        for c in cands:
            dense_ms, ms = pair_fn(model, twins[id(c)])
            c.timings.append(ms / dense_ms)

    timed(candidates)
    if len(candidates) > 1:
        finalists = sorted(candidates, key=lambda c: c.relative)[:RETIMES]
        finalists += [c for c in candidates if c.arm == "width" and c.stream is None and c not in finalists]
        for _ in range(FINAL_ROUNDS):
            timed(finalists)
    chosen = min(candidates, key=lambda c: (c.relative, -c.macs))
    return FastestSplit(metric, target, chosen, candidates, depth_criterion, n_all)


def _block_counts(model: nn.Module, inputs: Any, reduce: Dict[str, float], n_all: int, depth_criterion: str,
                  points: int, kwargs: Dict[str, Any]) -> List[int]:
    """0 and ``points`` counts spread up to the fewest blocks reaching the target alone (all blocks if none do)."""
    if not n_all or points <= 0:
        return [0]
    try:
        top = search_depth(model, inputs, reduce, depth_criterion, **kwargs).blocks
    except ConfigError:  # depth alone falls short: every block may go, channels fill the rest
        top = n_all
    return sorted({0} | {max(1, round(i * top / points)) for i in range(1, points + 1)})


def _candidate(model: nn.Module, inputs: Any, graph: Any, reduce: Dict[str, float], n: int, depth_criterion: str,
               tol: float, shape: InputSpec, kwargs: Dict[str, Any],
               fixed: Dict[str, float]) -> Optional[Tuple[SplitCandidate, nn.Module]]:
    """n blocks plus the channel ratio (and overrides) that land on the target, the groups in ``fixed`` at their
    own ratio, with the pruned twin; None when n blocks already overshoot it (the comparison would then favour the
    candidate that removed more) or nothing lands within ``tol``."""
    metric, target = check_reduce(reduce)
    depth = {"depth_blocks": n, "depth_criterion": depth_criterion} if n else {}
    try:
        found = search_ratio(model, inputs, reduce, tol=tol, warn=False, overrides=fixed, **depth, **kwargs)
    except ConfigError:
        return None
    if abs(found.achieved - target) > tol:
        return None
    overrides = {**found.overrides, **fixed}  # as search_ratio counted it: the fixed ratios win
    twin = pruned_copy(model, inputs, graph, ratio=found.ratio, overrides=overrides, **depth, **kwargs)
    cand = SplitCandidate(n, found.ratio, round(found.achieved, 4), count_macs(twin, shape)[0], count_params(twin),
                          overrides)
    return cand, twin
