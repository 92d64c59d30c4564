"""Load local weights into a model: safetensors, or a torchvision/timm ``state_dict`` file.

The network is never used. ``.pth``/``.pt`` files are read with ``torch.load(weights_only=True)``, which refuses
arbitrary pickled objects, so only tensors come in.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch
from torch import nn

from ..errors import ModelError
from .state_load import load_tensors


def read_state_dict(path: str | Path) -> Dict[str, torch.Tensor]:
    """Tensors of a local weights file: safetensors, or a .pth read by torch's weights-only loader (no code runs)."""
    p = Path(path)
    if not p.is_file():
        state = "is a folder" if p.is_dir() else "does not exist"
        raise ModelError(f"weights file {str(p)!r} {state}; pass the path of a local .safetensors or .pth file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as e:  # safetensors raises several types for bad headers
            raise ModelError(f"{p} is not a readable safetensors file ({e})") from None
    try:
        sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"{p} is not a tensor-only state_dict file ({type(e).__name__}); "
                         "convert it to .safetensors") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ModelError(f"{p} holds a {type(sd).__name__}, not a state_dict")
    return {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def load_weights(model: nn.Module, path: str | Path, strict_head: bool = False) -> list[str]:
    """Copy matching tensors from ``path`` into ``model``; return the names that were skipped.

    A classifier whose class count differs (ImageNet weights on a 21-class model) is skipped unless
    ``strict_head``; any other shape mismatch means the file is for another architecture and is an error.
    """
    sd = read_state_dict(path)
    own = model.state_dict()
    skipped: list[str] = []
    loadable = {}
    for name, t in sd.items():
        if name not in own:
            skipped.append(name)
        elif own[name].shape != t.shape:
            # Same trailing shape, other leading size: a classifier head for another class count.
            is_head = own[name].ndim == t.ndim and own[name].shape[1:] == t.shape[1:]
            if is_head and not strict_head:
                skipped.append(name)
                continue
            raise ModelError(f"weights in {path} do not fit this model: {name} is {tuple(t.shape)} in the file, "
                             f"{tuple(own[name].shape)} in the model; is it another architecture?")
        else:
            loadable[name] = t
    if not loadable:
        raise ModelError(f"no tensor in {path} matches the model's parameter names; is it another architecture?")
    load_tensors(model, loadable, strict=False)
    return skipped
