"""L2 magnitude: sqrt of the sum of squares over every coupled slice of a channel (the group's L2 norm)."""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ..graph import Group
from .base import CRITERIA, norm_except, per_channel


@CRITERIA.register("l2")
def l2(group: Group, model: nn.Module, ctx: Dict) -> torch.Tensor:
    """L2 norm over every coupled parameter slice of each channel (higher = kept); needs no data."""
    return per_channel(group, model, lambda t, d: norm_except(t, d, 2.0).square()).sqrt()
