"""Products between activations (attention) and packed attention layers.

``q @ k^T`` joins q's and k's channels over the contracted dim (they must be pruned alike); ``attn @ v`` passes
v's channel ids on; a parameter operand acts like a linear layer. nn.MultiheadAttention ties q/k/v/out widths
to its embed_dim, so its projections are coupled to the residual stream and pruned per head uniformly.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .idops import columns, varies
from .ops_layers import _arg, _bias, _channel_out, _param
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
    """Matrix products. ``x @ W`` with a 2-D parameter W acts as a linear layer (W's rows join x's last dim,
    its columns are new channels); between activations, the contracted dims of ``a`` and ``b`` are joined and the
    channel ids constant along it (e.g. v's in ``attn @ v``) carry to the output.
    """
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
        _bias(rec, bias, out_atoms, name)  # transformers' Conv1D: addmm(bias, x, W)
        rec.set_ids(out, _channel_out(out_atoms, out.dim() - 1, out.shape))
        return
    if pa is not None:
        rec.unsupported(name, "a parameter on the left of a product")
    ia, ib = rec.ids(a), rec.ids(b)
    if (ia is not None and ib is not None and not varies(ia, -2) and not varies(ib, -1)
            and varies(ia, -1) and varies(ib, -2)):
        # contracted dim: a[..., m, k] meets b[..., k, n]; only channel-like ids (constant over tokens m, n)
        ka = _first(ia, -2).squeeze(-2)
        kb = _first(ib, -1).squeeze(-1)
        ka, kb = torch.broadcast_tensors(ka, kb)
        rec.atoms.join(ka, kb)
        heads = _link_rows(rec, ia, -1, None)  # q @ k^T: the scores get one head atom per head
        if heads is not None and out.dim() >= 3:
            _link_rows(rec, ib, -2, heads)
            rec.set_ids(out, heads.view(-1, 1, 1).expand(out.shape))
            return
    elif ia is not None and ib is not None:
        heads = _score_heads(rec, ia)  # probabilities @ v: v's rows belong to the scores' heads
        if heads is not None:
            _link_rows(rec, ib, -1, heads)
    ca = _carry(ia, -1) if ia is not None and varies(ia, -2) else None
    cb = _carry(ib, -2) if ib is not None and varies(ib, -1) else None
    res = _join_carries(rec, [c.expand(out.shape) if c is not None and c.dim() == out.dim() else None
                              for c in (ca, cb)])
    if bias is not None and rec.ids(bias) is not None and res is not None:
        rec.atoms.join(res, rec.ids(bias).expand(out.shape))
    if res is not None:
        rec.set_ids(out, res)


@register("scaled_dot_product_attention")
def sdpa(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """scaled_dot_product_attention: joins q's and k's channels (the contracted head dim), links each head's q, k and
    v rows (so whole heads go together) and a per-head ``attn_mask`` (a relative position bias) to the head; the
    output takes v's channel ids. Grouped-query attention (fewer k/v heads, ``enable_gqa``) maps query head h to
    key/value head h // (Hq / Hkv), so a key/value head goes with the query heads that share it.
    """
    q, k, v = args[0], args[1], args[2]
    mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
    iq, ik, iv = rec.ids(q), rec.ids(k), rec.ids(v)
    hq = q.shape[-3] if q.dim() >= 3 else 1
    if iq is not None and ik is not None:
        a, b = torch.broadcast_tensors(_first(iq, -2), _per_query_head(_first(ik, -2), hq))
        rec.atoms.join(a, b)
    heads = _link_rows(rec, iq, -1, None)
    if heads is not None:
        _link_rows(rec, ik, -1, heads)
        _link_rows(rec, iv, -1, heads)
        _join_head_mask(rec, mask, heads)
    if kwargs.get("scale", args[6] if len(args) > 6 else None) is None and iq is not None:
        rec.atoms.prefer_whole(iq)  # the default scale is 1/sqrt(head size): shrinking a head changes its softmax
    if iv is not None:
        rec.set_ids(out, _per_query_head(_first(iv, -2), hq).expand(out.shape))


def _per_query_head(ids: torch.Tensor, hq: int) -> torch.Tensor:
    """k/v ids with their heads repeated to the query's head count (grouped-query attention), else unchanged."""
    if ids.dim() >= 3 and 1 < ids.shape[-3] < hq and hq % ids.shape[-3] == 0:
        return ids.repeat_interleave(hq // ids.shape[-3], dim=-3)
    return ids


def head_rows(ids: Optional[torch.Tensor], ch_dim: int) -> Optional[torch.Tensor]:
    """[H, D] channel atoms of a per-head activation laid out [..., H, tokens, D] (``ch_dim`` -1) or
    [..., H, D, tokens] (``ch_dim`` -2): None unless the ids vary by head and by channel and nowhere else."""
    if ids is None or ids.dim() < 3:
        return None
    hd, cd = ids.dim() - 3, ch_dim % ids.dim()
    if not varies(ids, hd) or not varies(ids, cd):
        return None
    if any(varies(ids, d) for d in range(ids.dim()) if d not in (hd, cd)):
        return None
    rows = ids[tuple(slice(None) if d in (hd, cd) else 0 for d in range(ids.dim()))]
    return rows if cd > hd else rows.t()


def _link_rows(rec: Recorder, ids: Optional[torch.Tensor], ch_dim: int,
               heads: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Link the per-head rows of ``ids`` to ``heads`` (fresh head atoms when None); returns the head atoms used."""
    if ids is None:
        return heads
    if heads is not None:
        ids = _per_query_head(ids, heads.numel())
    rows = head_rows(ids, ch_dim)
    if rows is None or (heads is not None and rows.shape[0] != heads.numel()) or bool((rows < 0).any()):
        return heads
    if heads is None:
        heads = rec.new_heads(rows.shape[0])
    rec.link_heads(heads, rows)
    return heads


def _join_head_mask(rec: Recorder, mask: Any, heads: torch.Tensor) -> None:
    """A mask/bias with one slice per head (Swin's relative position bias) is sliced with the heads."""
    im = rec.ids(mask) if isinstance(mask, torch.Tensor) else None
    if im is None or im.dim() < 3 or im.shape[-3] != heads.numel() or not varies(im, im.dim() - 3):
        return
    rec.atoms.join(im, heads.view(-1, 1, 1))


def _score_heads(rec: Recorder, ia: torch.Tensor) -> Optional[torch.Tensor]:
    """The head atoms of attention scores/probabilities (ids that vary by head only), else None."""
    if ia.dim() < 3 or varies(ia, -1) or varies(ia, -2) or not varies(ia, ia.dim() - 3):
        return None
    heads = ia[tuple(slice(None) if d == ia.dim() - 3 else 0 for d in range(ia.dim()))]
    return heads if all(int(h) in rec.head_atoms for h in heads.tolist()) else None


@register("multi_head_attention_forward")
def mha(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """nn.MultiheadAttention's functional forward: joins query, key and value widths with the in/out projection
    rows and columns (all tied to embed_dim) and blocks the channels by head so heads keep equal widths; the output
    takes the query's channel ids.
    """
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
    """The fused MultiheadAttention fast path hides the projections, so it is refused (UnsupportedOpError)."""
    rec.unsupported(name, "the fused fast path; call the model in training mode or with grad enabled")


@register("einsum")
def einsum(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Two-operand einsum without ellipsis: contracted letters join, constant ids carry to the output."""
    eq = args[0].replace(" ", "")
    ops = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
    if "->" not in eq or "..." in eq or len(ops) != 2 or not isinstance(out, torch.Tensor):
        rec.unsupported(name, f"equation {args[0]!r} (two operands, explicit output, no '...')")
    lhs, rhs = eq.split("->")
    la, lb = lhs.split(",")
    contracted = (set(la) & set(lb)) - set(rhs)
    shared = set(la) & set(lb) & set(rhs)
    ids = [rec.ids(t) for t in ops]
    if ids[0] is not None and ids[1] is not None and contracted:
        views = [_einsum_view(i, letters, shared, contracted) for i, letters in zip(ids, (la, lb))]
        if all(v is not None for v in views):
            a, b = torch.broadcast_tensors(*views)
            rec.atoms.join(a, b)
    res = _join_carries(rec, [_einsum_carry(i, letters, rhs, out.shape) for i, letters in zip(ids, (la, lb))])
    if res is not None:
        rec.set_ids(out, res)


def _join_carries(rec: Recorder, carries: list) -> Optional[torch.Tensor]:
    """Channel ids an output carries from both operands: the first one found, joined with the others. A parameter's
    carry that is constant where the other varies (a per-head position bias beside v's per-dim channels) is one
    value shared by many channels, not a channel of its own: it is dropped, not joined."""
    found = [c for c in carries if c is not None]
    found.sort(key=lambda c: rec.is_loose(c))  # activation channels first
    for c in found[1:]:
        if rec.is_loose(c) and any(varies(found[0], d) and not varies(c, d) for d in range(c.dim())):
            continue
        rec.atoms.join(found[0], c)
    return found[0] if found else None


def _einsum_view(ids: torch.Tensor, letters: str, shared: set, contracted: set) -> Optional[torch.Tensor]:
    keep = sorted(shared) + sorted(contracted)
    t = ids
    for d, ch in enumerate(letters):
        if ch not in keep:
            if varies(ids, d):
                return None
            t = t.narrow(d, 0, 1)
    t = t.squeeze(tuple(d for d, ch in enumerate(letters) if ch not in keep)) if len(keep) < len(letters) else t
    remaining = [ch for ch in letters if ch in keep]
    return t.permute([remaining.index(ch) for ch in keep])


def _einsum_carry(ids: Optional[torch.Tensor], letters: str, rhs: str, shape: torch.Size) -> Optional[torch.Tensor]:
    if ids is None:
        return None
    t = ids
    gone = [d for d, ch in enumerate(letters) if ch not in rhs]
    for d in gone:
        if varies(ids, d):
            return None
        t = t.narrow(d, 0, 1)
    if gone:
        t = t.squeeze(tuple(gone))
    remaining = [ch for ch in letters if ch in rhs]
    t = t.permute([remaining.index(ch) for ch in rhs if ch in remaining])
    view = [t.shape[[ch for ch in rhs if ch in remaining].index(ch)] if ch in remaining else 1 for ch in rhs]
    return t.reshape(view).expand(shape)
