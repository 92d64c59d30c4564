"""Data-movement ops are replayed on the id tensors, so index maps through cat/split/reshape/roll come for free.

A reshape that splits one channel dim into several varying dims (heads x head_dim, groups x channels of a
channel shuffle) records a *blocking*: every row of the grid must keep the same number of channels.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .idops import columns, compress, reduce_ids, spatial_core, varies, varying_dims, varying_grid
from .trace import Recorder, register

_MIRROR = [
    "view", "reshape", "flatten", "unflatten", "permute", "transpose", "swapaxes", "swapdims", "t", "movedim",
    "moveaxis", "squeeze", "unsqueeze", "expand", "expand_as", "view_as", "reshape_as", "repeat", "tile",
    "repeat_interleave", "narrow", "select", "unbind", "split", "chunk", "tensor_split", "split_with_sizes", "roll",
    "flip", "fliplr", "flipud", "rot90", "diagonal", "__getitem__", "index_select", "gather", "take_along_dim", "T",
    "mT", "unfold", "channel_shuffle", "pixel_shuffle", "pixel_unshuffle", "native_channel_shuffle",
    "broadcast_to", "ravel", "atleast_2d", "squeeze_", "unsqueeze_", "transpose_",
    "t_",
]
_SPLITTERS = {"view", "reshape", "unflatten"}
_NEED_FLOAT = {"channel_shuffle", "native_channel_shuffle", "pixel_shuffle", "pixel_unshuffle", "unfold"}


def _sub(rec: Recorder, t: Any, fill: int = 0) -> Any:
    """The id tensor to use in place of ``t`` (untracked tensors become ``fill`` everywhere)."""
    if isinstance(t, torch.Tensor):
        ids = rec.ids(t)
        if ids is None:
            ids = torch.full((), fill, dtype=torch.long).expand(t.shape)
        return ids
    return t


class NeedsRealData(RuntimeError):
    """Raised during a meta-device trace when channel ids depend on tensor values; the trace reruns for real."""


def _meta_operands(args: tuple, kwargs: dict) -> bool:
    def meta(a: Any) -> bool:
        if isinstance(a, torch.Tensor):
            return a.device.type == "meta" and a.dtype in (torch.long, torch.int, torch.bool, torch.int32)
        if isinstance(a, (list, tuple)):
            return any(meta(b) for b in a)
        return False

    return any(meta(a) for a in list(args) + list(kwargs.values()))


def _assign(rec: Recorder, out: Any, ids_out: Any) -> None:
    if isinstance(out, torch.Tensor):
        rec.set_ids(out, ids_out)
    elif isinstance(out, (list, tuple)):
        for o, i in zip(out, ids_out):
            _assign(rec, o, i)


@register(*_MIRROR)
def mirror(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Run the same op on the id tensor of the data argument."""
    x = args[0]
    ids = _sub(rec, x)
    if _meta_operands(args[1:], kwargs):  # indices computed on the meta device: values unknown
        if rec.is_loose(ids) and name == "__getitem__" and ids.dim() == 2 and isinstance(args[1], torch.Tensor):
            _gather_rows(rec, ids, args[1], out)  # a bias table [positions, heads] gathered by a position index
            return
        if rec.is_loose(ids) or not varying_dims(ids):
            return  # a parameter gathered by an index table: no channel meaning
        raise NeedsRealData(name)
    if name in ("view", "view_as"):
        name = "reshape" if name == "view" else "reshape_as"
    fn = getattr(torch.Tensor, name, None) or getattr(torch, name)
    if name in ("T", "mT"):
        res = getattr(ids, name)
    elif name == "unfold" and not (len(args) == 4 and all(isinstance(a, int) for a in args[1:])):
        res = F.unfold(ids.double(), *args[1:], **kwargs).long()  # im2col: channel c -> c*k*k .. (c+1)*k*k
    elif name in _NEED_FLOAT:
        fn = getattr(torch.Tensor, name, None) or getattr(torch, name)
        res = fn(ids.double(), *args[1:], **kwargs)
        res = res.long() if isinstance(res, torch.Tensor) else type(res)(r.long() for r in res)
    else:
        rest = list(args[1:])
        if name.endswith("_") and name[:-1] in ("squeeze", "unsqueeze", "transpose", "t"):
            fn = getattr(torch.Tensor, name[:-1])
        if name == "expand_as" or name == "reshape_as":
            rest[0] = torch.empty(rest[0].shape, device="meta")
            res = ids.expand(rest[0].shape) if name == "expand_as" else ids.reshape(rest[0].shape)
        else:
            res = fn(ids, *rest, **kwargs)
    _assign(rec, out, res)
    if name in ("channel_shuffle", "native_channel_shuffle"):  # interleaving: a column goes as a whole
        col = columns(rec.atoms, ids, 1)
        if col is not None:
            grid = col.view(int(args[1]), -1)
            rec.atoms.join(grid[:1].expand(grid.shape), grid)
            rec.atoms.link_space(grid)
    if name in ("chunk", "split", "tensor_split", "split_with_sizes"):
        _split_constraint(rec, name, args, kwargs, ids)
    if name in _SPLITTERS | {"flatten"} and isinstance(out, torch.Tensor) and not rec.is_loose(ids):
        _maybe_block(rec, ids, res)
        _check_merge(rec, ids, res)


def _gather_rows(rec: Recorder, ids: torch.Tensor, index: torch.Tensor, out: Any) -> None:
    """``table[index]`` with index values unknown (meta trace): any row may land anywhere, so the rows are joined
    column by column and the result carries one row's ids; a table whose columns are heads is then sliced by head."""
    if not isinstance(out, torch.Tensor) or index.dtype == torch.bool:
        return
    rec.atoms.join(ids, ids[:1].expand(ids.shape))
    rec.set_ids(out, ids[0].expand(out.shape))


def _split_constraint(rec: Recorder, name: str, args: tuple, kwargs: dict, ids: torch.Tensor) -> None:
    """Pieces cut by count (chunk, split(int)) must keep equal sizes; pieces cut by a size list stay whole."""
    dim = kwargs.get("dim", args[2] if len(args) > 2 else 0)
    if not varies(ids, dim):
        return
    col = columns(rec.atoms, ids, dim)
    n = col.shape[0]
    how = args[1] if len(args) > 1 else kwargs.get("chunks", kwargs.get("split_size_or_sections",
                                                                         kwargs.get("split_size")))
    pieces = None
    if name == "chunk" and isinstance(how, int) and n % how == 0:
        pieces = how
    elif name == "split" and isinstance(how, int) and n % how == 0:
        pieces = n // how
    if pieces is not None and pieces > 1:
        rec.block(col.view(pieces, -1), "groups")
    elif pieces is None:
        rec.atoms.freeze(col)


def _check_merge(rec: Recorder, before: torch.Tensor, after: torch.Tensor) -> None:
    """Merging varying dims keeps index order only if the inner vectors are rows pruned alike.

    Heads merged back (h-major) are rows of an earlier blocking: fine. A channel shuffle merges columns of
    the blocking (interleaving), which only stays consistent if each column is removed as a whole: join it.
    """
    vb = varying_dims(before)
    if len(vb) < 2 or len(varying_dims(after)) >= len(vb):
        return
    rows = varying_grid(before, vb).reshape(-1, before.shape[vb[-1]])
    if rec.known_rows(rows):
        return
    rec.atoms.join(rows[:, :1].expand(rows.shape), rows)


def _maybe_block(rec: Recorder, before: torch.Tensor, after: torch.Tensor) -> None:
    vb = varying_dims(before)
    if len(vb) != 1:
        return
    va = varying_dims(after)
    if len(va) < 2:
        return
    grid = varying_grid(after, va).reshape([after.shape[d] for d in va])
    if (grid < 0).any():
        return
    rec.block(grid, "heads")


@register("cat", "concat", "concatenate", "stack", "hstack", "vstack")
def concat(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Concatenation: untracked pieces are frozen so whatever they meet along other dims stays whole."""
    seq = args[0] if args else kwargs["tensors"]
    ids = [_sub(rec, t) for t in seq]
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    fn = getattr(torch, name)
    rec.set_ids(out, fn(ids, dim))


@register("__setitem__")
def setitem(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """In-place ``x[key] = value``: the written positions take ``value``'s ids (-1 when untracked), the rest
    keep ``x``'s.
    """
    x, key, value = args[0], args[1], args[2]
    ids = rec.ids(x)
    vids = rec.ids(value) if isinstance(value, torch.Tensor) else None
    if ids is None and vids is None:
        return
    base = (ids if ids is not None else torch.full((), -1, dtype=torch.long).expand(x.shape)).clone()
    base[key] = vids if vids is not None else -1
    rec.set_ids(x, base)


@register("pad")
def pad(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Padding a dim that carries channels adds constant (-1) positions; padding any other dim (spatial,
    tokens) only repeats the channel ids, so window partitions of padded maps stay channel-like."""
    ids = rec.ids(args[0])
    if ids is None:
        return
    padding = list(kwargs.get("pad", args[1] if len(args) > 1 else ()))
    mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
    core = ids
    for i in range(len(padding) // 2):
        d = ids.dim() - 1 - i
        if not varies(ids, d):
            core = core.narrow(d, 0, 1)
            padding[2 * i] = padding[2 * i + 1] = 0
    src = core.double().contiguous()
    if mode == "constant":
        res = F.pad(src, padding, mode="constant", value=-1.0)
    else:
        res = F.pad(src, padding, mode=mode)
    rec.set_ids(out, res.long().expand(out.shape))


_SPATIAL = [
    "avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "lp_pool1d", "lp_pool2d", "interpolate", "upsample", "upsample_nearest", "upsample_bilinear",
    "max_pool2d_with_indices", "max_pool1d_with_indices", "max_pool3d_with_indices", "_max_pool2d", "_max_pool1d",
    "fractional_max_pool2d", "adaptive_max_pool2d_with_indices", "_adaptive_max_pool2d",
    "grid_sample", "avg_pool", "max_pool",
]


@register(*_SPATIAL)
def spatial(rec: Recorder, name: str, args: tuple, kwargs: dict, out: Any) -> None:
    """Pooling/resizing over dims 2+: the channel dim (1) keeps its ids."""
    ids = rec.ids(args[0])
    if ids is None:
        return
    core = spatial_core(rec.atoms, ids)
    target = out[0] if isinstance(out, tuple) else out
    rec.set_ids(target, core.expand(target.shape))


def reduce_like(rec: Recorder, x: torch.Tensor, out: torch.Tensor, dims: list) -> None:
    """Give ``out`` the ids of ``x`` reduced over ``dims``: kept where constant along them, -1 where
    channels mix.
    """
    ids = rec.ids(x)
    if ids is not None:
        rec.set_ids(out, reduce_ids(ids, dims, keepdim=True).expand(out.shape))
