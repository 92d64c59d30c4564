"""Random scores: the baseline every real criterion must beat (seeded by ctx["seed"] and the group key)."""
from __future__ import annotations

import zlib
from typing import Dict

import torch
from torch import nn

from ..graph import Group
from .base import CRITERIA


@CRITERIA.register("random")
def random(group: Group, model: nn.Module, ctx: Dict) -> torch.Tensor:
    """Uniform random scores, reproducible from ``ctx["seed"]`` and the group key; needs no data.

    The baseline every real criterion must beat.
    """
    gen = torch.Generator().manual_seed(int(ctx.get("seed", 0)) * 1_000_003 + zlib.crc32(group.key.encode()))
    return torch.rand(group.size, generator=gen)
