"""Block criteria for depth pruning: score every identity-residual block (higher = more important, kept first).

A block criterion is one small file and one decorator::

    @BLOCK_CRITERIA.register("magnitude")
    def magnitude(model: nn.Module, blocks: list[str], ctx: dict) -> dict[str, float]:
        ...

``ctx`` carries ``data`` (calibration (x, y) batches, optional) and ``example`` (the traced inputs, used when
there is no data). Importing the package imports every block criterion, which registers it.
"""
from __future__ import annotations

from . import contribution, magnitude, skip_loss  # noqa: F401  (register the criteria)
from .base import BLOCK_CRITERIA, BlockCriterion, score_blocks

__all__ = ["BLOCK_CRITERIA", "BlockCriterion", "score_blocks"]
