"""Attention modules after their heads were pruned: head count, head size and all-head width follow the weights.

Attention forwards reshape projections with a head size or head count kept as a module attribute
(``transformers``: ``attention_head_size`` / ``head_dim`` with ``-1`` heads; torchvision/timm: ``num_heads``,
``head_dim``); a model's ``config`` repeats them. The graph records which module split which channels into heads
(``Group.scopes``); here every such attribute that held the old value gets the new one, so the pruned module is
an ordinary module of the same class whose attributes agree with its weights. A config is updated where all
layers agree (a uniform plan); where they differ a PruningWarning says the config value is stale, and the per-layer
widths live in the modules and the saved structure.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Tuple

import torch
from torch import nn

from ..errors import PruningWarning
from ..graph import DependencyGraph, Group

HEAD_SIZE = ("head_dim", "attention_head_size", "head_size", "dim_per_head")
HEAD_COUNT = ("num_heads", "num_attention_heads", "n_heads", "n_head", "num_key_value_heads")
ALL_HEADS = ("all_head_size", "attn_dim", "split_size", "inner_dim")
INTERMEDIATE = ("intermediate_size", "n_inner", "hidden_dim", "ffn_dim", "mlp_dim")


def head_drop(g: Group, keep: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Positions of a head-indexed slice (``Group.head_members``) to drop: those whose head lost every channel."""
    assert g.heads is not None
    gone = torch.tensor([not bool(keep[h].any()) for h in g.heads], dtype=torch.bool)
    return (index >= 0) & gone[index.clamp(min=0)]


def _alive(g: Group, keep: torch.Tensor) -> Tuple[int, int]:
    """(heads that keep a channel, heads)."""
    if g.heads:
        return sum(1 for h in g.heads if bool(keep[h].any())), len(g.heads)
    assert g.rows is not None
    return int((keep[g.rows].sum(1) > 0).sum()), g.rows.shape[0]


def fix_heads(model: nn.Module, graph: DependencyGraph, masks: Dict[str, torch.Tensor],
              modules: Dict[str, nn.Module], old_attrs: Dict[str, Dict[str, object]]) -> None:
    """Set the head attributes of every attention module whose heads a plan changed (and the model config)."""
    updates: Dict[str, Dict[str, int]] = {}
    heads_after: Dict[str, List[Tuple[int, int]]] = {}
    for g in graph.groups:
        if g.key not in masks or not g.scopes or (g.rows is None and not g.heads):
            continue
        keep = masks[g.key]
        alive, total = _alive(g, keep)
        per_row = int(keep[g.rows].sum(1).max()) if g.rows is not None else None
        for scope, shape in g.scopes:
            mod = modules.get(scope)
            if mod is None or len(shape) < 2:
                continue
            heads, head_dim = shape[-2], shape[-1]
            new_heads, new_dim = heads * alive // total, per_row if per_row is not None else head_dim
            vals = updates.setdefault(scope, {})
            for names, old, new in ((HEAD_SIZE, head_dim, new_dim), (HEAD_COUNT, heads, new_heads),
                                    (ALL_HEADS, heads * head_dim, new_heads * new_dim)):
                for a in names:
                    if getattr(mod, a, None) == old and not isinstance(getattr(mod, a), bool):
                        vals[a] = new
            heads_after.setdefault(scope, []).append((heads, new_heads))
            updates[scope]["_head_dim"] = new_dim
    for scope, vals in updates.items():
        for a, v in vals.items():
            if not a.startswith("_"):
                setattr(modules[scope], a, v)
    _fix_config(model, updates, heads_after, modules, old_attrs)


def _fix_config(model: nn.Module, updates: Dict[str, Dict[str, int]], heads_after: Dict[str, List[Tuple[int, int]]],
                modules: Dict[str, nn.Module], old_attrs: Dict[str, Dict[str, object]]) -> None:
    """A ``transformers`` config follows the pruned widths where every layer agrees."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return
    if any(p.is_meta for p in model.parameters()):  # a dry run's shape-only twin shares its config with the model
        return
    if heads_after:
        q = {max(p)[1] for p in heads_after.values()}  # the query view has the most heads
        kv = {min(p)[1] for p in heads_after.values()}
        _set_if_one(config, "num_attention_heads", q)
        if isinstance(getattr(config, "num_key_value_heads", None), int):
            _set_if_one(config, "num_key_value_heads", kv)
        if isinstance(getattr(config, "head_dim", None), int):
            _set_if_one(config, "head_dim", {v["_head_dim"] for v in updates.values()})
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if isinstance(embed, nn.Embedding):  # its weight is already sliced; its attributes are fixed after this
        width = int(embed.weight.shape[1])
        for name in ("hidden_size", "dim"):
            if isinstance(getattr(config, name, None), int) and width != getattr(config, name):
                setattr(config, name, width)
                break
    for name in INTERMEDIATE:
        old = getattr(config, name, None)
        if isinstance(old, int) and not isinstance(old, bool):
            widths = {_out_width(modules[m]) for m, attrs in old_attrs.items()
                      if m in modules and old in (attrs.get("out_features"), attrs.get("nf"))}
            _set_if_one(config, name, widths - {None})


def _out_width(mod: nn.Module) -> int | None:
    w = getattr(mod, "weight", None)
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        return None
    return int(w.shape[1]) if type(mod).__name__ == "Conv1D" else int(w.shape[0])


def _set_if_one(config: object, name: str, values: set) -> None:
    """Set ``config.name`` when every layer agrees; when they differ, say that the config keeps a stale value."""
    current = getattr(config, name)
    if isinstance(current, (list, tuple)):  # per-stage values (Swin): left as built; stale only if the set changed
        stale = bool(values) and values != set(current)
    elif len(values) == 1:
        setattr(config, name, next(iter(values)))
        return
    else:
        stale = len(values) > 1
    if stale:
        warnings.warn(f"model.config.{name} stays {current!r}: the pruned layers now have {sorted(values)}; "
                      "the modules and a file saved with prunekit.save hold the real widths",
                      PruningWarning, stacklevel=4)
