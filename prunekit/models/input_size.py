"""The square input size a model is used at: the data's size when the architecture runs at it, else the size it
declares.

ViTs, Swin, MaxViT or Inception cannot take the embedded 64 px data ("Input height (64) doesn't match model (224)",
"Kernel size can't be greater than actual input size"). Rather than a traceback deep in training, the size comes from
what the architecture declares (timm's ``pretrained_cfg``, torchvision's weights metadata), confirmed by one batch-1
forward (a probe), before any data is decoded. A size asked for explicitly is probed as well, and refused with one
line naming the size the model declares.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
from torch import nn

from ..errors import ModelError
from . import create_model

log = logging.getLogger("prunekit.models")


@dataclass(frozen=True)
class Declared:
    """What an architecture says about its input: the size it was made for, the smallest it takes, and whether
    it takes only that size (timm ``fixed_input_size``: position embeddings, windows)."""

    size: Optional[int] = None
    min_size: int = 1
    fixed: bool = False


def declared_input(model: nn.Module, name: str) -> Declared:
    """timm's ``pretrained_cfg`` of the built model, or torchvision's default weights metadata for ``name``."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        return Declared(int(cfg["input_size"][-1]), 1, bool(cfg.get("fixed_input_size")))
    source, _, arch = name.partition("/")
    if source != "torchvision":
        return Declared()
    from torchvision.models import get_model_weights

    try:
        weights = get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError):  # an architecture without published weights declares nothing
        return Declared()
    crop = getattr(weights.transforms(), "crop_size", None)
    return Declared(int(crop[0]) if crop else None, int(max(weights.meta.get("min_size", (1, 1)))), False)


def probe(model: nn.Module, size: int) -> Optional[str]:
    """None when ``model`` runs a batch-1 ``size`` px input (eval mode, no grad), else the error's first line."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    except Exception as e:  # any failure means the model cannot take this size
        text = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        return f"{type(e).__name__}: {text}" if text else type(e).__name__
    finally:
        model.train(was)
    return None


def candidates(asked: Optional[int], default: int, declared: Declared) -> List[int]:
    """Sizes to try, in order: the one asked for alone; else the data's default unless the architecture rules it
    out, then the declared size."""
    if asked is not None:
        return [asked]
    if declared.size and (declared.fixed or default < declared.min_size):
        return [declared.size]
    return [default] + ([declared.size] if declared.size and declared.size != default else [])


def choose_input_size(model: nn.Module, name: str, asked: Optional[int], default: int) -> int:
    """The size ``model`` (built from ``name``) is used at; :class:`ModelError` when it takes none of them."""
    declared = declared_input(model, name)
    errors = []
    for size in candidates(asked, default, declared):
        err = probe(model, size)
        if err is None:
            return size
        errors.append(f"{size} px: {err}")
    hint = f"--image-size {declared.size} (the size it declares)" if declared.size else "another --image-size"
    if asked is not None:
        hint = hint if declared.size != asked else "another --image-size"
        raise ModelError(f"{name} cannot take {asked} px inputs ({errors[0].split(': ', 1)[1]}); give {hint}")
    raise ModelError(f"{name} runs at none of the sizes tried ({'; '.join(errors)}); give {hint}")


def fit_input_size(opts: Any) -> Any:
    """``opts`` (with ``model`` a name and ``image_size``) at the size the model is used at: ``--image-size`` when
    typed (probed), else the architecture's (:func:`choose_input_size`). Builds one throwaway model to probe."""
    asked = opts.image_size if "image_size" in opts.model_fields_set else None
    with torch.random.fork_rng(devices=[]):  # the probe must not shift the seeded stream the real model is built from
        model = create_model(opts.model, 2)
        size = choose_input_size(model, opts.model, asked, opts.image_size)
    if size == opts.image_size:
        return opts
    log.info("%s does not take %d px inputs; using the %d px it declares (--image-size overrides)", opts.model,
             opts.image_size, size)
    return opts.model_copy(update={"image_size": size})
