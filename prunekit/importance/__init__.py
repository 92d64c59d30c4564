"""Importance criteria: score every channel of a Group (higher = more important, kept first).

A criterion is one small file and one decorator::

    @CRITERIA.register("l2")
    def l2(group: Group, model: nn.Module, ctx: dict) -> torch.Tensor:   # shape [group.size]
        ...

``ctx`` carries optional extras: ``data`` (iterable of (x, y) batches for data-driven criteria), ``seed``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from ..registry import Registry
from .base import Criterion

CRITERIA: Registry[Criterion] = Registry("criterion")

from . import extra, l1, l2, random  # noqa: E402,F401  (register the built-in criteria)

__all__ = ["CRITERIA", "score_groups", "Criterion"]


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
