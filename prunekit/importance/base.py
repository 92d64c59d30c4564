"""Shared helpers for criteria: walk a group's parameter slices and sum a per-slice statistic per channel."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Protocol

import torch
from torch import nn

from ..graph import Group
from ..registry import Registry


class Criterion(Protocol):
    def __call__(self, group: Group, model: nn.Module, ctx: Dict) -> torch.Tensor: ...


SliceStat = Callable[[torch.Tensor, int], torch.Tensor]  # (tensor, dim) -> one value per index along dim


def per_channel(group: Group, model: nn.Module, stat: SliceStat) -> torch.Tensor:
    """Sum ``stat`` over every parameter slice of each channel (buffers and attributes are skipped)."""
    total = torch.zeros(group.size, dtype=torch.float64)
    for m in group.members:
        if m.kind not in ("param", "grouped_in"):
            continue
        t = getattr(model.get_submodule(m.module), m.attr).detach()
        if m.kind == "grouped_in":
            blocks = t.chunk(m.index.shape[0], dim=0)
            pairs = [(stat(b, m.dim), row) for b, row in zip(blocks, m.index)]
        else:
            pairs = [(stat(t, m.dim), m.index)]
        for vals, index in pairs:
            ok = index >= 0
            total.index_add_(0, index[ok], vals.double().cpu()[ok])
    return total


def norm_except(t: torch.Tensor, dim: int, order: float) -> torch.Tensor:
    """Vector ``order``-norm of every slice along ``dim`` (no temporaries: weights can be 100M elements)."""
    dim = dim % t.dim()
    n = t.shape[dim]
    outer = 1
    for s in t.shape[:dim]:
        outer *= s
    v = t.detach().float().contiguous().view(outer, n, -1)
    m = torch.linalg.vector_norm(v, ord=order, dim=2) if v.shape[2] > 1 else v.view(outer, n)
    acc = torch.zeros(n, device=v.device)
    for rows in m.split(64, 0):  # reducing the outer dim in small chunks is ~10x faster than one call
        acc += (rows * rows).sum(0) if order == 2.0 else rows.abs().pow(order).sum(0)
    return acc.pow(1.0 / order)


def reduce_except(t: torch.Tensor, dim: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply an elementwise ``fn`` then sum over every dim but ``dim`` (kept for criteria that need ``fn``)."""
    v = fn(t.float()).movedim(dim, 0)
    return v.reshape(v.shape[0], -1).sum(1)


CRITERIA: Registry[Criterion] = Registry("criterion")


def score_groups(graph: Any, model: nn.Module, criterion: str = "l2", ctx: Optional[Dict[str, Any]] = None,
                 normalize: str = "mean") -> Dict[str, torch.Tensor]:
    """Scores per group key. ``normalize="mean"`` divides each group by its mean so groups compare globally."""
    fn = CRITERIA.get(criterion)
    ctx = dict(ctx or {})
    out: Dict[str, torch.Tensor] = {}
    for g in graph.groups:
        if not g.prunable:
            continue
        s = fn(g, model, ctx).detach().float().cpu()
        if s.shape != (g.size,):
            raise ValueError(f"criterion {criterion!r} returned shape {tuple(s.shape)} for group {g.key!r}; "
                             f"expected ({g.size},)")
        if normalize == "mean":
            s = s / s.mean().clamp(min=1e-12)
        out[g.key] = s
    return out
