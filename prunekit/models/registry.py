"""The model registry: built-in names map to factories ``f(num_classes, **kwargs) -> nn.Module``."""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
