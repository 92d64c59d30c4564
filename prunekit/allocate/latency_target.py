"""A measured latency target (``--reduce latency=2x``) reached by width, by depth or by both: whichever keeps most.

    found = latency_target(model, x[:1], 0.5)          # remove half of the batch-1 latency measured here
    model, plan = prune_structured(model, x, **found.plan_kwargs())

Candidates, each pruned on a copy and timed round-robin with the dense model (``measure_latency_together``: a
change of the machine's speed hits both alike, which matters on a shared CPU):

* depth: the first n whole residual blocks (lowest-scored first by ``depth_criterion``) whose removal reaches it;
* width: one uniform channel ratio, searched by measured latency (widths on ``round_to`` when given);
* mixes: n blocks (a few n below the depth count), then the channel ratio that fills the rest.

Of the candidates that reach the target, the one removing the fewest MACs is kept (tie: the fewest parameters):
at equal latency, the model that keeps more capacity is expected to keep more accuracy, and to recover more of it
when fine-tuned. Which arm that is depends on the device: a removed block also saves its per-layer overheads
(kernel launches, memory passes of normalizations and activations), narrower layers save less time than MACs on
small matrices. The chosen one is timed once more against the dense model; if that misses the target (the
candidates a search stops at are those whose timing came out lucky), the next best is confirmed instead. Every candidate is kept in ``candidates`` so a report can show why.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from torch import nn

from ..apply.oneshot import pruned_copy
from ..errors import ConfigError
from ..graph import build_graph
from ..export import OrtModule
from ..measure import InputSpec, count_macs, count_params, measure_latency_together
from ..measure.latency_cuda import Timer, measure_cuda_latency_together, parse_runtime
from ..plan import plan_inputs
from .latency import LatencyFn
from .reduce import _bracketed, _shrink

PairFn = Callable[[nn.Module, nn.Module], Tuple[float, float]]  # (dense, candidate) -> their latencies (ms)
WHY = ("the fewest MACs removed among the candidates that reach the target (tie: fewest parameters removed), "
       "confirmed by a second timing")
CONFIRMS = 8  # candidates re-timed at most: the first timings that pass are the luckiest (a winner's curse)


def paired_timer(inputs: Tuple[Any, ...], runtime: str = "eager", repeats: int = 7,
                 timer: Optional[Timer] = None) -> PairFn:
    """Dense and candidate timed round-robin at the first input's batch size, in eager PyTorch or in ONNX Runtime
    (``"ort"``: each exported once; the dense export is kept for every later pair). Each latency is the fastest of
    ``repeats`` runs: other jobs on the machine only add time, and a search compares many pairs, so a median that
    one busy stretch shifts would rank candidates by the machine's load rather than by their cost.

    ``"cuda"`` / ``"cuda-bf16"`` / ``"cuda-fp16"``: on the GPU (CUDA events, warm-up until stable, autocast dtype,
    channels-last), the median of its timed runs (a GPU is not shared, and the median is what the report shows);
    ``timer`` replaces the CUDA events, and the models then run on the inputs' device (a CPU test)."""
    x = inputs[0]
    shape, batch = InputSpec.from_example(inputs), int(x.shape[0])
    _, cuda = parse_runtime(runtime)
    if cuda is not None:
        def on_gpu(dense: nn.Module, twin: nn.Module) -> Tuple[float, float]:
            (a, _), (b, _) = measure_cuda_latency_together([dense, twin], shape, (batch,), cuda,
                                                           device=x.device if timer else None, timer=timer)
            return a[batch], b[batch]

        return on_gpu
    if runtime not in ("eager", "ort"):
        raise ConfigError(f"runtime={runtime!r}: latency is timed in 'eager' (PyTorch), 'ort' (ONNX Runtime) or "
                          "'cuda' (the GPU; 'cuda-bf16' / 'cuda-fp16' under autocast)")
    exported: Dict[int, nn.Module] = {}

    def deployed(model: nn.Module, keep: bool) -> nn.Module:
        if runtime == "eager":
            return model
        if keep and id(model) in exported:
            return exported[id(model)]
        ort = OrtModule(model, shape)
        if keep:
            exported[id(model)] = ort
        return ort

    def fn(dense: nn.Module, twin: nn.Module) -> Tuple[float, float]:
        (a, _), (b, _) = measure_latency_together([deployed(dense, True), deployed(twin, False)], shape, (batch,),
                                                  warmup=2, repeats=repeats, device=x.device, summary=min)
        return a[batch], b[batch]

    return fn


@dataclass
class Candidate:
    """One timed candidate: ``blocks`` removed, then ``ratio`` of every group's channels; ``dense_ms`` is the dense
    model timed right before it."""

    arm: str
    blocks: int
    ratio: float
    macs: int
    params: int
    ms: float
    dense_ms: float
    confirm: Optional[float] = None  # the reduction a second timing gave (only the candidates re-timed)

    @property
    def reduction(self) -> float:
        """Fraction of the (paired) dense latency removed."""
        return 1.0 - self.ms / self.dense_ms

    def row(self) -> Dict[str, Any]:
        return {**asdict(self), "ms": round(self.ms, 3), "dense_ms": round(self.dense_ms, 3),
                "reduction": round(self.reduction, 4)}


@dataclass
class LatencyTarget:
    """The chosen candidate, every candidate timed, and how blocks were ranked."""

    target: float
    chosen: Candidate
    candidates: List[Candidate]
    depth_criterion: str
    tol: float
    dense_macs: int
    dense_params: int
    blocks_available: int = 0
    notes: List[str] = field(default_factory=list)

    def plan_kwargs(self) -> Dict[str, Any]:
        """``make_plan`` arguments of the chosen candidate."""
        if not self.chosen.blocks:
            return {"ratio": self.chosen.ratio}
        return {"ratio": self.chosen.ratio, "depth_blocks": self.chosen.blocks, "depth_criterion": self.depth_criterion}

    def record(self) -> Dict[str, Any]:
        """What a result JSON keeps: target, chosen arm, why, and every candidate."""
        c = self.chosen
        return {"requested": round(self.target, 6), "requested_factor": round(1 / (1 - self.target), 3),
                "reached": round(c.reduction, 4), "reached_factor": round(c.dense_ms / c.ms, 3),
                "reached_again": c.confirm, "tol": self.tol,
                "arm": c.arm, "blocks": c.blocks, "ratio": c.ratio, "blocks_available": self.blocks_available,
                "depth_criterion": self.depth_criterion, "dense_ms": round(c.dense_ms, 3), "ms": round(c.ms, 3),
                "macs_removed": round(1 - c.macs / self.dense_macs, 4),
                "params_removed": round(1 - c.params / self.dense_params, 4), "why": WHY, "notes": self.notes,
                "candidates": [k.row() for k in self.candidates]}


def latency_target(model: nn.Module, example_inputs: Any, target: float, latency_fn: Optional[LatencyFn] = None,
                   depth_criterion: str = "magnitude", tol: float = 0.01, mixes: int = 3, max_ratio: float = 0.9,
                   width_trials: int = 6, pair_fn: Optional[PairFn] = None, runtime: str = "eager",
                   **plan_kwargs: Any) -> LatencyTarget:
    """The candidate (blocks, channel ratio) removing ``target`` of the measured latency that keeps the most MACs.

    ``pair_fn(dense, candidate) -> (ms, ms)`` times the two (default: :func:`paired_timer`, eager, at the example's
    batch size, in ``runtime``: eager, ort or cuda[-bf16|-fp16]); or ``latency_fn(model) -> ms`` times one model
    at a time (a fake one makes tests deterministic). ``plan_kwargs`` are ``make_plan`` options every candidate
    shares (round_to, ignore, data for data-driven block criteria).
    ``mixes``: how many block counts below the depth arm's also get a channel ratio (0 = width alone among them).
    A candidate reaches the target when it removes at least ``target - tol``. Raises ConfigError when none does.
    """
    if not 0.0 < target < 1.0:
        raise ConfigError(f"latency target {target} must be a fraction in (0, 1), e.g. latency=2x or latency=0.5")
    inputs = plan_inputs(example_inputs)
    shape = InputSpec.from_example(inputs)  # what the model takes (token ids stay ints), per sample
    if pair_fn is None:
        pair_fn = paired_timer(inputs, runtime) if latency_fn is None else \
            lambda a, b: (latency_fn(a), latency_fn(b))
    kwargs = {k: v for k, v in plan_kwargs.items()
              if k not in ("ratio", "depth", "depth_blocks", "depth_criterion", "scope", "criterion")}
    graph = build_graph(model, inputs, ignore=list(kwargs.get("ignore", ())))
    candidates: List[Candidate] = []
    seen: Dict[tuple, float] = {}  # (blocks, MACs, params) -> reduction: a ratio that rounds to widths already timed

    def build(blocks: int, ratio: float) -> nn.Module:
        return pruned_copy(model, inputs, graph, ratio=ratio, depth_blocks=blocks, depth_criterion=depth_criterion,
                           **kwargs)

    def timed(arm: str, blocks: int, ratio: float) -> float:
        twin = build(blocks, ratio)
        size = (blocks, count_macs(twin, shape)[0], count_params(twin))
        if size not in seen:
            dense_ms, ms = pair_fn(model, twin)
            candidates.append(Candidate(arm, blocks, round(ratio, 4), size[1], size[2], ms, dense_ms))
            seen[size] = candidates[-1].reduction
        return seen[size]

    n_all = len(graph.residual_blocks)
    depth_red = {0: 0.0}
    for n in range(1, n_all + 1):  # depth alone: the first block count that reaches the target
        depth_red[n] = timed("depth", n, 0.0)
        if depth_red[n] >= target - tol:
            break
    n_top = max(depth_red) if depth_red[max(depth_red)] >= target - tol else n_all + 1
    for n in _mix_counts(n_top, mixes):
        _fill_width(timed, "width" if n == 0 else "mix", n, depth_red.get(n, 0.0), target, tol, max_ratio,
                    width_trials)
    reached = sorted((c for c in candidates if c.reduction >= target - tol),
                     key=lambda c: (-c.macs, -c.params, c.blocks))  # most MACs kept first
    chosen = _confirmed(reached, build, model, pair_fn, target - tol)
    if chosen is None and reached:
        raise ConfigError(f"no candidate removing {target:.0%} of the measured latency held when timed again "
                          f"(re-timed: {', '.join(f'{c.confirm:.1%}' for c in reached[:CONFIRMS])}): the timings are "
                          "noisy here; time on a quiet machine (no other jobs) or ask for less")
    if chosen is None:
        best = max(candidates, key=lambda c: c.reduction)
        raise ConfigError(f"cannot remove {target:.0%} of the measured latency ({1 / (1 - target):.2f}x faster): the "
                          f"best candidate ({best.blocks} blocks, channel ratio {best.ratio}) removes "
                          f"{best.reduction:.1%} ({best.dense_ms / best.ms:.2f}x); ask for less, e.g. --reduce "
                          f"latency={max(1.05, 0.95 * best.dense_ms / best.ms):.2f}x")
    notes = [] if n_all else ["no removable (identity-residual) block: width alone"]
    return LatencyTarget(target, chosen, candidates, depth_criterion, tol, count_macs(model, shape)[0],
                         count_params(model), n_all, notes)


def _confirmed(ranked: List[Candidate], build: Callable[[int, float], nn.Module], model: nn.Module,
               pair_fn: PairFn, floor: float) -> Optional[Candidate]:
    """The first of ``ranked`` whose second timing also removes at least ``floor`` of the latency (its ``confirm``
    is set either way); None when none of the first ``CONFIRMS`` does."""
    for cand in ranked[:CONFIRMS]:
        dense_ms, ms = pair_fn(model, build(cand.blocks, cand.ratio))
        cand.confirm = round(1.0 - ms / dense_ms, 4)
        if cand.confirm >= floor:
            return cand
    return None


def _mix_counts(n_top: int, mixes: int) -> List[int]:
    """Block counts that get a channel ratio too: 0 (width alone) and up to ``mixes`` more, spread below
    ``n_top`` (the depth arm's count; every available count + 1 when depth alone falls short)."""
    if n_top <= 1 or mixes <= 0:
        return [0]
    picks = {round(i * (n_top - 1) / mixes) for i in range(1, mixes + 1)}
    return [0] + sorted(p for p in picks if 0 < p < n_top)


def _fill_width(timed: Callable[[str, int, float], float], arm: str, blocks: int, removed: float, target: float,
                tol: float, max_ratio: float, trials: int) -> None:
    """With ``blocks`` removed (``removed`` of the latency gone), the smallest channel ratio whose measured latency
    reaches ``target``: first guess as if latency fell like MACs, then stepped up or bracketed by measurement."""
    need = (target - removed) / (1.0 - removed)  # of what is left
    lo, red_lo = 0.0, removed
    hi = min(max_ratio, max(0.01, round(_shrink(need), 4)))
    red_hi = timed(arm, blocks, hi)
    while red_hi < target - tol:  # latency falls slower than MACs here: step up, extrapolated
        if hi >= max_ratio:
            return
        grow = _shrink(need) / max(_shrink((red_hi - removed) / (1.0 - removed)), 1e-6)
        lo, red_lo = hi, red_hi
        hi = min(max_ratio, round(max(hi * min(grow, 2.0), hi + 0.02), 4))  # at most doubled: one timing is noisy
        red_hi = timed(arm, blocks, hi)
    if red_hi > target + tol:
        _bracketed(lambda r: timed(arm, blocks, r), target, lo, hi, red_lo, red_hi,
                   lambda red: target - tol <= red <= target + tol, trials, 0.01, 0.02)  # finer is below the noise
