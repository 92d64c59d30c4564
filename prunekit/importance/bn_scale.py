"""BN scaling factor (Network Slimming, Liu et al. 2017): a channel's importance is |gamma| of its norm layers.

score_c = mean over the group's norm layers of |gamma_c|  (BatchNorm, GroupNorm, InstanceNorm, LayerNorm weights)

Trained with an L1 penalty on gammas (``prunekit.slimming.BNSparsity``), unimportant channels' gammas go to ~0.
A group with no affine norm layer (e.g. a Linear without BN) falls back to the L1 norm of its weights, so a
global ranking still has a value for it.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ..graph import Group
from .base import CRITERIA, norm_except, per_channel

NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm)


@CRITERIA.register("bn_scale")
def bn_scale(group: Group, model: nn.Module, ctx: Dict) -> torch.Tensor:
    """Mean |gamma| of the channel over the group's affine norm layers (higher = kept); needs no data.

    Groups without a norm layer fall back to the L1 norm of their weights, so a global ranking covers them.
    """
    modules = dict(model.named_modules())
    total = torch.zeros(group.size, dtype=torch.float64)
    count = torch.zeros(group.size, dtype=torch.float64)
    for m in group.members:
        mod = modules[m.module]
        if m.kind != "param" or m.attr != "weight" or not isinstance(mod, NORMS) or m.dim != 0:
            continue
        gamma = mod.weight.detach().abs().double().cpu().reshape(-1)
        idx = m.index.reshape(-1)
        ok = idx >= 0
        total.index_add_(0, idx[ok], gamma[ok])
        count.index_add_(0, idx[ok], torch.ones(int(ok.sum()), dtype=torch.float64))
    if not bool(count.any()):
        return per_channel(group, model, lambda t, d: norm_except(t, d, 1.0))
    return total / count.clamp(min=1)
