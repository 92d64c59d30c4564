"""What data-driven criteria share: which slices of a group are filters (outputs) or inputs, one pass over the
calibration data per model (cached in ``ctx``), and per-channel embeddings of a group's filters.

Criteria are called once per group, but running the data once per group would cost one pass per layer. Every
helper here therefore computes the statistics of *all* layers in one pass and stores them in ``ctx`` under a key
that names the model, so the other groups of the same ``score_groups`` call read them for free.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Dict, Iterator, List, Tuple, Union

import torch
from torch import nn

from ..errors import ConfigError
from ..graph import Group, Member

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _out_dim(mod: nn.Module) -> int:
    return 1 if isinstance(mod, TRANSPOSED) else 0


def is_filter_slice(m: Member, mod: nn.Module) -> bool:
    """The member is the weight rows that *produce* the group's channels (a conv filter, a Linear row)."""
    return (m.kind == "param" and m.attr == "weight" and isinstance(mod, CONV + TRANSPOSED + (nn.Linear,))
            and m.dim == _out_dim(mod))


def is_input_slice(m: Member, mod: nn.Module) -> bool:
    """The member is the weight columns that *read* the group's channels (next conv / Linear)."""
    if m.kind == "grouped_in":
        return True
    return (m.kind == "param" and m.attr == "weight" and isinstance(mod, CONV + TRANSPOSED + (nn.Linear,))
            and m.dim == 1 - _out_dim(mod))


def position_index(m: Member) -> torch.Tensor:
    """Group channel per position of the member's sliced dim, flattened (grouped_in: [groups, per_group])."""
    return m.index.reshape(-1)


# -- calibration data ------------------------------------------------------------------------------------------
def batches(ctx: Dict[str, Any], who: str) -> Iterator[Tuple[torch.Tensor, Any]]:
    """(x, y) batches from ``ctx["data"]`` (``y`` may be None), at most ``ctx["max_batches"]`` of them."""
    data = ctx.get("data")
    if data is None:
        raise ConfigError(f"criterion {who!r} needs data; pass make_plan(..., data=loader) with (x, y) batches "
                          "from the training split")
    limit = ctx.get("max_batches")
    it = iter(data) if limit is None else itertools.islice(data, int(limit))
    for item in it:
        if isinstance(item, (tuple, list)):
            yield item[0], (item[1] if len(item) > 1 else None)
        else:
            yield item, None


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def cached(ctx: Dict[str, Any], name: str, model: nn.Module, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per (statistic, model) per scoring call."""
    key = f"_cache:{name}:{id(model)}"
    if key not in ctx:
        ctx[key] = compute()
    return ctx[key]


def _channel_reduce(t: torch.Tensor, mod: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Sum of ``fn(t)`` per channel position: dim 1 for conv/norm activations, the last dim for Linear."""
    t = fn(t.detach().float())
    dim = t.dim() - 1 if isinstance(mod, nn.Linear) else 1
    return t.movedim(dim, 0).reshape(t.shape[dim], -1).sum(1)


def _positions(t: torch.Tensor, mod: nn.Module) -> int:
    dim = t.dim() - 1 if isinstance(mod, nn.Linear) else 1
    return t.numel() // t.shape[dim]


def activation_stats(model: nn.Module, ctx: Dict[str, Any], who: str) -> Dict[str, Dict[str, torch.Tensor]]:
    """Per module: mean |input| and zero fraction per input position, mean |output| per output channel."""

    def compute() -> Dict[str, Dict[str, torch.Tensor]]:
        acc: Dict[str, Dict[str, Any]] = {}

        def hook(name: str):
            def fn(mod, inputs, out):
                a = acc.setdefault(name, {"in_abs": 0.0, "in_zero": 0.0, "in_n": 0, "out_abs": 0.0, "out_n": 0})
                x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
                if x is not None and isinstance(mod, CONV + (nn.Linear,)):
                    a["in_abs"] = a["in_abs"] + _channel_reduce(x, mod, torch.abs)
                    a["in_zero"] = a["in_zero"] + _channel_reduce(x, mod, lambda v: (v == 0).float())
                    a["in_n"] += _positions(x, mod)
                if isinstance(out, torch.Tensor):
                    a["out_abs"] = a["out_abs"] + _channel_reduce(out, mod, torch.abs)
                    a["out_n"] += _positions(out, mod)
            return fn

        watched = (nn.modules.batchnorm._BatchNorm,) + CONV + (nn.Linear,)
        handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, watched)]
        try:
            _run_forward(model, ctx, who)
        finally:
            for h in handles:
                h.remove()
        out: Dict[str, Dict[str, torch.Tensor]] = {}
        for name, a in acc.items():
            d: Dict[str, torch.Tensor] = {}
            if a["in_n"]:
                d["in_mean"] = (a["in_abs"] / a["in_n"]).cpu().double()
                d["in_nonzero"] = (1.0 - a["in_zero"] / a["in_n"]).cpu().double()
            if a["out_n"]:
                d["out_mean"] = (a["out_abs"] / a["out_n"]).cpu().double()
            out[name] = d
        return out

    return cached(ctx, "activations", model, compute)


def _run_forward(model: nn.Module, ctx: Dict[str, Any], who: str) -> None:
    was = model.training
    model.eval()
    device = device_of(model)
    n = 0
    try:
        with torch.no_grad():
            for x, _ in batches(ctx, who):
                model(x.to(device))
                n += 1
    finally:
        model.train(was)
    if n == 0:
        raise ConfigError(f"criterion {who!r} got an empty data iterable; pass at least one (x, y) batch")


def channel_mean(group: Group, model: nn.Module, stats: Dict[str, Dict[str, torch.Tensor]], key: str) -> torch.Tensor:
    """Average of a per-input-position statistic over every position that reads each channel.

    Inputs of the layers that consume the group are used (that is where ReLU zeros show); a group nobody reads
    through a conv/Linear falls back to the outputs of its producing layers (``out_mean``).
    """
    modules = dict(model.named_modules())
    total = torch.zeros(group.size, dtype=torch.float64)
    count = torch.zeros(group.size, dtype=torch.float64)
    for m in group.members:
        mod = modules[m.module]
        if is_input_slice(m, mod) and key in stats.get(m.module, {}):
            _add(total, count, position_index(m), stats[m.module][key])
    if not bool(count.any()):
        for m in group.members:
            mod = modules[m.module]
            if m.kind == "param" and m.attr == "weight" and m.dim == 0 and "out_mean" in stats.get(m.module, {}):
                _add(total, count, position_index(m), stats[m.module]["out_mean"])
    return total / count.clamp(min=1)


def _add(total: torch.Tensor, count: torch.Tensor, index: torch.Tensor, vals: torch.Tensor) -> None:
    if vals.numel() != index.numel():
        return  # the layer saw inputs of another shape than the traced one; skip it rather than misattribute
    ok = index >= 0
    total.index_add_(0, index[ok], vals[ok])
    count.index_add_(0, index[ok], torch.ones(int(ok.sum()), dtype=torch.float64))


# -- filter embeddings -----------------------------------------------------------------------------------------
def filter_rows(group: Group, model: nn.Module, per_slice_unit: bool, keep_magnitude: bool = False) -> torch.Tensor:
    """[size, D]: each channel's filters from every coupled producing layer, concatenated.

    ``per_slice_unit`` scales each channel's part from each layer to unit norm first, so a wide layer does not
    outweigh a narrow one in a residual group, and a zero filter stays a zero row. With ``keep_magnitude`` each
    layer's part is divided by that layer's RMS row norm instead: layers weigh alike, and within a layer the
    filters keep their relative sizes. Groups with no producing conv/Linear (e.g. only norms) use every
    parameter slice.
    """
    modules = dict(model.named_modules())
    unit = "rms" if keep_magnitude else per_slice_unit
    parts = _rows(group, modules, lambda m, mod: is_filter_slice(m, mod), unit)
    if not parts:
        parts = _rows(group, modules, lambda m, mod: m.kind == "param", unit)
    if not parts:
        return torch.zeros(group.size, 1, dtype=torch.float64)
    return torch.cat(parts, 1)


def _rows(group: Group, modules: Dict[str, nn.Module], keep: Callable[[Member, nn.Module], bool],
          unit: Union[bool, str]) -> List[torch.Tensor]:
    parts = []
    for m in group.members:
        mod = modules[m.module]
        if m.kind != "param" or not keep(m, mod):
            continue
        t = getattr(mod, m.attr).detach().double().cpu().movedim(m.dim, 0)
        t = t.reshape(t.shape[0], -1)
        idx = position_index(m)
        ok = idx >= 0
        counts = torch.bincount(idx[ok], minlength=group.size)
        if int(counts.min()) != int(counts.max()) or int(counts.max()) == 0:
            continue  # channels own unequal numbers of rows here: not an embedding of each channel
        order = torch.argsort(idx[ok], stable=True)
        rows = t[ok][order].reshape(group.size, -1)
        if unit == "rms":
            rows = rows / rows.norm(dim=1).pow(2).mean().sqrt().clamp(min=1e-12)
        elif unit:
            rows = rows / rows.norm(dim=1, keepdim=True).clamp(min=1e-12)
        parts.append(rows)
    return parts
