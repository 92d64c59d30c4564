"""Registers the criteria beyond the built-in magnitude ones (imported by ``prunekit.importance``).

bn_scale, taylor, fpgm, mean_activation, apoz, attention, attention_gm, pfam, pfam_fmap.
See docs/criteria.md for formulas.
"""
from __future__ import annotations

from . import activation, attention, attention_gm, bn_scale, fpgm, pfam, taylor  # noqa: F401

__all__ = ["activation", "attention", "attention_gm", "bn_scale", "fpgm", "pfam", "taylor"]
