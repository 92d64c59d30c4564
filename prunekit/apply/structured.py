"""Physical structured pruning: a Plan in, a smaller ordinary nn.Module out.

    plan = make_plan(model, torch.randn(1, 3, 224, 224), ratio=0.5)
    apply_plan(model, plan)                     # in place; same module classes, smaller tensors

(``prunekit.apply.oneshot.prune_structured`` plans, dry-runs and applies in one call.)

``zero_channels`` is the soft form: it zeroes the planned channels without removing them, so removing
exactly-zero channels afterwards leaves the outputs unchanged (for BatchNorm-style networks).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from ..graph import DependencyGraph, build_graph, single_thread
from ..plan import Plan
from .structured_fix import fix_attributes, snapshot
from .structured_heads import fix_heads, head_drop

__all__ = ["apply_plan", "zero_channels",
           "channel_masks", "slices_for", "prune_optimizer_state"]

# (dim, keep indices) or ("grouped", dim, [keep indices per block])
SliceOp = Tuple[Any, ...]


def channel_masks(plan: Plan) -> Dict[str, torch.Tensor]:
    """Group key -> bool mask over its channels, True = kept."""
    masks = {}
    for gp in plan.groups:
        keep = torch.ones(gp.size, dtype=torch.bool)
        keep[list(gp.remove)] = False
        masks[gp.key] = keep
    return masks


def slices_for(graph: DependencyGraph, plan: Plan) -> Dict[Tuple[str, str, str], List[SliceOp]]:
    """(module, attr, kind) -> slicing ops that realise ``plan`` on that tensor/attribute."""
    drops: Dict[Tuple[str, str, str], Dict[Any, torch.Tensor]] = {}
    for key, keep in channel_masks(plan).items():
        try:
            g = graph.group(key)
        except KeyError:
            raise ConfigError(f"plan group {key!r} does not exist in this model; the plan was made for another "
                              f"architecture or input shape (replay it on the model it was made for)") from None
        if g.size != keep.numel():
            raise ConfigError(f"plan group {key!r} has {keep.numel()} channels but the model has {g.size}")
        for m, by_head in [(m, False) for m in g.members] + [(m, True) for m in g.head_members]:
            if by_head:  # a per-head slice (relative position bias): goes with its whole head
                drop = head_drop(g, keep, m.index)
            else:
                drop = (m.index >= 0) & ~keep[m.index.clamp(min=0)]
            kind = "param" if m.kind == "grouped_in" else m.kind
            entry = drops.setdefault((m.module, m.attr, kind), {})
            k = ("grouped", m.dim) if m.kind == "grouped_in" else m.dim
            entry[k] = entry[k] | drop if k in entry else drop
    ops: Dict[Tuple[str, str, str], List[SliceOp]] = {}
    for name, entry in drops.items():
        lst: List[SliceOp] = []
        for k, drop in sorted(entry.items(), key=lambda kv: 0 if isinstance(kv[0], tuple) else 1):
            if not bool(drop.any()):
                continue
            if isinstance(k, tuple):
                keeps = [(~row).nonzero().squeeze(1) for row in drop]
                if len({len(r) for r in keeps}) != 1:
                    raise ConfigError(f"plan keeps unequal channel counts per conv group in {name[0]!r}")
                lst.append(("grouped", k[1], keeps))
            else:
                lst.append((k, (~drop).nonzero().squeeze(1)))
        if lst:
            ops[name] = lst
    return ops


def slice_tensor(t: torch.Tensor, ops: List[SliceOp]) -> torch.Tensor:
    """Apply slicing ops (from ``slices_for``) to a tensor shaped like the original parameter."""
    plain = {op[0] % t.dim(): op[1].to(t.device) for op in ops if op[0] != "grouped"}
    for op in ops:
        if op[0] == "grouped":
            _, dim, keeps = op
            blocks = t.chunk(len(keeps), dim=0)
            t = torch.cat([b.index_select(dim, k.to(t.device)) for b, k in zip(blocks, keeps)], 0)
    if len(plain) == 1:
        (dim, keep), = plain.items()
        return t.index_select(dim, keep)
    if plain:  # one gather for all dims instead of a full copy per dim
        last = max(plain)
        index = []
        for d in range(last + 1):
            idx = plain.get(d, torch.arange(t.shape[d], device=t.device))
            index.append(idx.view([-1] + [1] * (last - d)))
        t = t[tuple(index)]
    return t


def apply_plan(model: nn.Module, plan: Plan, graph: Optional[DependencyGraph] = None,
               optimizer: Optional[torch.optim.Optimizer] = None) -> nn.Module:
    """Remove the planned channels and blocks from ``model`` in place and return it.

    ``graph`` skips re-tracing when it was built from this very model; ``optimizer`` (optional) gets its
    parameters swapped and its state (momentum, Adam moments) sliced the same way, so training can go on.
    """
    with single_thread():
        return _apply(model, plan, graph, optimizer)


def _apply(model: nn.Module, plan: Plan, graph: Optional[DependencyGraph],
           optimizer: Optional[torch.optim.Optimizer]) -> nn.Module:
    if graph is None:
        graph = build_graph(model, plan.example_inputs(), ignore=plan.ignore)
    ops = slices_for(graph, plan)
    old_attrs = snapshot(model)
    modules = dict(model.named_modules())
    swapped: Dict[int, nn.Parameter] = {}
    replaced: List[torch.Tensor] = []
    all_ops: Dict[int, List[SliceOp]] = {}
    with torch.no_grad():
        for (mname, attr, kind), lst in ops.items():
            mod = modules[mname]
            if kind == "attr":
                dim, keep = lst[-1][0], lst[-1][1]
                setattr(mod, attr, (int(keep.numel()),))
                continue
            t = getattr(mod, attr)
            new = slice_tensor(t.data, lst).contiguous()
            if isinstance(t, nn.Parameter):
                p = nn.Parameter(new, requires_grad=t.requires_grad)
                mod._parameters[attr] = p
                swapped[id(t)] = p
                replaced.append(t)  # alive until the end, so its id cannot be reused by a new tensor
                all_ops[id(t)] = lst
            else:
                mod._buffers[attr] = new
    for mod in model.modules():  # tied weights (GPT-2's lm_head is wte): every holder gets the sliced tensor
        for attr, p in mod._parameters.items():
            if p is not None and id(p) in swapped:
                mod._parameters[attr] = swapped[id(p)]
    fix_heads(model, graph, channel_masks(plan), modules, old_attrs)
    fix_attributes(model, old_attrs)
    for block in plan.blocks:
        _replace(model, block, nn.Identity())
    if optimizer is not None:
        carry_optimizer_state(optimizer, swapped, all_ops)
    return model


def prune_optimizer_state(optimizer: torch.optim.Optimizer, swapped: Dict[int, nn.Parameter],
                          ops: Dict[int, List[SliceOp]]) -> None:
    """Lower-level form of ``apply_plan(..., optimizer=...)`` (old param id -> new param, slicing ops)."""
    carry_optimizer_state(optimizer, swapped, ops)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def zero_channels(model: nn.Module, plan: Plan, graph: Optional[DependencyGraph] = None,
                  only: Optional[Callable[[Any, nn.Module], bool]] = None) -> nn.Module:
    """Zero every coupled slice of the planned channels (parameters only) without removing them.

    ``only(member, module)`` restricts the zeroing to some slices, e.g. the producing filters alone (soft filter
    pruning as He et al. 2018 do it, leaving BatchNorm and the next layer alive so gradients can rebuild them).
    """
    if graph is None:
        graph = build_graph(model, plan.example_inputs(), ignore=plan.ignore)
    masks = channel_masks(plan)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for g in graph.groups:
            if g.key not in masks:
                continue
            keep = masks[g.key]
            for m in g.members:
                if m.kind not in ("param", "grouped_in") or (only is not None and not only(m, modules[m.module])):
                    continue
                t = getattr(modules[m.module], m.attr)
                drop = (m.index >= 0) & ~keep[m.index.clamp(min=0)]
                if m.kind == "grouped_in":
                    blocks = t.chunk(drop.shape[0], dim=0)
                    for b, row in zip(blocks, drop):
                        b.index_fill_(m.dim, row.nonzero().squeeze(1).to(t.device), 0.0)
                elif bool(drop.any()):
                    t.index_fill_(m.dim, drop.nonzero().squeeze(1).to(t.device), 0.0)
    return model


def carry_optimizer_state(optimizer: torch.optim.Optimizer, swapped: Dict[int, nn.Parameter],
                          ops: Dict[int, list]) -> None:
    """Point ``optimizer`` at the new parameters and slice its per-parameter state the same way."""
    for group in optimizer.param_groups:
        new_params = []
        for p in group["params"]:
            q = swapped.get(id(p))
            if q is None:
                new_params.append(p)
                continue
            state = optimizer.state.pop(p, None)
            if state:
                optimizer.state[q] = {
                    k: slice_tensor(v, ops[id(p)]) if isinstance(v, torch.Tensor) and v.shape == p.shape else v
                    for k, v in state.items()
                }
            new_params.append(q)
        group["params"] = new_params
