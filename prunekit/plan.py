"""The Plan: plain data saying which channels of which group (and which blocks) go.

Deciding (graph + criterion + target) and doing (``prunekit.apply.structured.apply_plan``) meet only here, so a
plan can be printed, saved as JSON, edited by hand and replayed on a fresh copy of the same architecture.

    plan = make_plan(model, torch.randn(1, 3, 224, 224), ratio=0.5, criterion="l2")
    print(plan)
    Plan.from_json(plan.to_json()) == plan
"""
from __future__ import annotations

import copy
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .errors import ConfigError, PrunekitError
from .graph import DependencyGraph, Group, build_graph, single_thread
from .measure.channel_multiple import AUTO, resolve_round_to

PLAN_FORMAT = "prunekit.plan/1"


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

    def example_inputs(self) -> Tuple[torch.Tensor, ...]:
        """Zero tensors of the recorded input shapes (enough to re-trace the model)."""
        return tuple(torch.zeros(s) for s in self.input_shapes)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["format"] = PLAN_FORMAT
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Plan":
        if d.get("format") != PLAN_FORMAT:
            raise ConfigError(f"not a prunekit plan (format={d.get('format')!r}); expected {PLAN_FORMAT!r}")
        return cls(groups=[GroupPlan(**g) for g in d["groups"]], input_shapes=d["input_shapes"],
                   blocks=list(d.get("blocks", [])), ignore=list(d.get("ignore", [])),
                   settings=dict(d.get("settings", {})), skipped=dict(d.get("skipped", {})))

    def to_json(self, indent: Optional[int] = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, s: str) -> "Plan":
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
              round_to: Union[None, int, str] = None, min_channels: int = 1, prune_heads: bool = False,
              depth: float = 0.0, data: Any = None, seed: int = 0, verify: bool = True,
              return_graph: bool = False, graph: Optional[DependencyGraph] = None,
              scores: Optional[Dict[str, torch.Tensor]] = None) -> Any:
    """Decide what to remove. ``ratio`` = fraction of channels removed per group (uniform) or overall (global).

    overrides: module-name prefix -> ratio for the groups produced there; ignore: modules kept whole;
    round_to: keep channel counts multiples of an int, or "auto" / "auto-ort" (the multiple eager PyTorch / ONNX
    Runtime runs fastest with, measured once on this device: ``prunekit.measure.channel_multiple``);
    prune_heads: remove whole attention heads instead of shrinking head_dim; depth: fraction of
    identity-residual blocks replaced by nn.Identity; verify: dry-run the plan on the meta device and leave
    whole any group whose removal breaks the forward (recorded in ``plan.skipped``); graph: the dependency graph of
    this very model built with the same ``ignore`` (from an earlier ``return_graph=True`` call), so repeated plans
    of one model, as a ratio search makes, trace it once; scores: that graph's ``score_groups`` for ``criterion``
    (data-driven criteria are then not rerun).
    """
    with single_thread():
        return _make_plan(model, example_inputs, ratio, criterion, scope, overrides, ignore, round_to,
                          min_channels, prune_heads, depth, data, seed, verify, return_graph, graph, scores)


def pruned_copy(model: nn.Module, example_inputs: Any, graph: DependencyGraph, **make_plan_kwargs: Any) -> nn.Module:
    """A pruned deep copy of ``model`` (planned with ``make_plan_kwargs`` on its traced ``graph``), the model left
    whole: what searches that compare many candidate plans of one model need."""
    from .apply.structured import apply_plan

    plan = make_plan(model, example_inputs, graph=graph, **make_plan_kwargs)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        apply_plan(twin, plan, graph=graph)
    return twin


def _make_plan(model: nn.Module, example_inputs: Any, ratio: float, criterion: str, scope: str,
               overrides: Optional[Dict[str, float]], ignore: Iterable[str], round_to: Union[None, int, str],
               min_channels: int, prune_heads: bool, depth: float, data: Any, seed: int, verify: bool,
               return_graph: bool, graph: Optional[DependencyGraph] = None,
               scores: Optional[Dict[str, torch.Tensor]] = None) -> Any:
    from .importance import score_groups

    _check(ratio, scope, min_channels, depth, round_to)
    ignore = list(ignore)
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    graph = graph if graph is not None else build_graph(model, inputs, ignore=ignore)
    multiple = resolve_round_to(round_to)
    if scores is None:
        scores = score_groups(graph, model, criterion, ctx={"data": data, "seed": seed})
    ratios = _group_ratios(graph, scores, ratio, scope, overrides or {})
    groups = []
    for g in graph.groups:
        if g.key not in scores or ratios.get(g.key, 0.0) <= 0:
            continue
        remove = select(g, scores[g.key], ratios[g.key], multiple, min_channels, prune_heads)
        if remove:
            groups.append(GroupPlan(g.key, g.module, g.size, remove))
    settings = dict(ratio=ratio, criterion=criterion, scope=scope, overrides=overrides or {}, round_to=multiple,
                    min_channels=min_channels, prune_heads=prune_heads, depth=depth, seed=seed)
    plan = Plan(groups, [list(x.shape) for x in inputs if isinstance(x, torch.Tensor)], ignore=ignore,
                settings=settings)
    if depth > 0:
        plan.blocks = _pick_blocks(graph, model, depth)
    if verify:
        _verify(model, plan, graph, inputs)
    return (plan, graph) if return_graph else plan


def _check(ratio: float, scope: str, min_channels: int, depth: float, round_to: Any) -> None:
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"ratio={ratio} is out of range; use a fraction in [0, 1), e.g. 0.5")
    if scope not in ("uniform", "global"):
        raise ConfigError(f"scope={scope!r} is unknown; use 'uniform' or 'global'")
    if min_channels < 1:
        raise ConfigError(f"min_channels={min_channels} must be >= 1")
    if not 0.0 <= depth < 1.0:
        raise ConfigError(f"depth={depth} is out of range; use a fraction of blocks in [0, 1)")
    if round_to not in (None, *AUTO) and not (isinstance(round_to, int) and round_to >= 1):
        raise ConfigError(f"round_to={round_to!r} must be None, a positive int, 'auto' (the multiple eager PyTorch "
                          "runs fastest with here) or 'auto-ort' (ONNX Runtime's)")


def _group_ratios(graph: DependencyGraph, scores: Dict[str, torch.Tensor], ratio: float, scope: str,
                  overrides: Dict[str, float]) -> Dict[str, float]:
    out = {g.key: ratio for g in graph.groups if g.key in scores}
    if scope == "global" and scores:
        flat = torch.cat([scores[k] for k in out])
        k = int(ratio * flat.numel())
        if k > 0:
            thresh = torch.kthvalue(flat, k).values
            for key in out:
                out[key] = min(float((scores[key] <= thresh).float().mean()), 0.9)
        else:
            out = {key: 0.0 for key in out}
    for g in graph.groups:
        best = ""
        for prefix, r in overrides.items():
            if (g.module == prefix or g.module.startswith(prefix + ".")) and len(prefix) >= len(best):
                best = prefix
                if not 0.0 <= r < 1.0:
                    raise ConfigError(f"override {prefix!r}={r} is out of range; use a fraction in [0, 1)")
                if g.key in out:
                    out[g.key] = r
    return out


def _keep_count(n: int, ratio: float, multiple: Optional[int], floor: int) -> int:
    keep = n - int(math.floor(ratio * n + 1e-9))
    if multiple and multiple > 1 and n >= multiple:
        keep = max(multiple, int(round(keep / multiple)) * multiple)
    return min(n, max(keep, floor))


def select(g: Group, scores: torch.Tensor, ratio: float, multiple: Optional[int], min_channels: int,
           prune_heads: bool) -> List[int]:
    """Indices of the lowest-scored channels to remove, honouring rows (heads/groups), pins and minimums."""
    pinned = g.pinned if g.pinned is not None else torch.zeros(g.size, dtype=torch.bool)
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
        keep = _keep_count(per_row, ratio, multiple if g.row_kind == "heads" else None, floor)
        for r in range(n_rows):
            order = torch.argsort(s[rows[r]], stable=True)
            remove += rows[r][order[: per_row - keep]].tolist()
    free = (~in_rows & ~pinned).nonzero().squeeze(1)
    if free.numel():
        n_free_drop = free.numel() - _keep_count(free.numel(), ratio, multiple, 1)
        remove += free[torch.argsort(s[free], stable=True)[:n_free_drop]].tolist()
    return sorted(remove)


def _pick_blocks(graph: DependencyGraph, model: nn.Module, depth: float) -> List[str]:
    """Lowest-magnitude identity-residual blocks (mean squared weight) to replace by identity."""
    cands = graph.residual_blocks
    n = int(depth * len(cands) + 0.5)
    if n <= 0:
        return []
    score = {}
    for name in cands:
        ps = [p.detach().float() for p in model.get_submodule(name).parameters()]
        score[name] = float(sum(p.square().sum() for p in ps) / max(1, sum(p.numel() for p in ps)))
    return sorted(sorted(cands, key=lambda c: score[c])[:n])


def _meta_copy(model: nn.Module) -> nn.Module:
    from .graph import meta_twin

    return meta_twin(model)


def _twin(model: nn.Module, inputs: Sequence[Any], real: bool) -> Tuple[nn.Module, Tuple[Any, ...]]:
    """A copy to dry-run a plan on, with its inputs: shapes only on the meta device, or (``real``, for a forward
    that needs values: a ``.item()``, data-dependent code) a deep copy on the model's own device."""
    if real:
        return copy.deepcopy(model).eval(), tuple(inputs)
    return _meta_copy(model).eval(), tuple(torch.empty_like(x, device="meta") if isinstance(x, torch.Tensor) else x
                                           for x in inputs)


def _dry_run(model: nn.Module, plan: Plan, graph: DependencyGraph, inputs: Sequence[Any],
             want: List[torch.Size], real: bool = False) -> Optional[str]:
    """None if the plan applies and the forward keeps the output shapes, else the error text."""
    from .apply.structured import apply_plan
    from .graph.trace import flatten_outputs

    try:
        twin, twin_in = _twin(model, inputs, real)
        apply_plan(twin, plan, graph=graph)
        with torch.no_grad():
            got = [t.shape for t in flatten_outputs(twin(*twin_in))]
    except PrunekitError:
        raise
    except Exception as e:  # any failure here means this plan cannot run
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return None if got == want else f"output shapes {got} != {want}"


def _without_groups(plan: Plan) -> Plan:
    bare = copy.copy(plan)
    bare.groups, bare.blocks = [], []
    return bare


def _verify(model: nn.Module, plan: Plan, graph: DependencyGraph, inputs: Sequence[Any]) -> None:
    """Leave whole the groups whose removal breaks the forward (found by bisection on the meta device, or on real
    copies for a model whose forward needs values; a warning when it runs on neither)."""
    was = model.training
    model.eval()
    want = graph.output_shapes  # shapes of the traced (eval-mode) forward
    real = False  # dry runs on the meta device until the unpruned model turns out not to run there
    try:
        if not want or graph.traced_in_training:
            want, real = _output_shapes(model, inputs)
            if want is None:
                return
        for attempt in range(64):
            err = _dry_run(model, plan, graph, inputs, want, real)
            if err is None:
                return
            if attempt == 0 and not real and _dry_run(model, _without_groups(plan), graph, inputs, want) is not None:
                real = True  # the unpruned model cannot run on meta (a .item(), data-dependent code): real copies
                bare = _dry_run(model, _without_groups(plan), graph, inputs, want, real)
                if bare is not None:
                    _not_verified(bare)
                    return
                continue
            lo, hi = 0, len(plan.groups)  # smallest prefix of groups that fails
            while hi - lo > 1:
                mid = (lo + hi) // 2
                trial = copy.copy(plan)
                trial.groups = plan.groups[:mid]
                if _dry_run(model, trial, graph, inputs, want, real) is None:
                    lo = mid
                else:
                    hi = mid
            if not plan.groups:
                if plan.blocks:
                    plan.skipped["blocks"] = err
                    plan.blocks = []
                    continue
                raise PrunekitError(f"pruned model does not run: {err}")
            bad = plan.groups.pop(hi - 1)
            plan.skipped[bad.key] = err
    finally:
        model.train(was)


def _output_shapes(model: nn.Module, inputs: Sequence[Any]) -> Tuple[Optional[List[torch.Size]], bool]:
    """(output shapes of the unpruned eval forward, whether it needed a real copy); (None, True) with a warning
    when it runs neither on meta nor on a real copy."""
    from .graph.trace import flatten_outputs

    for real in (False, True):
        try:
            twin, twin_in = _twin(model, inputs, real)
            with torch.no_grad():
                return [t.shape for t in flatten_outputs(twin(*twin_in))], real
        except Exception as e:  # e.g. a .item() on meta: try a real copy next
            err = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    _not_verified(err)
    return None, True


def _not_verified(err: str) -> None:
    warnings.warn(f"the pruning plan was not verified: the unpruned model does not run on a copy ({err}); a "
                  "group whose removal breaks the forward would go unnoticed")
