"""Check a checkpoint's description against the tensors in the same file, on the meta device, before anything real
is allocated.

The description says how to rebuild the model (architecture, class count, kwargs, pruned structure); the tensors
are what the file really holds. A mismatch means the description was edited or the file damaged, and rebuilding
from it could allocate anything (a class count of 10**10 asks for terabytes). So the model is first built and
given its pruned structure on the meta device (shapes only, no memory), its state dict compared key by key with
the file, and only a description that agrees with the file - and whose original architecture is not far larger
than any model prunekit handles - gets a real model built.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from torch import nn

from ..apply.structured_state import restore_structure
from ..errors import CheckpointError, PrunekitError
from ..models import create_model
from .schema import check_description

# The unpruned architecture is built for real before its pruned shapes are restored: allow 2**28 elements (1 GiB
# of fp32), or twice what the file itself holds when that is more.
MAX_ORIGINAL_ELEMENTS = 1 << 28


def shapes_model(arch: Dict[str, Any], trusted: bool = False) -> nn.Module:
    """The architecture built for its shapes only: on the meta device (no memory, no init). A constructor that
    reads tensor values (torchvision RegNet computes its widths with ``.tolist()``) cannot run there and is built
    for real, from an untrusted file only with no recorded kwargs (its size is then the code's own)."""
    try:
        with torch.device("meta"):
            return create_model(arch["name"], arch["num_classes"], **arch.get("kwargs", {}))
    except NotImplementedError:  # "Cannot copy out of meta tensor"
        if arch.get("kwargs") and not trusted:
            raise
    return create_model(arch["name"], arch["num_classes"], **arch.get("kwargs", {}))


def meta_model(desc: Dict[str, Any], where: str) -> Tuple[nn.Module, int]:
    """The described model (with its pruned structure) on the meta device, and its element count before pruning;
    any failure is the file's fault."""
    arch = desc["arch"]
    try:
        model = shapes_model(arch)
        original = sum(t.numel() for t in model.state_dict().values())
        with torch.device("meta"):  # the pruned shapes: recorded, not yet checked, so never allocated
            if desc.get("structure"):
                restore_structure(model, desc["structure"])
    except PrunekitError as e:
        raise CheckpointError(f"{where}: cannot rebuild its model from the description: {e}") from None
    except Exception as e:  # the constructor rejected the described arguments: the description is at fault
        raise CheckpointError(f"{where}: the description's model {arch['name']} cannot be built with its recorded "
                              f"arguments ({type(e).__name__}: {_first_line(e)}); the file was edited or written by "
                              "another version") from None
    return model, original


def check_against_tensors(desc: Any, tensors: Dict[str, torch.Tensor], where: str | Path) -> None:
    """Raise :class:`CheckpointError` unless ``desc`` is well formed and rebuilds exactly the tensors of the file."""
    where = str(where)
    check_description(desc, where)
    model, original = meta_model(desc, where)
    name = desc["arch"]["name"]
    own = model.state_dict()
    weights = {k: v for k, v in tensors.items() if not k.startswith("@")}
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{where} does not fit its description ({name}): missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    for key, value in weights.items():
        same_kind(key, value, own[key], where)
    held = sum(t.numel() for t in tensors.values())
    if original > max(MAX_ORIGINAL_ELEMENTS, 2 * held):
        raise CheckpointError(f"{where}: the description's {name} has {original:,} elements "
                              f"before pruning, far more than the {held:,} the file holds; the file was edited")
    for key, mask in tensors.items():
        if key.startswith("@mask/"):
            target = own.get(key[len("@mask/"):])
            if target is None or mask.shape != target.shape:
                raise CheckpointError(f"{where}: mask {key!r} names no tensor of that shape in the model; the file "
                                      "was edited or damaged")


def same_kind(key: str, value: torch.Tensor, want: torch.Tensor, where: str) -> None:
    """The file's tensor ``key`` has the shape of the model's and is float where the model keeps floats."""
    if value.shape != want.shape:
        raise CheckpointError(f"{where} does not fit its description: {key} is {tuple(value.shape)} in the file but "
                              f"{tuple(want.shape)} in the described model")
    if value.dtype != want.dtype and not (value.dtype.is_floating_point and want.dtype.is_floating_point):
        raise CheckpointError(f"{where}: {key} is {value.dtype} in the file but the model keeps {want.dtype}; the "
                              "file was edited or damaged")


def _first_line(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return text[:160]
