"""Semi-structured N:M sparsity: in every group of M consecutive weights along the input dimension, keep N.

2:4 is what sparse tensor cores accelerate; any N < M works here. Groups run along the reduction (input)
dimension of the layer seen as a matrix: ``in_features`` for Linear and attention projections, the embedding
dimension for Embedding, and for a convolution the input channels at each kernel position (weights viewed as
``[out, kh, kw, in]``, the channels-last layout sparse kernels use). When that length is not a multiple of M,
the last group is shorter and keeps at most N.

    masks = nm_prune(model, n=2, m=4)
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence, Type

import torch
from torch import nn

from ..errors import ConfigError
from .masks import Masks
from .selection import DEFAULT_TYPES, select_targets


def as_rows(w: torch.Tensor) -> torch.Tensor:
    """The weight as [rows, reduction] with the input channel innermost (conv: [out, k..., in])."""
    if w.ndim > 2:
        w = w.movedim(1, -1)
    return w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(1, -1)


def from_rows(rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`as_rows`."""
    if len(shape) > 2:
        moved = (shape[0], *shape[2:], shape[1])
        return rows.reshape(moved).movedim(-1, 1).contiguous()
    return rows.reshape(shape)


def nm_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask with exactly ``min(n, group length)`` largest-|w| entries per group (ties: first position wins)."""
    rows = as_rows(w.detach().abs().float())
    r, k = rows.shape
    pad = (-k) % m
    padded = torch.cat([rows, rows.new_full((r, pad), -1.0)], dim=1) if pad else rows  # -1 < any |w|
    groups = padded.reshape(r, -1, m)
    order = torch.sort(groups, dim=-1, descending=True, stable=True).indices
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, order[..., :n], True)
    keep = keep.reshape(r, -1)[:, :k]
    return from_rows(keep, w.shape)


def nm_prune(model: nn.Module, n: int = 2, m: int = 4, skip_first: bool = True, skip_last: bool = True,
             skip: Optional[Iterable[str]] = None, types: Sequence[Type[nn.Module]] = DEFAULT_TYPES,
             apply: bool = True) -> Masks:
    """N:M masks for every targeted weight; with ``apply`` (default) the pruned weights are zeroed now."""
    if not (isinstance(n, int) and isinstance(m, int) and 0 < n < m):
        raise ConfigError(f"N:M = {n}:{m} is invalid; need integers 0 < N < M, e.g. 2:4")
    targets = select_targets(model, types, skip_first, skip_last, skip)
    masks = Masks({t.param_name: nm_mask(t.param, n, m) for t in targets})
    if apply:
        masks.apply(model)
    return masks


def parse_nm(text: str) -> tuple:
    """``"2:4"`` -> ``(2, 4)``, for the CLI's ``--nm`` flag."""
    try:
        n, m = (int(x) for x in text.split(":"))
    except ValueError:
        raise ConfigError(f"--nm {text!r} is not N:M; write e.g. 2:4") from None
    if not 0 < n < m:
        raise ConfigError(f"--nm {text!r}: need 0 < N < M, e.g. 2:4")
    return n, m
