"""Load plain tensors into a model whose modules version their state (``_version`` / ``_load_from_state_dict``).

A ``state_dict()`` carries each module's ``_version`` in its ``_metadata``; safetensors files keep only tensors, so
a module that checks the version on load (torchvision MNASNet: "version should be set to 1 or 2 instead of None")
refuses them. Tensors written by this code are in the current layout, so the model's own versions are the right
ones to hand over.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

import torch
from torch import nn


def load_tensors(model: nn.Module, tensors: Mapping[str, torch.Tensor], strict: bool = True) -> Any:
    """``model.load_state_dict(tensors, strict)`` with the model's own per-module versions attached."""
    state: "OrderedDict[str, torch.Tensor]" = OrderedDict(tensors)
    state._metadata = getattr(model.state_dict(), "_metadata", OrderedDict())  # type: ignore[attr-defined]
    return model.load_state_dict(state, strict=strict)
