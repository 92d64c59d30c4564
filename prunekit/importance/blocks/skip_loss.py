"""``skip_loss``: the loss increase when the block alone is skipped (its output replaced by its input), summed
over the calibration batches. Cross-entropy against the labels when the batches have them, else the KL divergence
from the full model's predictions (zero for a block that changes nothing). One forward per block per batch; a
negative score means skipping the block lowered the loss on these batches."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .base import BLOCK_CRITERIA, calibration, evaluating


def _loss(logits: torch.Tensor, y: Optional[torch.Tensor], full: torch.Tensor) -> float:
    if y is not None:
        return float(F.cross_entropy(logits.float(), y))
    return float(F.kl_div(F.log_softmax(logits.float(), -1), F.log_softmax(full.float(), -1), log_target=True,
                          reduction="batchmean"))


def _skip(mod: nn.Module, args: tuple, out: Any) -> Any:
    return args[0]


@BLOCK_CRITERIA.register("skip_loss")
def skip_loss(model: nn.Module, blocks: List[str], ctx: Dict[str, Any]) -> Dict[str, float]:
    """Per block: loss with the block skipped minus the full model's loss, on the same batches."""
    score = {b: 0.0 for b in blocks}
    with evaluating(model):
        for x, y in calibration(model, ctx, "skip_loss"):
            full = model(x)
            base = _loss(full, y, full)
            for b in blocks:
                handle = model.get_submodule(b).register_forward_hook(_skip)
                try:
                    score[b] += _loss(model(x), y, full) - base
                finally:
                    handle.remove()
    return score
