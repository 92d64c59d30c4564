"""Layers that own parameters: conv, linear, norms, PReLU, embedding.

Each records members (which slice of which parameter belongs to which channel atom) and gives its output ids:
fresh atoms for a layer that makes new channels (conv, linear), the input's ids for one that keeps them (norms,
depthwise conv).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .idops import columns, varying_dims, varying_grid
from .trace import Recorder, register


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[i] if len(args) > i else default


def _param(rec: Recorder, t: Any, op: str) -> Optional[tuple]:
    if t is None:
        return None
    own = rec.param_of(t)
    if own is None:
        rec.unsupported(op, "its weight is computed in forward, not a parameter")
    return own


def _bias(rec: Recorder, bias: Any, out_atoms: torch.Tensor, op: str) -> None:
    """A bias parameter is a member; a bias built in forward (BEiT: cat(q_bias, zeros, v_bias)) is joined
    element-wise so its source parameters follow the output channels; a constant one pins them."""
    if bias is None:
        return
    own = rec.owner.get(id(bias)) or rec.param_of(bias)
    if own is not None:
        rec.member(own[0], own[1], 0, out_atoms, kind=own[2])
        return
    ids = rec.ids(bias)
    if ids is None:
        rec.atoms.freeze(out_atoms)
    else:
        rec.atoms.join(ids.reshape(-1), out_atoms)


def _channel_out(ids: torch.Tensor, ch_dim: int, shape: torch.Size) -> torch.Tensor:
    view = [1] * len(shape)
    view[ch_dim] = -1
    return ids.view(view).expand(shape)


@register("conv1d", "conv2d", "conv3d")
def conv(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Convolution: input channels map to the weight's dim 1 and a fresh atom per output channel to dim 0 (and
    the bias). Depthwise convs pass the input ids on (output o follows input o // mult); grouped convs block
    inputs and outputs into ``groups`` rows of equal size.
    """
    x, weight, bias = args[0], _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
    groups = int(_arg(args, kwargs, 6, "groups", 1))
    w = _param(rec, weight, name)
    col = columns(rec.atoms, rec.ids(x), 1)
    c_out, c_in = weight.shape[0], x.shape[1]
    if groups == 1:
        if col is not None:
            rec.member(w[0], w[1], 1, col)
        out_atoms = rec.new_channels(c_out)
    elif groups == c_in:  # depthwise: output channel o reads input channel o // mult
        mult = c_out // c_in
        if col is None:
            col = rec.new_channels(c_in)
            rec.atoms.freeze(col)
        out_atoms = col.repeat_interleave(mult)
    else:  # grouped: input and output come in `groups` blocks that must keep equal sizes
        if col is not None:
            grid = col.view(groups, c_in // groups)
            rec.member(w[0], w[1], 1, grid, kind="grouped_in")
            rec.block(grid, "groups")
        out_atoms = rec.new_channels(c_out)
        rec.block(out_atoms.view(groups, c_out // groups), "groups")
    rec.member(w[0], w[1], 0, out_atoms)
    _bias(rec, bias, out_atoms, name)
    if rec.owner.get(id(weight)) is None:  # a standardised weight: its row elements follow the output channel
        rec.atoms.join(rec.ids(weight).reshape(c_out, -1)[:, 0], out_atoms)
        if col is not None:  # its statistics run over the input channels: removing one rescales the others
            rec.atoms.mark_normalized(col)
    rec.set_ids(out, _channel_out(out_atoms, 1, out.shape))


@register("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def conv_transpose(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Transposed convolution: input channels map to the weight's dim 0, fresh output channels to dim 1 and
    the bias. Grouped transposed convs are refused.
    """
    x, weight, bias = args[0], _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
    groups = int(_arg(args, kwargs, 6, "groups", 1))
    w = _param(rec, weight, name)
    b = _param(rec, bias, name)
    col = columns(rec.atoms, rec.ids(x), 1)
    if groups != 1:
        rec.unsupported(name, f"grouped transposed convolution (groups={groups})")
    if col is not None:
        rec.member(w[0], w[1], 0, col)
    out_atoms = rec.new_channels(weight.shape[1])
    rec.member(w[0], w[1], 1, out_atoms)
    if b is not None:
        rec.member(b[0], b[1], 0, out_atoms)
    rec.set_ids(out, _channel_out(out_atoms, 1, out.shape))


@register("linear")
def linear(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Linear layer: the input's last dim maps to the weight's columns, fresh output channels to its rows and the
    bias. For the q/k/v projections of width-tied attention (``WIDTH_TIED_QKV``) each third of the outputs is
    joined with the input channels.
    """
    x, weight, bias = args[0], _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
    w = _param(rec, weight, name)
    col = columns(rec.atoms, rec.ids(x), -1)
    if col is not None:
        rec.member(w[0], w[1], 1, col)
    out_atoms = rec.new_channels(weight.shape[0])
    if col is not None and _width_tied_qkv(rec, w, weight, col):
        rec.atoms.join(out_atoms.view(3, -1), col.view(1, -1).expand(3, -1))
    rec.member(w[0], w[1], 0, out_atoms)
    _bias(rec, bias, out_atoms, name)
    rec.set_ids(out, _channel_out(out_atoms, out.dim() - 1, out.shape))


# Attention modules whose forward reads the head size from the *input* width (torchvision Swin:
# ``reshape(..., 3, num_heads, C // num_heads)`` with C = x.shape[-1]): q/k/v widths must follow the input.
# torchvision MaxViT reshapes the attention output back with the input's D. Class name -> qkv child name.
WIDTH_TIED_QKV = {"ShiftedWindowAttention": "qkv", "ShiftedWindowAttentionV2": "qkv",
                  "RelativePositionalMultiHeadAttention": "to_qkv"}


def _width_tied_qkv(rec: Recorder, w: tuple, weight: torch.Tensor, col: torch.Tensor) -> bool:
    parent, _, child = w[0].rpartition(".")
    mod = rec.modules.get(parent)
    return (mod is not None and WIDTH_TIED_QKV.get(type(mod).__name__) == child
            and weight.shape[0] == 3 * col.shape[0])


def _norm_members(rec: Recorder, col: torch.Tensor, tensors: list, name: str) -> None:
    for t in tensors:
        if isinstance(t, torch.Tensor):
            own = _param(rec, t, name)
            if t.dim() == 1 and t.shape[0] == col.shape[0]:
                rec.member(own[0], own[1], 0, col, kind=own[2])


@register("batch_norm", "instance_norm")
def batch_norm(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Batch/instance norm: keeps the input channels (dim 1) and maps them to weight, bias and running stats.
    A norm over a reshaped conv weight (weight standardisation) instead joins each row's elements to its output
    channel.
    """
    x = args[0]
    ids = rec.ids(x)
    if ids is None:
        return
    if rec.owner.get(id(x)) is None and rec.is_loose(ids):
        # weight standardisation: a norm over each output row of a reshaped conv weight [1, O, K]. Join each
        # row's elements (and a derived gain passed as the norm's weight) so they follow output channel o.
        col = ids.reshape(ids.shape[0], ids.shape[1], -1)[0, :, 0]  # first element of each row
        for i, n in ((3, "weight"), (4, "bias")):
            t = _arg(args, kwargs, i, n)
            tid = rec.ids(t) if isinstance(t, torch.Tensor) else None
            if tid is not None and tid.numel() == col.numel():
                rec.atoms.join(col, tid.reshape(-1))
        rec.set_ids(out, ids)
        return
    col = columns(rec.atoms, ids, 1)
    names = ["running_mean", "running_var", "weight", "bias"]
    tensors = [_arg(args, kwargs, i + 1, n) for i, n in enumerate(names)]
    _norm_members(rec, col, tensors, name)
    rec.set_ids(out, _channel_out(col, 1, out.shape) if ids.dim() > 1 else ids)


@register("group_norm")
def group_norm(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """GroupNorm: keeps the input channels, maps them to weight and bias, and blocks them into ``num_groups``
    rows that must keep equal sizes.
    """
    x = args[0]
    ids = rec.ids(x)
    if ids is None:
        return
    groups = int(_arg(args, kwargs, 1, "num_groups"))
    col = columns(rec.atoms, ids, 1)
    rec.atoms.mark_normalized(col)
    _norm_members(rec, col, [_arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")], name)
    if 1 < groups < col.shape[0]:
        rec.block(col.view(groups, -1), "groups")
    rec.set_ids(out, _channel_out(col, 1, out.shape))


@register("layer_norm", "rms_norm")
def layer_norm(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """LayerNorm/RMSNorm over the last dim: keeps those channels and maps them to weight (and bias), or to the
    module's ``normalized_shape`` when it has no weight. A norm over several dims freezes its channels.
    """
    x = args[0]
    ids = rec.ids(x)
    if ids is None:
        return
    shape = _arg(args, kwargs, 1, "normalized_shape")
    k = len(shape)
    if k != 1:
        rec.atoms.freeze(ids)
        rec.set_ids(out, ids)
        return
    if _per_head(rec, ids):  # a norm over each head's dims (q/k norm): its weight is shared by the heads
        rec.atoms.pin(ids)
        rec.atoms.mark_normalized(ids)
        rec.set_ids(out, ids)
        return
    col = columns(rec.atoms, ids, -1)
    rec.atoms.mark_normalized(col)
    tensors = [_arg(args, kwargs, 2, "weight")] + ([_arg(args, kwargs, 3, "bias")] if name == "layer_norm" else [])
    _norm_members(rec, col, tensors, name)
    if tensors[0] is None and rec.scope:
        rec.member(rec.scope, "normalized_shape", 0, col, kind="attr")
    rec.set_ids(out, _channel_out(col, out.dim() - 1, out.shape))


def _per_head(rec: Recorder, ids: torch.Tensor) -> bool:
    """True when the normalised last dim holds heads' dims: every vector along it is a row of a heads blocking (the
    reshape that split heads off), as for q/k norms; a stream whose tokens differ (a class token) is no such case."""
    vd = varying_dims(ids)
    if len(vd) < 2 or vd[-1] != ids.dim() - 1:
        return False
    return rec.known_rows(torch.unique(varying_grid(ids, vd).reshape(-1, ids.shape[-1]), dim=0))


@register("prelu")
def prelu(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """PReLU: keeps the input channels; a per-channel weight maps to them (a single shared weight maps to none)."""
    x, weight = args[0], _arg(args, kwargs, 1, "weight")
    ids = rec.ids(x)
    if ids is None:
        return
    if weight.numel() > 1:
        col = columns(rec.atoms, ids, 1)
        _norm_members(rec, col, [weight], name)
    rec.set_ids(out, ids)


@register("embedding")
def embedding(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Embedding: the weight's columns (dim 1) become fresh channels on the output's last dim."""
    weight = _arg(args, kwargs, 1, "weight")
    w = _param(rec, weight, name)
    out_atoms = rec.new_channels(weight.shape[1])
    rec.member(w[0], w[1], 1, out_atoms)
    rec.set_ids(out, _channel_out(out_atoms, out.dim() - 1, out.shape))
