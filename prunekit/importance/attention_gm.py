"""Attention-weighted geometric median (``attention_gm``): the attention says how much the network uses a channel,
FPGM's geometry says whether the channels it keeps could stand in for it.

    score_c = w_c * sum_j w_j ||F_c - F_j||_2

w = the channel attention score stored on the model (mean SE gate, or gate x |BN gamma|, see
:mod:`prunekit.attention`), F = the channel's filters from every coupled producing layer (as FPGM reads them).
A channel goes first when the attention turns it down (small w_c) or when the channels the attention keeps lie
close to it (small weighted distance: it is replaceable by channels the network relies on). Equal weights give
FPGM's ranking; equidistant filters give the attention's. Channels with zero attention count for nothing in
anyone's distance sum, so the geometric median is the one of the attended channels.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ..graph import Group
from .attention import group_attention
from .base import CRITERIA
from .observe import filter_rows


@CRITERIA.register("attention_gm")
def attention_gm(group: Group, model: nn.Module, ctx: Dict) -> torch.Tensor:
    """Attention weight times attention-weighted distance to the other filters (higher = kept).

    Low when the attention turns a channel down or when attended channels lie close to it (replaceable).
    Needs no data, but the attention scores stored by :mod:`prunekit.attention`.
    """
    w = group_attention(group, model, who="attention_gm")
    rows = filter_rows(group, model, per_slice_unit=False)
    return w * (torch.cdist(rows, rows) @ w)
