"""Split nested Python state (optimizer, schedules, callbacks) into flat tensors + JSON, and back.

safetensors holds only named tensors and JSON holds only plain values; optimizer and schedule state mixes both.
Each tensor leaf is replaced by ``{"__tensor__": key}`` in the JSON and stored under ``key`` in the tensor dict.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch


def flatten(obj: Any, prefix: str) -> Tuple[Any, Dict[str, torch.Tensor]]:
    """Split nested state (dicts, lists, tensors) into a JSON spec and flat named tensors, for safetensors."""
    tensors: Dict[str, torch.Tensor] = {}

    def walk(o: Any, path: str) -> Any:
        if isinstance(o, torch.Tensor):
            tensors[path] = o.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(o, dict):
            if not all(isinstance(k, (str, int)) for k in o):
                raise TypeError(f"cannot store dict keys of type {[type(k).__name__ for k in o]} at {path}")
            # JSON keys are strings: remember which were ints (optimizer state is keyed by param index).
            return {"__dict__": [[k, walk(v, f"{path}/{k}")] for k, v in o.items()]}
        if isinstance(o, (list, tuple)):
            return {"__list__": [walk(v, f"{path}/{i}") for i, v in enumerate(o)], "tuple": isinstance(o, tuple)}
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        raise TypeError(f"cannot store a {type(o).__name__} at {path}")

    return walk(obj, prefix), tensors


def unflatten(spec: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten`."""
    if isinstance(spec, dict):
        if "__tensor__" in spec:
            return tensors[spec["__tensor__"]]
        if "__dict__" in spec:
            return {k: unflatten(v, tensors) for k, v in spec["__dict__"]}
        if "__list__" in spec:
            items = [unflatten(v, tensors) for v in spec["__list__"]]
            return tuple(items) if spec.get("tuple") else items
    return spec
