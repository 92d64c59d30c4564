"""Loading a checkpoint into a model the caller built: ``prunekit.load(path, model=MyNet(...))``.

prunekit rebuilds only the architectures it knows by name; any other model is built by its owner (a fresh,
unpruned instance), and the file says how pruning changed it (``structure``: every tensor's shape, the shape
attributes, the blocks replaced by identity) and which tensors are one (``tied``). Nothing in the file is imported
or called. The file is untrusted: its structure record is checked against the tensors it holds before any memory
is allocated, and the instance against both before the weights are copied in (strictly). A Hugging Face model's
``config`` sizes (``n_embd``, ``num_attention_heads`` ...), which pruning updates, are recorded as ``config``
(int fields only) and set back on the instance's config, only where it has that int field.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from ..apply.structured_state import restore_structure
from ..errors import CheckpointError, ModelError
from ..models.state_load import load_tensors
from .savable import module_qualname
from .validate import MAX_ORIGINAL_ELEMENTS, same_kind


def check_structure_against_tensors(structure: Dict[str, Any], tensors: Dict[str, torch.Tensor], where: str) -> None:
    """Every recorded shape must be that of the file's tensor of the same name; only buffers the state dict leaves
    out (non-persistent ones) may be missing from the file, and they may not ask for much memory."""
    held = sum(t.numel() for t in tensors.values())
    unstored = 0
    for table in ("params", "buffers"):
        for name, shape in structure.get(table, {}).items():
            if name in tensors:
                if list(tensors[name].shape) != list(shape):
                    raise CheckpointError(f"{where} does not fit its description: {name} is "
                                          f"{tuple(tensors[name].shape)} in the file but {tuple(shape)} in its "
                                          "structure record (the file was edited?)")
            elif table == "params":
                raise CheckpointError(f"{where} does not fit its description: parameter {name!r} is recorded but "
                                      "not stored (the file was edited or damaged)")
            else:
                unstored += _numel(shape)
    if unstored > max(MAX_ORIGINAL_ELEMENTS, 2 * held):
        raise CheckpointError(f"{where}: its structure record asks for {unstored:,} buffer elements that the file "
                              "does not hold; the file was edited")


def fit_instance(model: nn.Module, desc: Dict[str, Any], tensors: Dict[str, torch.Tensor], where: str) -> nn.Module:
    """Give the caller's fresh ``model`` the saved pruned shapes and ties, then load the file's weights strictly.

    ``model`` is changed in place (pass a fresh instance). Raises :class:`CheckpointError` naming the first tensor
    or module that does not match, or the class when it is not the one the file was saved from.
    """
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"model= must be an nn.Module instance (e.g. model=MyNet(...)), got "
                              f"{type(model).__name__}")
    saved = (desc.get("module") or {}).get("qualname")
    if saved is not None and saved != module_qualname(model):
        raise CheckpointError(f"{where} was saved from a {saved}, but model= is a {module_qualname(model)}; pass a "
                              f"fresh, unpruned {saved.rsplit('.', 1)[-1]}(...) built with the same settings")
    weights = {k: v for k, v in tensors.items() if not k.startswith("@")}
    structure = desc.get("structure")
    if structure:
        check_structure_against_tensors(structure, weights, where)
        _check_names(model, structure, where)
        try:
            restore_structure(model, structure)
        except ModelError as e:
            raise CheckpointError(f"{where}: model= does not fit the saved structure: {e}") from None
    if "tied" in desc:
        match_ties(model, desc["tied"], where)
    if desc.get("config"):
        restore_config_sizes(model, desc["config"])
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if missing or unexpected:
        which = f"model= has tensor {missing[0]!r} that the file lacks" if missing else \
            f"the file holds tensor {unexpected[0]!r} that model= lacks"
        raise CheckpointError(f"{where} does not fit model= ({module_qualname(model)}): {which} ({len(missing)} "
                              f"missing, {len(unexpected)} unexpected); pass a fresh instance of the class and "
                              "settings the file was saved from")
    for key, value in weights.items():
        same_kind(key, value, own[key], where)
    for key, mask in tensors.items():
        target = own.get(key[len("@mask/"):]) if key.startswith("@mask/") else mask
        if target is None or mask.shape != target.shape:
            raise CheckpointError(f"{where}: mask {key!r} names no tensor of that shape in the model; the file was "
                                  "edited or damaged")
    load_tensors(model, weights, strict=True)
    return model


def config_sizes(model: nn.Module) -> Optional[Dict[str, int]]:
    """The int fields of ``model.config`` (a Hugging Face model's sizes, which pruning keeps in step); None without
    a config."""
    to_dict = getattr(getattr(model, "config", None), "to_dict", None)
    if not callable(to_dict):
        return None
    return {k: v for k, v in to_dict().items() if isinstance(v, int) and not isinstance(v, bool)}


def restore_config_sizes(model: nn.Module, sizes: Dict[str, int]) -> None:
    """Set the recorded sizes on ``model.config``, only fields it has as ints (nothing else is created or typed)."""
    config = getattr(model, "config", None)
    for key, value in sizes.items():
        current = getattr(config, key, None)
        if isinstance(current, int) and not isinstance(current, bool) and current != value:
            setattr(config, key, value)


def match_ties(model: nn.Module, tied: Dict[str, str], where: str) -> None:
    """Make exactly the recorded aliases share their source tensor: re-tie what restoring shapes replaced on one
    side only, and give an alias the file does not record as tied its own tensor."""
    modules, sources = dict(model.named_modules()), set(tied.values())
    for name, t in list(model.named_parameters(remove_duplicate=False)) + \
            list(model.named_buffers(remove_duplicate=False)):
        source = tied.get(name)
        store, attr = _store(modules, name)
        if source is None:
            if name not in sources and _shared_elsewhere(model, name, t):
                store[attr] = nn.Parameter(t.detach().clone(), t.requires_grad) if isinstance(t, nn.Parameter) \
                    else t.detach().clone()
            continue
        src_store, src_attr = _store(modules, source)
        if src_store is None or src_store.get(src_attr) is None:
            raise CheckpointError(f"{where}: tensor {name!r} is recorded as tied to {source!r}, which model= does "
                                  "not have; pass a fresh instance of the class the file was saved from")
        store[attr] = src_store[src_attr]
    for name, source in tied.items():
        if _store(modules, name)[0] is None:
            raise CheckpointError(f"{where}: tied tensor {name!r} is not in model=; pass a fresh instance of the "
                                  "class the file was saved from")


def _shared_elsewhere(model: nn.Module, name: str, t: torch.Tensor) -> bool:
    return any(other is t and n != name for n, other in model.named_parameters(remove_duplicate=False))


def _store(modules: Dict[str, nn.Module], name: str) -> Any:
    """The ``_parameters`` or ``_buffers`` dict holding tensor ``name``, and the key in it; (None, key) if none."""
    mname, _, attr = name.rpartition(".")
    mod = modules.get(mname)
    if mod is None:
        return None, attr
    for store in (mod._parameters, mod._buffers):
        if attr in store:
            return store, attr
    return None, attr


def _check_names(model: nn.Module, structure: Dict[str, Any], where: str) -> None:
    """Every tensor and block the structure record names exists in ``model``, checked before anything changes."""
    modules = dict(model.named_modules())
    for name in structure.get("identity", []):
        if name not in modules:
            raise CheckpointError(f"{where}: the saved model replaced block {name!r} by identity, but model= has no "
                                  "such module; pass a fresh instance of the class the file was saved from")
    for table in ("params", "buffers"):
        for name in structure.get(table, {}):
            if not any(name == n or name.startswith(n + ".") for n in structure.get("identity", [])) \
                    and _store(modules, name)[0] is None:
                raise CheckpointError(f"{where}: the file holds tensor {name!r}, which model= "
                                      f"({module_qualname(model)}) does not have; pass a fresh instance of the "
                                      "class and settings the file was saved from")


def _numel(shape: Any) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
