"""Importance criteria: score every channel of a Group (higher = more important, kept first).

A criterion is one small file and one decorator::

    @CRITERIA.register("l2")
    def l2(group: Group, model: nn.Module, ctx: dict) -> torch.Tensor:   # shape [group.size]
        ...

``ctx`` carries optional extras: ``data`` (iterable of (x, y) batches for data-driven criteria), ``seed``.
Importing the package imports every criterion module, which registers it.
"""
from __future__ import annotations

from . import activation, attention, attention_gm, blocks, bn_scale, fpgm, l1, l2, pfam, random, taylor  # noqa: F401
from .blocks import BLOCK_CRITERIA, score_blocks
from .base import CRITERIA, Criterion, score_groups

__all__ = ["BLOCK_CRITERIA", "CRITERIA", "score_blocks", "score_groups", "Criterion"]
