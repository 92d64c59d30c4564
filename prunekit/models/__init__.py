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
    check_model_name(name)
    source, _, arch = name.partition("/")
    if source == "torchvision":
        model = torchvision_model(arch, num_classes, **kwargs)
    elif source == "timm":
        model = timm_model(arch, num_classes, **kwargs)
    else:
        model = MODELS.get(name)(num_classes=num_classes, **kwargs)
    # What a checkpoint needs to rebuild this architecture with no pickle: name, class count, JSON-able kwargs.
    model.prunekit_arch = {"name": name, "num_classes": num_classes, "kwargs": dict(kwargs)}
    if weights is not None:
        load_weights(model, weights)
    return model


def check_model_name(name: str) -> None:
    """ModelError unless ``name`` is a built-in model, ``torchvision/<arch>`` or ``timm/<arch>`` (the arch itself is
    checked when built); cheap, so a job can refuse a typo (or a folder) before any work."""
    source, _, arch = name.partition("/")
    if (arch and source in ("torchvision", "timm")) or (not arch and name in MODELS):
        return
    what = f"model {name!r} is a folder, not a model name or a checkpoint file" if Path(name).is_dir() \
        else f"unknown model {name!r}"
    raise ModelError(f"{what}; use one of {', '.join(MODELS.names())}, torchvision/<arch> or timm/<arch>")


def list_models() -> list[str]:
    """Built-in model names (torchvision/<arch> and timm/<arch> are accepted besides)."""
    return MODELS.names()


__all__ = ["check_model_name", "create_model", "list_models", "load_weights", "MODELS"]
