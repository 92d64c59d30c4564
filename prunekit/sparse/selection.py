"""Which weight tensors unstructured pruning may touch: the one place that decides, so every method agrees.

Targets are the weight matrices of convolutions, linear layers, attention input projections and embeddings,
by fully-qualified parameter name, in module registration order. Biases and norm parameters are never targets
(they are tiny and pruning them hurts accuracy for no space).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Type

from torch import nn

from ..errors import ConfigError

DEFAULT_TYPES: Tuple[Type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.MultiheadAttention,
                                                nn.Embedding)
_MHA_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


@dataclass(frozen=True)
class Target:
    param_name: str  # "layer1.0.conv1.weight"
    module_name: str  # "layer1.0.conv1"
    param: nn.Parameter


def _weights_of(module: nn.Module) -> List[Tuple[str, nn.Parameter]]:
    if isinstance(module, nn.MultiheadAttention):
        # out_proj is an nn.Linear child and is found on its own.
        return [(n, getattr(module, n)) for n in _MHA_WEIGHTS if getattr(module, n, None) is not None]
    weight = getattr(module, "weight", None)
    return [("weight", weight)] if isinstance(weight, nn.Parameter) else []


def _matches(pattern: str, target: Target) -> bool:
    names = (target.param_name, target.module_name)
    return any(pattern == n or fnmatch.fnmatchcase(n, pattern) for n in names)


def select_targets(model: nn.Module, types: Sequence[Type[nn.Module]] = DEFAULT_TYPES, skip_first: bool = True,
                   skip_last: bool = True, skip: Optional[Iterable[str]] = None) -> List[Target]:
    """The prunable weights of ``model``.

    ``skip_first`` / ``skip_last`` leave out the first and last target module in registration order (usually the
    stem convolution, which sees raw pixels, and the classifier, whose every weight matters). ``skip`` takes module
    or parameter names, or fnmatch patterns (``"layer4.*"``); a name that matches nothing is an error, so a typo
    does not silently prune what you meant to keep.
    """
    model = getattr(model, "module", model)
    types = tuple(types)
    if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
        raise ConfigError(f"types={types!r} must be nn.Module classes, e.g. (nn.Conv2d, nn.Linear)")
    per_module: List[List[Target]] = []
    for mod_name, module in model.named_modules():
        if isinstance(module, types):
            found = [Target(f"{mod_name}.{p}" if mod_name else p, mod_name, w) for p, w in _weights_of(module)]
            if found:
                per_module.append(found)
    if skip_first and per_module:
        per_module = per_module[1:]
    if skip_last and per_module:
        per_module = per_module[:-1]
    targets = [t for group in per_module for t in group]
    for pattern in skip or ():
        if not any(_matches(pattern, t) for t in targets):
            known = ", ".join(t.module_name for t in targets[:6])
            raise ConfigError(f"skip entry {pattern!r} matches no prunable layer; names look like: {known}, ...")
    return [t for t in targets if not any(_matches(p, t) for p in skip or ())]


def resolve_overrides(targets: Sequence[Target], overrides: Optional[Dict[str, float]]) -> Dict[str, float]:
    """Map override keys (module/parameter names or patterns) to parameter names, checking every ratio."""
    resolved: Dict[str, float] = {}
    for key, ratio in (overrides or {}).items():
        if not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) <= 1.0:
            raise ConfigError(f"override {key!r}: ratio {ratio!r} must be a number in [0, 1]")
        hits = [t for t in targets if _matches(key, t)]
        if not hits:
            known = ", ".join(t.module_name for t in targets[:6])
            raise ConfigError(f"override {key!r} matches no prunable layer (skipped layers cannot be overridden); "
                              f"names look like: {known}, ...")
        for t in hits:
            resolved[t.param_name] = float(ratio)
    return resolved
