"""Activation-based criteria from forward hooks over calibration data (one pass for all groups).

- ``mean_activation`` (Molchanov et al. 2017's baseline): score_c = mean over batches, images and positions of
  |a_c|, where a_c is channel c as the *next* conv/Linear reads it (after BN and ReLU).
- ``apoz`` (Hu et al. 2016, Average Percentage of Zeros): score_c = 1 - APoZ_c = fraction of non-zero a_c.
  A channel that ReLU almost always zeroes carries little signal. Meaningful after ReLU-like activations only;
  elsewhere every channel scores ~1.

Both need ``data`` (make_plan(..., data=loader)); ``ctx["max_batches"]`` bounds the pass. The model runs in eval
mode (BN running statistics, no dropout) so calibration changes nothing.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ..graph import Group
from .base import CRITERIA
from .observe import activation_stats, channel_mean


@CRITERIA.register("mean_activation")
def mean_activation(group: Group, model: nn.Module, ctx: Dict) -> torch.Tensor:
    """Mean |activation| of each channel as the next layer reads it (higher = kept).

    Needs ``data`` (calibration batches); one forward pass serves every group.
    """
    return channel_mean(group, model, activation_stats(model, ctx, "mean_activation"), "in_mean")


@CRITERIA.register("apoz")
def apoz(group: Group, model: nn.Module, ctx: Dict) -> torch.Tensor:
    """1 - APoZ: the fraction of non-zero activations of each channel after ReLU (higher = kept).

    Needs ``data``; meaningful only after ReLU-like activations (elsewhere every channel scores ~1).
    """
    return channel_mean(group, model, activation_stats(model, ctx, "apoz"), "in_nonzero")
