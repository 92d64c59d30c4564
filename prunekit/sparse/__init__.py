"""Unstructured and N:M sparsity that really saves space: masks kept through training, a compressed sparse
checkpoint format, and sparse inference kernels used only where measured faster.

    from prunekit.sparse import magnitude_prune
    from prunekit.train import MaskCallback
    masks = magnitude_prune(model, ratio=0.9)             # global magnitude, exact count
    fit(model, data, cfg, callbacks=[MaskCallback(masks)])
"""
from __future__ import annotations

from .magnitude import magnitude_prune
from .masks import Masks, Sparsity, masked_sparsity
from .nm import nm_prune, parse_nm
from .selection import select_targets

__all__ = ["Masks", "Sparsity", "magnitude_prune", "masked_sparsity", "nm_prune", "parse_nm",
           "select_targets"]
