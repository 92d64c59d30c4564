"""Products between activations (attention) and packed attention layers.

``q @ k^T`` joins q's and k's channels over the contracted dim (they must be pruned alike); ``attn @ v`` passes
v's channel ids on; a parameter operand acts like a linear layer. nn.MultiheadAttention ties q/k/v/out widths
to its embed_dim, so its projections are coupled to the residual stream and pruned per head uniformly.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .idops import columns, varies
from .ops_layers import _arg, _channel_out, _param
from .trace import Recorder, register


def _first(ids: torch.Tensor, d: int) -> torch.Tensor:
    return ids.narrow(d, 0, 1)


def _carry(ids: Optional[torch.Tensor], contract: int) -> Optional[torch.Tensor]:
    """Ids that survive the product: only when constant along the contracted dim."""
    if ids is None or varies(ids, contract):
        return None
    return _first(ids, contract)


@register("matmul", "__matmul__", "__rmatmul__", "bmm", "mm", "baddbmm", "addmm", "addbmm")
def matmul(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    if name in ("baddbmm", "addmm", "addbmm"):
        bias, a, b = args[0], args[1], args[2]
    else:
        bias, a, b = None, args[0], args[1]
        if name == "__rmatmul__":
            a, b = b, a
    if a.dim() < 2 or b.dim() < 2 or not isinstance(out, torch.Tensor):
        rec.unsupported(name, "vector products are not followed")
    pa, pb = rec.owner.get(id(a)), rec.owner.get(id(b))
    if pb is not None and b.dim() == 2:  # x @ W: W acts as a linear layer stored [in, out]
        col = columns(rec.atoms, rec.ids(a), -1)
        if col is not None:
            rec.member(pb[0], pb[1], 0, col, kind=pb[2])
        out_atoms = rec.new_channels(b.shape[1])
        rec.member(pb[0], pb[1], 1, out_atoms, kind=pb[2])
        rec.set_ids(out, _channel_out(out_atoms, out.dim() - 1, out.shape))
        return
    if pa is not None:
        rec.unsupported(name, "a parameter on the left of a product")
    ia, ib = rec.ids(a), rec.ids(b)
    if ia is not None and ib is not None:  # contracted dim: a[..., m, k] meets b[..., k, n]
        ka = _first(ia, -2).squeeze(-2)
        kb = _first(ib, -1).squeeze(-1)
        ka, kb = torch.broadcast_tensors(ka, kb)
        rec.atoms.join(ka, kb)
    ca, cb = _carry(ia, -1), _carry(ib, -2)
    res = None
    for c in (ca, cb):
        if c is None:
            continue
        c = c.expand(out.shape) if c.dim() == out.dim() else None
        if c is None:
            continue
        if res is None:
            res = c
        else:
            rec.atoms.join(res, c)
    if bias is not None and rec.ids(bias) is not None and res is not None:
        rec.atoms.join(res, rec.ids(bias).expand(out.shape))
    if res is not None:
        rec.set_ids(out, res)


@register("scaled_dot_product_attention")
def sdpa(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    q, k, v = args[0], args[1], args[2]
    iq, ik, iv = rec.ids(q), rec.ids(k), rec.ids(v)
    if iq is not None and ik is not None:
        a, b = torch.broadcast_tensors(_first(iq, -2), _first(ik, -2))
        rec.atoms.join(a, b)
    if iv is not None:
        rec.set_ids(out, _first(iv, -2).expand(out.shape))


@register("multi_head_attention_forward")
def mha(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    names = ["query", "key", "value", "embed_dim_to_check", "num_heads", "in_proj_weight", "in_proj_bias",
             "bias_k", "bias_v", "add_zero_attn", "dropout_p", "out_proj_weight", "out_proj_bias"]
    a = {n: _arg(args, kwargs, i, n) for i, n in enumerate(names)}
    if a["in_proj_weight"] is None or a["bias_k"] is not None:
        rec.unsupported(name, "separate q/k/v projection weights or bias_k/bias_v")
    q = columns(rec.atoms, rec.ids(a["query"]), -1)
    if q is None:
        q = rec.new_channels(a["query"].shape[-1])
        rec.atoms.freeze(q)
    for other in ("key", "value"):
        c = columns(rec.atoms, rec.ids(a[other]), -1)
        if c is not None:
            rec.atoms.join(q, c)
        else:
            rec.atoms.freeze(q)
    q3 = torch.cat([q, q, q])
    w = _param(rec, a["in_proj_weight"], name)
    rec.member(w[0], w[1], 0, q3)
    rec.member(w[0], w[1], 1, q)
    if a["in_proj_bias"] is not None:
        b = _param(rec, a["in_proj_bias"], name)
        rec.member(b[0], b[1], 0, q3)
    ow = _param(rec, a["out_proj_weight"], name)
    rec.member(ow[0], ow[1], 0, q)
    rec.member(ow[0], ow[1], 1, q)
    if a["out_proj_bias"] is not None:
        ob = _param(rec, a["out_proj_bias"], name)
        rec.member(ob[0], ob[1], 0, q)
    rec.stack.append(w[0])
    rec.block(q.view(int(a["num_heads"]), -1), "heads")
    rec.stack.pop()
    res = out[0] if isinstance(out, tuple) else out
    rec.set_ids(res, _channel_out(q, res.dim() - 1, res.shape))


@register("_native_multi_head_attention")
def native_mha(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    rec.unsupported(name, "the fused fast path; call the model in training mode or with grad enabled")
