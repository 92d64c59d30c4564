"""``magnitude``: a block's mean squared weight. Data-free and instant; blind to what the block does to the stream
(a block of large weights can still add little), which ``contribution`` and ``skip_loss`` measure."""
from __future__ import annotations

from typing import Any, Dict, List

from torch import nn

from .base import BLOCK_CRITERIA


@BLOCK_CRITERIA.register("magnitude")
def magnitude(model: nn.Module, blocks: List[str], ctx: Dict[str, Any]) -> Dict[str, float]:
    """Sum of squared parameters over their count, per block."""
    out = {}
    for name in blocks:
        ps = [p.detach().float() for p in model.get_submodule(name).parameters()]
        out[name] = float(sum(p.square().sum() for p in ps) / max(1, sum(p.numel() for p in ps)))
    return out
