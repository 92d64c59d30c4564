"""Doing what a Plan says: physical removal (``structured``), its dry-run check (``verify``), and the one one-shot
path that plans, checks and removes (``oneshot``)."""
from .oneshot import checked_plan, prune_structured, pruned_copy
from .structured import apply_plan, channel_masks, zero_channels
from .verify import verify_plan

__all__ = ["apply_plan", "channel_masks", "checked_plan", "prune_structured", "pruned_copy", "verify_plan",
           "zero_channels"]
