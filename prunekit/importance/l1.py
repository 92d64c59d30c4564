"""L1 magnitude: sum of |w| over every coupled slice of a channel."""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ..graph import Group
from .base import CRITERIA, norm_except, per_channel


@CRITERIA.register("l1")
def l1(group: Group, model: nn.Module, ctx: Dict) -> torch.Tensor:
    """L1 norm (sum of |w|) over every coupled parameter slice of each channel (higher = kept); needs no data."""
    return per_channel(group, model, lambda t, d: norm_except(t, d, 1.0))
