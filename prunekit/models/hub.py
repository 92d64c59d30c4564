"""torchvision and timm models by name, always randomly initialized (weights come only from local files)."""
from __future__ import annotations

import inspect

from torch import nn

from ..errors import ModelError


def torchvision_model(arch: str, num_classes: int, **kwargs) -> nn.Module:
    """A torchvision architecture, randomly initialized (nothing is downloaded); unknown names are one line."""
    import torchvision

    names = set(torchvision.models.list_models(module=torchvision.models))
    if arch not in names:
        near = sorted(n for n in names if arch.split("_")[0] in n)[:8]
        hint = f" (similar: {', '.join(near)})" if near else ""
        raise ModelError(f"unknown torchvision model {arch!r}{hint}; see torchvision.models.list_models()")
    kwargs.pop("weights", None)  # never download: weights are loaded from a local file instead
    builder = torchvision.models.get_model_builder(arch)
    accepts_aux = "aux_logits" in inspect.signature(builder).parameters or arch in ("googlenet", "inception_v3")
    if accepts_aux:
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", True)
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)


def timm_model(arch: str, num_classes: int, **kwargs) -> nn.Module:
    """A timm architecture, randomly initialized (``pretrained=False``: nothing is downloaded)."""
    import timm

    if not timm.list_models(arch):
        raise ModelError(f"unknown timm model {arch!r}; list them with timm.list_models('*{arch[:6]}*')")
    kwargs.pop("pretrained", None)
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
