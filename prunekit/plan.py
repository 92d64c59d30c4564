"""The Plan: plain data saying which channels of which group (and which blocks) go.

Deciding (graph + criterion + target) and doing (``prunekit.apply.structured.apply_plan``) meet only here, so a
plan can be printed, saved as JSON, edited by hand and replayed on a fresh copy of the same architecture.

    plan = make_plan(model, torch.randn(1, 3, 224, 224), ratio=0.5, criterion="l2")
    print(plan)
    Plan.from_json(plan.to_json()) == plan
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from .errors import ConfigError
from .graph import DependencyGraph, Group, build_graph, single_thread, within
from .importance import score_blocks, score_groups

PLAN_FORMAT = "prunekit.plan/1"
MAX_GROUP_RATIO = 0.9  # the global scope never takes more than this share of a group's (original) width


@dataclass
class GroupPlan:
    """Remove channels ``remove`` (indices into the group's ``size`` channels) of group ``key``."""

    key: str
    module: str
    size: int
    remove: List[int]


@dataclass
class Plan:
    groups: List[GroupPlan]
    input_shapes: List[List[int]]
    blocks: List[str] = field(default_factory=list)  # residual blocks replaced by identity (depth mode)
    ignore: List[str] = field(default_factory=list)
    settings: Dict[str, Any] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)  # group key -> why it was left whole
    input_dtypes: List[str] = field(default_factory=list)  # "float32", "int64" (token ids) ... per input

    def example_inputs(self) -> Tuple[torch.Tensor, ...]:
        """Zero tensors of the recorded input shapes and dtypes (enough to re-trace the model; token id 0 is valid)."""
        dtypes = self.input_dtypes or ["float32"] * len(self.input_shapes)
        return tuple(torch.zeros(s, dtype=getattr(torch, d)) for s, d in zip(self.input_shapes, dtypes))

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able data, tagged with the plan format so a reader can refuse anything else."""
        d = asdict(self)
        d["format"] = PLAN_FORMAT
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Plan":
        """The plan ``to_dict`` wrote; a dict of another format is refused (ConfigError)."""
        if d.get("format") != PLAN_FORMAT:
            raise ConfigError(f"not a prunekit plan (format={d.get('format')!r}); expected {PLAN_FORMAT!r}")
        return cls(groups=[GroupPlan(**g) for g in d["groups"]], input_shapes=d["input_shapes"],
                   blocks=list(d.get("blocks", [])), ignore=list(d.get("ignore", [])),
                   settings=dict(d.get("settings", {})), skipped=dict(d.get("skipped", {})),
                   input_dtypes=list(d.get("input_dtypes", [])))

    def to_json(self, indent: Optional[int] = None) -> str:
        """The plan as JSON: save it, edit it by hand, replay it with ``apply_plan`` on a fresh copy."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, s: str) -> "Plan":
        """The plan ``to_json`` wrote; malformed JSON is a ConfigError naming the problem."""
        try:
            return cls.from_dict(json.loads(s))
        except json.JSONDecodeError as e:
            raise ConfigError(f"plan JSON is not valid JSON: {e}") from None

    def __str__(self) -> str:
        total = sum(g.size for g in self.groups)
        removed = sum(len(g.remove) for g in self.groups)
        lines = [f"Plan: {len(self.groups)} groups, {removed}/{total} channels removed "
                 f"({self.settings.get('criterion', '?')}, {self.settings.get('scope', '?')}, "
                 f"ratio {self.settings.get('ratio', '?')})"]
        if self.blocks:
            lines[0] += f"; {len(self.blocks)} blocks removed ({self.settings.get('depth_criterion', 'magnitude')})"
        width = max([len(g.module) for g in self.groups] + [5])
        for g in self.groups:
            lines.append(f"  {g.module:<{width}}  {g.size:>5} -> {g.size - len(g.remove):>5}")
        for b in self.blocks:
            lines.append(f"  {b:<{width}}  block -> identity")
        for k, why in self.skipped.items():
            lines.append(f"  {k}: left whole ({why})")
        return "\n".join(lines)


def make_plan(model: nn.Module, example_inputs: Any, ratio: float = 0.5, criterion: str = "l2",
              scope: str = "uniform", overrides: Optional[Dict[str, float]] = None, ignore: Iterable[str] = (),
              round_to: Optional[int] = None, min_channels: int = 1, prune_heads: bool = False,
              prune_hidden: bool = True, depth: float = 0.0, data: Any = None, seed: int = 0,
              depth_blocks: Optional[int] = None, depth_criterion: str = "magnitude",
              return_graph: bool = False, graph: Optional[DependencyGraph] = None,
              scores: Optional[Dict[str, torch.Tensor]] = None, original: Optional[Dict[str, int]] = None) -> Any:
    """Decide what to remove. ``ratio`` = fraction of channels removed per group (uniform) or overall (global).

    overrides: module-name prefix -> ratio for the groups produced there; ignore: modules kept whole;
    round_to: keep channel counts multiples of this int (a measured "auto" multiple is resolved before, by
    ``prunekit.allocate.resolve_round_to``);
    prune_heads: remove whole attention heads instead of shrinking head_dim (heads whose dims cannot go one by one,
    under RoPE or grouped-query attention, always go whole); prune_hidden=False keeps whole every group that a
    LayerNorm/RMSNorm/GroupNorm normalizes (a transformer's hidden size, ConvNeXt's stage widths), whose removal is
    never exact, so what is removed (heads, MLP neurons, BatchNorm channels) leaves the function unchanged where its
    weights were zero; depth: fraction of
    identity-residual blocks replaced by nn.Identity (or ``depth_blocks``: how many), the lowest first by the block
    criterion ``depth_criterion`` (``prunekit.importance.BLOCK_CRITERIA``: magnitude, contribution, skip_loss;
    the data-driven ones run on ``data``, else on ``example_inputs``); graph: the dependency graph of
    this very model built with the same ``ignore`` (from an earlier ``return_graph=True`` call), so repeated plans
    of one model, as a ratio search makes, trace it once; scores: that graph's ``score_groups`` for ``criterion``
    (data-driven criteria are then not rerun); original: group key -> width before any pruning, for a model that
    earlier rounds already shrank (the schedules): every ratio then counts against the original width, so a group of
    64 at 0.5 ends with 32 whether it got there in one round or five, and one-shot and scheduled pruning leave the
    same widths (round_to and the global scope's rule included).

    The plan is not yet checked against the model's forward: ``prunekit.apply.checked_plan`` (what
    ``prune_structured`` uses) dry-runs it on the meta device and leaves whole any group whose removal breaks it.
    """
    with single_thread():
        plan, graph = _make_plan(model, example_inputs, ratio, criterion, scope, overrides, ignore, round_to,
                                 min_channels, prune_heads, depth, data, seed, graph, scores, prune_hidden, original)
        if depth > 0 or depth_blocks:
            plan.blocks, block_scores = _pick_blocks(graph, model, depth, depth_blocks, depth_criterion,
                                                     {"data": data, "example": plan_inputs(example_inputs)})
            plan.settings.update(depth_blocks=len(plan.blocks), depth_criterion=depth_criterion,
                                 depth_scores=block_scores)
    return (plan, graph) if return_graph else plan


def plan_inputs(example_inputs: Any) -> Tuple[Any, ...]:
    """``example_inputs`` as a tuple (one tensor is one input)."""
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


def _make_plan(model: nn.Module, example_inputs: Any, ratio: float, criterion: str, scope: str,
               overrides: Optional[Dict[str, float]], ignore: Iterable[str], round_to: Optional[int],
               min_channels: int, prune_heads: bool, depth: float, data: Any, seed: int,
               graph: Optional[DependencyGraph] = None,
               scores: Optional[Dict[str, torch.Tensor]] = None,
               prune_hidden: bool = True, original: Optional[Dict[str, int]] = None) -> Tuple[Plan, DependencyGraph]:
    _check(ratio, scope, min_channels, depth, round_to)
    ignore = list(ignore)
    inputs = plan_inputs(example_inputs)
    graph = graph if graph is not None else build_graph(model, inputs, ignore=ignore)
    multiple = round_to
    if scores is None and (ratio > 0 or overrides):  # depth alone (ratio 0) needs no channel scores
        scores = score_groups(graph, model, criterion, ctx={"data": data, "seed": seed})
    scores = scores or {}
    if not prune_hidden:
        normalized = {g.key for g in graph.groups if g.normalized}
        scores = {k: v for k, v in scores.items() if k not in normalized}
    ratios = _group_ratios(graph, scores, ratio, scope, overrides or {}, original or {})
    groups = []
    for g in graph.groups:
        if g.key not in scores or ratios.get(g.key, 0.0) <= 0:
            continue
        remove = select(g, scores[g.key], ratios[g.key], multiple, min_channels, prune_heads)
        if remove:
            groups.append(GroupPlan(g.key, g.module, g.size, remove))
    settings = dict(ratio=ratio, criterion=criterion, scope=scope, overrides=overrides or {}, round_to=multiple,
                    min_channels=min_channels, prune_heads=prune_heads, prune_hidden=prune_hidden, depth=depth,
                    seed=seed)
    tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
    plan = Plan(groups, [list(x.shape) for x in tensors], ignore=ignore, settings=settings,
                input_dtypes=[str(x.dtype).removeprefix("torch.") for x in tensors])
    return plan, graph


def _check(ratio: float, scope: str, min_channels: int, depth: float, round_to: Any) -> None:
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"ratio={ratio} is out of range; use a fraction in [0, 1), e.g. 0.5")
    if scope not in ("uniform", "global"):
        raise ConfigError(f"scope={scope!r} is unknown; use 'uniform' or 'global'")
    if min_channels < 1:
        raise ConfigError(f"min_channels={min_channels} must be >= 1")
    if not 0.0 <= depth < 1.0:
        raise ConfigError(f"depth={depth} is out of range; use a fraction of blocks in [0, 1)")
    check_round_to(round_to)


def check_round_to(round_to: Any) -> None:
    """Refuse a ``round_to`` that is not None or a positive int (a string names the resolver to call first)."""
    if round_to is not None and not (isinstance(round_to, int) and not isinstance(round_to, bool) and round_to >= 1):
        hint = (f"; resolve it first: make_plan(..., round_to=prunekit.allocate.resolve_round_to({round_to!r}))"
                if isinstance(round_to, str) else "")
        raise ConfigError(f"round_to={round_to!r} must be None or a positive int{hint}")


def on_current(ratio: float, size0: int, size: int) -> float:
    """``ratio`` of the original width ``size0`` as the ratio of the current width ``size`` that keeps as many
    channels (``size0 - floor(ratio * size0)``); ``ratio`` itself while the group is whole."""
    return ratio if size == size0 else max(0.0, 1.0 - (1.0 - ratio) * size0 / size)


def _group_ratios(graph: DependencyGraph, scores: Dict[str, torch.Tensor], ratio: float, scope: str,
                  overrides: Dict[str, float], original: Dict[str, int]) -> Dict[str, float]:
    """Per group, the ratio of its current width to remove: ``ratio`` (uniform) or one threshold over all scores
    (global, at most ``MAX_GROUP_RATIO`` of a group), overridden per module prefix; every ratio asked counts against
    the ``original`` width (default: the current one)."""
    size = {g.key: g.size for g in graph.groups if g.key in scores}
    size0 = {key: original.get(key, n) for key, n in size.items()}
    out = {key: on_current(ratio, size0[key], n) for key, n in size.items()}
    if scope == "global" and scores:
        flat = torch.cat([scores[k] for k in out])
        total0 = sum(size0.values())
        k = flat.numel() - (total0 - math.floor(ratio * total0 + 1e-9))  # 0.7 * 1440 is 1008, not 1007.99..
        if k > 0:
            thresh = torch.kthvalue(flat, k).values
            for key in out:
                below = int((scores[key] <= thresh).sum())  # counted exactly (a float32 mean lost a channel)
                out[key] = min(below / size[key], on_current(MAX_GROUP_RATIO, size0[key], size[key]))
        else:
            out = {key: 0.0 for key in out}
    for g in graph.groups:
        best = ""
        for prefix, r in overrides.items():
            if within(g.module, prefix) and len(prefix) >= len(best):
                best = prefix
                if not 0.0 <= r < 1.0:
                    raise ConfigError(f"override {prefix!r}={r} is out of range; use a fraction in [0, 1)")
                if g.key in out:
                    out[g.key] = on_current(r, size0[g.key], size[g.key])
    return out


def _keep_count(n: int, ratio: float, multiple: Optional[int], floor: int) -> int:
    keep = n - int(math.floor(ratio * n + 1e-9))
    if multiple and multiple > 1 and n >= multiple:
        keep = max(multiple, int(round(keep / multiple)) * multiple)
    return min(n, max(keep, floor))


def select(g: Group, scores: torch.Tensor, ratio: float, multiple: Optional[int], min_channels: int,
           prune_heads: bool) -> List[int]:
    """Indices of the lowest-scored channels to remove, honouring rows (heads/groups), pins and minimums.

    Whole attention heads go (q, k and v rows of each together) when ``prune_heads`` asks for it or when some of the
    heads' dims cannot go one by one (RoPE rotates them by a fixed table; every head keeps one width, so then no dim
    goes alone), or when the dims set the attention scale (SDPA's default 1/sqrt(head size)) in a group that is
    otherwise removed exactly.
    """
    soft = g.dim_pinned if g.dim_pinned is not None else torch.zeros(g.size, dtype=torch.bool)
    whole = prune_heads or bool(soft[[c for h in g.heads for c in h]].any()) if g.heads else False
    if g.heads and (whole or (g.prefer_whole_heads and not g.normalized)):
        return _select_heads(g, scores, ratio)
    pinned = g.hard_pins() | soft
    s = scores.clone()
    s[pinned] = float("inf")
    if g.rows is None:
        keep = _keep_count(g.size, ratio, multiple, max(min_channels, int(pinned.sum())))
        order = torch.argsort(s, stable=True)
        return sorted(order[: g.size - keep].tolist())
    rows = g.rows
    n_rows, per_row = rows.shape
    if bool(pinned[rows].any()):
        return []
    in_rows = torch.zeros(g.size, dtype=torch.bool)
    in_rows[rows.reshape(-1)] = True
    remove: List[int] = []
    if prune_heads and g.row_kind == "heads" and g.scopes:
        heads = g.scopes[0][1][-2]
        head_of = torch.arange(n_rows) % heads
        head_score = torch.zeros(heads).index_add_(0, head_of, s[rows].sum(1))
        n_drop = min(heads - 1, int(math.floor(ratio * heads + 1e-9)))
        drop = torch.argsort(head_score, stable=True)[:n_drop]
        for r in range(n_rows):
            if int(head_of[r]) in drop.tolist():
                remove += rows[r].tolist()
    else:
        floor = max(1, math.ceil(min_channels / n_rows))
        # heads: each head's width is the multiple; other rows (grouped convs): the rows' total is
        row_multiple = multiple if g.row_kind == "heads" or not multiple else multiple // math.gcd(multiple, n_rows)
        keep = _keep_count(per_row, ratio, row_multiple, floor)
        for r in range(n_rows):
            order = torch.argsort(s[rows[r]], stable=True)
            remove += rows[r][order[: per_row - keep]].tolist()
    free = (~in_rows & ~pinned).nonzero().squeeze(1)
    if free.numel():
        n_free_drop = free.numel() - _keep_count(free.numel(), ratio, multiple, 1)
        remove += free[torch.argsort(s[free], stable=True)[:n_free_drop]].tolist()
    return sorted(remove)


def _select_heads(g: Group, scores: torch.Tensor, ratio: float) -> List[int]:
    """Channels of the lowest-scored whole heads (score = sum over the head's q, k and v channels); one head stays."""
    assert g.heads is not None
    removable = g.removable_heads()
    n = len(g.heads)
    n_drop = min(len(removable), n - 1, int(math.floor(ratio * n + 1e-9)))
    head_score = {i: float(scores[g.heads[i]].sum()) for i in removable}
    drop = sorted(removable, key=lambda i: (head_score[i], i))[:n_drop]
    return sorted(c for i in drop for c in g.heads[i])


def _pick_blocks(graph: DependencyGraph, model: nn.Module, depth: float, depth_blocks: Optional[int],
                 criterion: str, ctx: Dict[str, Any]) -> Tuple[List[str], Dict[str, float]]:
    """The lowest-scored identity-residual blocks (``depth_blocks`` of them, else ``depth`` of the candidates) to
    replace by identity, and every candidate's score."""
    cands = graph.residual_blocks
    if depth > 0 and depth_blocks:
        raise ConfigError(f"give depth={depth} (a fraction of blocks) or depth_blocks={depth_blocks}, not both")
    if not cands:
        raise ConfigError("depth pruning found no identity-residual blocks (output = input + f(input)) in this "
                          "model; prune channels instead (ratio / reduce)")
    n = depth_blocks if depth_blocks else int(depth * len(cands) + 0.5)
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= len(cands):
        raise ConfigError(f"depth_blocks={n} is out of range; this model has {len(cands)} removable blocks")
    score = score_blocks(model, cands, criterion, ctx)
    order = sorted(cands, key=lambda c: (score[c], c))
    return sorted(order[:n]), {c: score[c] for c in cands}
