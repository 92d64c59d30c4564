"""What survives a pruning step besides the weights: the pruned shapes and the optimizer state.

``structure_of(model)`` is a JSON-able description of the pruned shapes; ``restore_structure`` makes a freshly
built, untrained model of the original architecture take those shapes (no weights, no network needed), after
which the pruned state dict loads into it.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch
from torch import nn

from ..errors import ModelError
from ..plan import Plan
from .structured import apply_plan
from .structured_fix import SHAPE_ATTRS

STRUCTURE_FORMAT = "prunekit.structure/1"


def structure_of(obj: Any) -> Dict[str, Any]:
    """Pruned shapes of a model (parameters, buffers, shape attributes, identity-replaced blocks), or a plan."""
    if isinstance(obj, Plan):
        return {"format": STRUCTURE_FORMAT, "plan": obj.to_dict()}
    if not isinstance(obj, nn.Module):
        raise ModelError(f"structure_of needs an nn.Module or a Plan, got {type(obj).__name__}")
    params = {n: list(p.shape) for n, p in obj.named_parameters()}
    buffers = {n: list(b.shape) for n, b in obj.named_buffers()}
    attrs: Dict[str, Dict[str, Any]] = {}
    identity: List[str] = []
    for name, mod in obj.named_modules():
        if name and isinstance(mod, nn.Identity):
            identity.append(name)
        vals = {a: _plain(getattr(mod, a)) for a in SHAPE_ATTRS
                if isinstance(getattr(mod, a, None), (int, tuple, list)) and not _read_only(mod, a)}
        if vals:
            attrs[name] = vals
    return {"format": STRUCTURE_FORMAT, "params": params, "buffers": buffers, "attrs": attrs, "identity": identity}


def _read_only(mod: nn.Module, attr: str) -> bool:
    """True for a width that a class computes from its layers (timm ``ConvNormAct.in_channels`` reads
    ``self.conv.in_channels``): it follows once those layers are restored, and it cannot be assigned."""
    prop = getattr(type(mod), attr, None)
    return isinstance(prop, property) and prop.fset is None


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, (tuple, list)) else v


def restore_structure(model: nn.Module, structure: Dict[str, Any]) -> nn.Module:
    """Give a fresh original-architecture ``model`` the pruned shapes in ``structure`` (in place; returns it).

    The new tensors are zeros: load the pruned weights right after (``model.load_state_dict(...)``).
    """
    if structure.get("format") != STRUCTURE_FORMAT:
        raise ModelError(f"not a prunekit structure (format={structure.get('format')!r}); "
                         f"expected {STRUCTURE_FORMAT!r} from structure_of()")
    if "plan" in structure:
        return apply_plan(model, Plan.from_dict(structure["plan"]))
    for name in structure.get("identity", []):
        try:
            current = model.get_submodule(name)
        except AttributeError:
            raise ModelError(f"structure names module {name!r} that this model does not have; "
                             f"build the same architecture the structure was saved from") from None
        if not isinstance(current, nn.Identity):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, nn.Identity())
    modules = dict(model.named_modules())
    for table, is_param in ((structure.get("params", {}), True), (structure.get("buffers", {}), False)):
        for full, shape in table.items():
            mname, _, attr = full.rpartition(".")
            mod = modules.get(mname)
            store = None if mod is None else (mod._parameters if is_param else mod._buffers)
            if store is None or attr not in store or store[attr] is None:
                raise ModelError(f"structure names tensor {full!r} that this model does not have; "
                                 f"build the same architecture the structure was saved from")
            old = store[attr]
            if list(old.shape) != list(shape):
                new = torch.zeros(shape, dtype=old.dtype, device=old.device)
                store[attr] = nn.Parameter(new, requires_grad=old.requires_grad) if is_param else new
    for mname, vals in structure.get("attrs", {}).items():
        mod = modules.get(mname)
        if mod is None:
            continue
        for attr, value in vals.items():
            if _read_only(mod, attr):  # older files recorded these too; the restored layers give them
                continue
            current = getattr(mod, attr, None)
            setattr(mod, attr, tuple(value) if isinstance(current, tuple) else value)
    return model
