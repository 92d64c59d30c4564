"""The block-criteria registry and what criteria share: calibration batches (or the example) and eval mode."""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Optional, Protocol, Tuple

import torch
from torch import nn

from ...registry import Registry
from ..observe import batches, device_of


class BlockCriterion(Protocol):
    def __call__(self, model: nn.Module, blocks: List[str], ctx: Dict[str, Any]) -> Dict[str, float]: ...


BLOCK_CRITERIA: Registry[BlockCriterion] = Registry("depth criterion")


def score_blocks(model: nn.Module, blocks: List[str], criterion: str = "magnitude",
                 ctx: Optional[Dict[str, Any]] = None) -> Dict[str, float]:
    """Score per block name (higher = kept longer); the lowest-scored blocks are the first replaced by identity."""
    fn = BLOCK_CRITERIA.get(criterion)
    if not blocks:
        return {}
    return {b: float(s) for b, s in fn(model, list(blocks), dict(ctx or {})).items()}


def calibration(model: nn.Module, ctx: Dict[str, Any], who: str) -> Iterator[Tuple[torch.Tensor, Any]]:
    """(x, y) on the model's device from ``ctx["data"]``, or the example inputs (no labels) when there is none."""
    device = device_of(model)
    source = ctx if ctx.get("data") is not None else {"data": [tuple(ctx.get("example") or ())[:1]]}
    for x, y in batches(source, who):
        yield x.to(device), (y.to(device) if isinstance(y, torch.Tensor) else None)


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (BatchNorm statistics untouched, no dropout) and no autograd, restored afterwards."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was)
