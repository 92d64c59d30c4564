"""Models by name: built-in compact CNNs, ``torchvision/<arch>`` and ``timm/<arch>``.

    model = create_model("torchvision/resnet18", num_classes=21)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ModelError
from . import builtin  # noqa: F401  (registers the built-in families)
from .hub import timm_model, torchvision_model
from .registry import MODELS
from .weights import load_weights


def create_model(name: str, num_classes: int, weights: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """Build ``name`` with ``num_classes`` outputs, randomly initialized, then load local ``weights`` if given."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ModelError(f"num_classes must be a positive integer, got {num_classes!r}")
    source, _, arch = name.partition("/")
    if arch and source == "torchvision":
        model = torchvision_model(arch, num_classes, **kwargs)
    elif arch and source == "timm":
        model = timm_model(arch, num_classes, **kwargs)
    elif not arch and name in MODELS:
        model = MODELS.get(name)(num_classes=num_classes, **kwargs)
    else:
        raise ModelError(f"unknown model {name!r}; use one of {', '.join(MODELS.names())}, "
                         "torchvision/<arch> or timm/<arch>")
    # What a checkpoint needs to rebuild this architecture with no pickle: name, class count, JSON-able kwargs.
    model.prunekit_arch = {"name": name, "num_classes": num_classes, "kwargs": dict(kwargs)}
    if weights is not None:
        load_weights(model, weights)
    return model


def list_models() -> list[str]:
    return MODELS.names()


__all__ = ["create_model", "list_models", "load_weights", "MODELS"]
