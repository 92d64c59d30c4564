"""SE-attention criterion: a channel's importance is its channel-attention weight averaged over training data.

    score_c = mean over training images x of gate_c(x)       (gate = the SE module's output, in (0, 2))

averaged over the attention modules attached to the group's layers (a residual group has several). The scores
are produced by :mod:`prunekit.attention` (insert SE modules, train them, ``attention_scores``), which stores them
on the model under ``SCORES_ATTR`` as {attach module name: tensor[channels]}; they survive ``remove_attention``
so the plan can be made on the plain model. Use :func:`prunekit.attention.attention_prune` for the whole flow.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ..errors import ConfigError
from ..graph import Group
from .base import CRITERIA

SCORES_ATTR = "prunekit_attention_scores"


def group_attention(group: Group, model: nn.Module, who: str = "attention") -> torch.Tensor:
    """[group.size]: the stored attention score of each channel, averaged over the group's attention modules."""
    scores: Dict[str, torch.Tensor] = getattr(model, SCORES_ATTR, None) or {}
    if not scores:
        raise ConfigError(f"criterion {who!r} needs attention scores on the model; run "
                          "prunekit.attention.attention_prune(...) (or insert_attention + train_attention + "
                          "attention_scores) first")
    total = torch.zeros(group.size, dtype=torch.float64)
    count = torch.zeros(group.size, dtype=torch.float64)
    for m in group.members:
        s = scores.get(m.module)
        if s is None or m.kind != "param" or m.attr != "weight" or m.dim != 0:
            continue
        idx = m.index.reshape(-1)
        if idx.numel() != s.numel():
            raise ConfigError(f"attention scores for {m.module!r} have {s.numel()} channels but the layer has "
                              f"{idx.numel()}; they are stale (the model was pruned after scoring), score again")
        ok = idx >= 0
        total.index_add_(0, idx[ok], s.double().cpu()[ok])
        count.index_add_(0, idx[ok], torch.ones(int(ok.sum()), dtype=torch.float64))
    if not bool(count.any()):
        raise ConfigError(f"no attention module was attached to group {group.key!r} (layers {group.modules()}); "
                          "insert attention after its convolution or choose another criterion")
    return total / count.clamp(min=1)


@CRITERIA.register("attention")
def attention(group: Group, model: nn.Module, ctx: Dict) -> torch.Tensor:
    """Mean SE-attention gate of each channel, stored on the model by :mod:`prunekit.attention` (higher = kept).

    Needs no data here, but the scores must have been computed first (``attention_prune`` or ``attention_scores``).
    """
    return group_attention(group, model)
