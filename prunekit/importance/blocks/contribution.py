"""``contribution``: how much a block changes the residual stream, ||block(x) - x|| / ||x||, averaged over the
calibration batches. A block whose branch adds ~0 scores ~0 and goes first; one forward pass per batch."""
from __future__ import annotations

from typing import Any, Dict, List

import torch
from torch import nn

from .base import BLOCK_CRITERIA, calibration, evaluating


@BLOCK_CRITERIA.register("contribution")
def contribution(model: nn.Module, blocks: List[str], ctx: Dict[str, Any]) -> Dict[str, float]:
    """Mean relative change of the stream per block, measured by forward hooks (computed in the hook, before any
    later in-place op can touch the tensors)."""
    total = {b: 0.0 for b in blocks}
    count = {b: 0 for b in blocks}

    def hook(name: str):
        def fn(mod: nn.Module, args: tuple, out: Any) -> None:
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor) and out.shape == x.shape:
                total[name] += float((out.float() - x.float()).norm() / x.float().norm().clamp(min=1e-12))
                count[name] += 1
        return fn

    handles = [model.get_submodule(b).register_forward_hook(hook(b)) for b in blocks]
    try:
        with evaluating(model):
            for x, _ in calibration(model, ctx, "contribution"):
                model(x)
    finally:
        for h in handles:
            h.remove()
    return {b: total[b] / max(1, count[b]) for b in blocks}
