"""BatchNorm statistics after pruning: removing input channels shifts every following BN's input distribution."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Any]) -> int:
    """Re-estimate every BatchNorm's running mean/var as the plain average over ``batches`` ((x, y) or x).

    Cheap (forward passes only) and the same for every criterion, so accuracy measured right after pruning
    reflects which channels went rather than stale statistics. Returns the number of batches used; a model
    without BatchNorm is left as it is.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    momenta = [m.momentum for m in bns]
    was = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    device = next(model.parameters()).device
    used = 0
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x.to(device))
            used += 1
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was)
    return used
