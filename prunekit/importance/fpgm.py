"""FPGM (He et al. 2019, "Filter Pruning via Geometric Median"): filters near the layer's geometric median are
redundant, because the other filters can represent them.

score_i = sum_j ||F_i - F_j||_2   (F_i = channel i's filters from every coupled producing layer, concatenated)

The sum of distances to all other filters is the usual approximation of the distance to the geometric median
(the median minimises exactly this sum), so the filter closest to the median scores lowest and goes first.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ..graph import Group
from .base import CRITERIA
from .observe import filter_rows


@CRITERIA.register("fpgm")
def fpgm(group: Group, model: nn.Module, ctx: Dict) -> torch.Tensor:
    """Sum of distances from each channel's filters to all others (higher = kept); needs no data.

    Filters near the geometric median score lowest: the other filters can stand in for them.
    """
    rows = filter_rows(group, model, per_slice_unit=False)
    return torch.cdist(rows, rows).sum(1)
