"""Keep module attributes consistent with the (new) tensor shapes after physical pruning.

Each fixer reads the module's tensors and rewrites the attributes its forward uses (in_channels, groups,
num_features, normalized_shape, embed_dim, ...), so the pruned model is an ordinary module of the same class.
"""
from __future__ import annotations

from typing import Dict

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

# Attributes recorded by structure_of / restored by restore_structure.
SHAPE_ATTRS = (
    "in_channels", "out_channels", "groups", "in_features", "out_features", "num_features", "normalized_shape",
    "num_channels", "num_groups", "num_parameters", "embedding_dim", "embed_dim", "kdim", "vdim", "num_heads",
    "head_dim", "attn_dim", "hidden_dim", "nf", "num_attention_heads", "attention_head_size", "all_head_size",
    "split_size", "n_heads", "n_head", "head_size", "num_key_value_heads",
)


def snapshot(model: nn.Module) -> Dict[str, Dict[str, object]]:
    """Shape attributes of every module (taken before pruning, read by the fixers)."""
    snap: Dict[str, Dict[str, object]] = {}
    for name, mod in model.named_modules():
        vals = {a: getattr(mod, a) for a in SHAPE_ATTRS if isinstance(getattr(mod, a, None), (int, tuple, list))}
        if vals:
            snap[name] = vals
    return snap


def fix_attributes(model: nn.Module, old: Dict[str, Dict[str, object]]) -> None:
    """Rewrite shape attributes from tensor shapes; ``old`` is ``snapshot(model)`` before pruning."""
    for name, mod in model.named_modules():
        prev = old.get(name, {})
        if isinstance(mod, _ConvNd):
            _fix_conv(mod, prev)
        elif isinstance(mod, nn.Linear):
            mod.out_features, mod.in_features = mod.weight.shape[0], mod.weight.shape[1]
        elif isinstance(mod, (_BatchNorm, _InstanceNorm)):
            t = mod.weight if mod.weight is not None else mod.running_mean
            if t is not None:
                mod.num_features = t.shape[0]
        elif isinstance(mod, nn.LayerNorm) or type(mod).__name__ == "RMSNorm":
            if getattr(mod, "weight", None) is not None:
                mod.normalized_shape = tuple(mod.weight.shape)
        elif isinstance(mod, nn.GroupNorm):
            if mod.weight is not None:
                mod.num_channels = mod.weight.shape[0]
        elif isinstance(mod, nn.PReLU):
            mod.num_parameters = mod.weight.numel()
        elif isinstance(mod, nn.Embedding):
            mod.embedding_dim = mod.weight.shape[1]
        elif type(mod).__name__ == "Conv1D" and isinstance(getattr(mod, "nf", None), int):
            mod.nf = mod.weight.shape[1]  # transformers' Conv1D (GPT-2): weight [in, out], forward views to nf
        elif isinstance(mod, nn.MultiheadAttention) and mod.in_proj_weight is not None:
            mod.embed_dim = mod.kdim = mod.vdim = mod.in_proj_weight.shape[1]
            mod.head_dim = mod.embed_dim // mod.num_heads
    for mod in model.modules():  # containers last: they read their children's fixed attributes
        if type(mod).__name__ == "VisionTransformer" and hasattr(mod, "conv_proj") and hasattr(mod, "hidden_dim"):
            mod.hidden_dim = mod.conv_proj.out_channels  # torchvision ViT reshapes with self.hidden_dim


def _fix_conv(mod: _ConvNd, prev: Dict[str, object]) -> None:
    w = mod.weight
    old_in = int(prev.get("in_channels", mod.in_channels))
    old_out = int(prev.get("out_channels", mod.out_channels))
    old_groups = int(prev.get("groups", mod.groups))
    if mod.transposed:
        mod.in_channels = w.shape[0]
        mod.out_channels = w.shape[1] * mod.groups
        return
    if old_groups > 1 and old_groups == old_in:  # depthwise: groups follow the channel count
        mult = max(old_out // old_in, 1)
        mod.out_channels = w.shape[0]
        mod.groups = mod.in_channels = w.shape[0] // mult
    else:
        mod.out_channels = w.shape[0]
        mod.in_channels = w.shape[1] * mod.groups
