"""L1 magnitude: sum of |w| over every coupled slice of a channel."""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ..graph import Group
from . import CRITERIA
from .base import per_channel, reduce_except


@CRITERIA.register("l1")
def l1(group: Group, model: nn.Module, ctx: Dict) -> torch.Tensor:
    return per_channel(group, model, lambda t, d: reduce_except(t, d, torch.abs))
