"""Unstructured masks: which weights are kept (``prunekit.train.masks.MaskCallback`` keeps the rest at exactly 0
while training).

A mask is a bool tensor per parameter (True = kept), keyed by the parameter's fully-qualified name, e.g.
``"layer1.0.conv1.weight"``. Masks are plain data: they can be printed, saved (``state_dict``) and re-applied.

    masks = magnitude_prune(model, ratio=0.9)      # zeroes 90% of the weights and returns the masks
    fit(model, data, cfg, callbacks=[MaskCallback(masks)])   # prunekit.train.MaskCallback
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, Mapping, MutableMapping, Optional

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, ModelError


@dataclass(frozen=True)
class Sparsity:
    """Fraction of masked-out weights, overall (over masked tensors) and per tensor."""

    overall: float
    pruned: int
    total: int
    per_layer: Dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.overall:.2%} pruned ({self.pruned:,} of {self.total:,} weights in {len(self.per_layer)} tensors)"


class Masks(MutableMapping):
    """Parameter name -> bool keep-mask (CPU). Dict-like; ``apply`` zeroes pruned weights in place."""

    def __init__(self, masks: Optional[Mapping[str, torch.Tensor]] = None) -> None:
        self._masks: Dict[str, torch.Tensor] = {}
        self._device_cache: Dict[tuple, torch.Tensor] = {}
        for name, mask in (masks or {}).items():
            self[name] = mask

    # -- mapping protocol ------------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __setitem__(self, name: str, mask: torch.Tensor) -> None:
        if not isinstance(mask, torch.Tensor):
            raise ConfigError(f"mask for {name!r} is a {type(mask).__name__}; pass a bool torch.Tensor")
        self._masks[name] = mask.detach().to("cpu", torch.bool).contiguous()
        self._device_cache = {k: v for k, v in self._device_cache.items() if k[0] != name}

    def __delitem__(self, name: str) -> None:
        del self._masks[name]
        self._device_cache = {k: v for k, v in self._device_cache.items() if k[0] != name}

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return f"Masks({len(self)} tensors, {self.sparsity()})"

    # -- use -------------------------------------------------------------------------------------------------------
    def check(self, model: nn.Module) -> Dict[str, nn.Parameter]:
        """The model's masked parameters by name; a missing name or a shape mismatch is a ModelError."""
        params = dict(_unwrap(model).named_parameters())
        for name, mask in self._masks.items():
            if name not in params:
                raise ModelError(f"mask names parameter {name!r} which the model does not have; "
                                 f"prune this model again or load masks made for it")
            if params[name].shape != mask.shape:
                raise ModelError(f"mask for {name!r} has shape {tuple(mask.shape)} but the parameter has "
                                 f"{tuple(params[name].shape)}; the masks were made for another model")
        return {name: params[name] for name in self._masks}

    @torch.no_grad()
    def apply(self, model: nn.Module) -> nn.Module:
        """Set every pruned weight to exactly +0.0 (``masked_fill``, so no -0.0 or NaN*0 survives)."""
        for name, param in self.check(model).items():
            param.masked_fill_(~self._on(name, param.device), 0.0)
        return model

    def sparsity(self) -> Sparsity:
        """Fraction, count and total of pruned weights over all masks, and the fraction per layer."""
        per_layer = {n: 1.0 - m.sum().item() / max(1, m.numel()) for n, m in self._masks.items()}
        total = sum(m.numel() for m in self._masks.values())
        pruned = total - sum(int(m.sum()) for m in self._masks.values())
        return Sparsity(pruned / total if total else 0.0, pruned, total, per_layer)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """Bool tensors by parameter name; safetensors stores them as-is (1 byte per weight)."""
        return dict(self._masks)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> "Masks":
        """Masks from ``state_dict()``'s output; raises CheckpointError if an entry is not a bool tensor."""
        for name, t in state.items():
            if not isinstance(t, torch.Tensor) or t.dtype != torch.bool:
                kind = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
                raise CheckpointError(f"mask {name!r} is {kind}, not a bool tensor; the masks state is corrupted")
        return cls(state)

    def _on(self, name: str, device: torch.device) -> torch.Tensor:
        """The mask on ``device``, copied once per device (the training loop calls this every step)."""
        key = (name, str(device))
        cached = self._device_cache.get(key)
        if cached is None:
            cached = self._device_cache[key] = self._masks[name].to(device)
        return cached


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel / DataParallel


def masked_sparsity(model: nn.Module, masks: Masks) -> Sparsity:
    """Sparsity actually present in the weights (zeros counted) over the masked tensors: the check after training."""
    per_layer, pruned, total = {}, 0, 0
    for name, param in masks.check(model).items():
        zeros = int((param.detach() == 0).sum())
        per_layer[name] = zeros / max(1, param.numel())
        pruned, total = pruned + zeros, total + param.numel()
    return Sparsity(pruned / total if total else 0.0, pruned, total, per_layer)
