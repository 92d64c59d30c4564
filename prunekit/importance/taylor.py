"""First-order Taylor importance (Molchanov et al. 2019, "Importance Estimation for Neural Network Pruning").

Removing channel c zeroes every coupled parameter w_s of it (its filter, its BN entries, the next layer's input
columns), so to first order the loss changes by -sum_s g_s w_s. The importance is the square of that change,
averaged over mini-batches b:

    score_c = mean_b ( sum_{s in S_c} g_s^(b) * w_s )^2

g^(b) = dL/dw on batch b (cross-entropy, model in eval mode so BN statistics are not touched). One backward pass
per batch serves every group: per batch only the per-channel sums along each parameter dim are kept (a few
numbers per channel, not a copy of the gradients). Needs ``data``; ``ctx["max_batches"]`` bounds the pass.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from ..graph import Group
from .base import CRITERIA
from .observe import CONV, batches, cached, device_of

Key = Tuple[str, object]  # (parameter name, dim or "grouped")


def _reductions(model: nn.Module, named: List[Tuple[str, nn.Parameter]],
                grads: List[torch.Tensor]) -> Dict[Key, torch.Tensor]:
    """Per parameter and dim: sum of g*w over every other dim (plus block-wise sums for grouped convs)."""
    modules = dict(model.named_modules())
    out: Dict[Key, torch.Tensor] = {}
    for (name, p), g in zip(named, grads):
        if g is None:
            continue
        gw = (g.detach() * p.detach()).double()
        for d in range(gw.dim()):
            v = gw.movedim(d, 0)
            out[(name, d)] = v.reshape(v.shape[0], -1).sum(1).cpu()
        mod = modules.get(name.rpartition(".")[0])
        if isinstance(mod, CONV) and mod.groups > 1 and name.endswith("weight"):
            blocks = gw.reshape(mod.groups, gw.shape[0] // mod.groups, *gw.shape[1:])
            out[(name, "grouped")] = blocks.movedim(2, 1).reshape(mod.groups, gw.shape[1], -1).sum(2).cpu()
    return out


def taylor_terms(model: nn.Module, ctx: Dict) -> List[Dict[Key, torch.Tensor]]:
    """One dict of per-dim g*w sums per calibration batch (cached in ctx for all groups)."""

    def compute() -> List[Dict[Key, torch.Tensor]]:
        named = [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]
        flags = [p.requires_grad for _, p in named]
        was = model.training
        device = device_of(model)
        terms = []
        try:
            model.eval()
            for _, p in named:
                p.requires_grad_(True)
            for x, y in batches(ctx, "taylor"):
                if y is None:
                    raise ConfigError("criterion 'taylor' needs labelled batches (x, y) to compute the loss")
                loss = nn.functional.cross_entropy(model(x.to(device)).float(), y.to(device))
                grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
                terms.append(_reductions(model, named, list(grads)))
        finally:
            for (_, p), f in zip(named, flags):
                p.requires_grad_(f)
            model.train(was)
        if not terms:
            raise ConfigError("criterion 'taylor' got an empty data iterable; pass at least one (x, y) batch")
        return terms

    return cached(ctx, "taylor", model, compute)


@CRITERIA.register("taylor")
def taylor(group: Group, model: nn.Module, ctx: Dict) -> torch.Tensor:
    """First-order Taylor importance: mean over batches of (sum of g*w over the channel's coupled slices)^2,
    the squared loss change from removing the channel (higher = kept). Needs labelled ``data`` (x, y).
    """
    per_batch = []
    for red in taylor_terms(model, ctx):
        total = torch.zeros(group.size, dtype=torch.float64)
        for m in group.members:
            if m.kind not in ("param", "grouped_in"):
                continue
            name = f"{m.module}.{m.attr}" if m.module else m.attr
            vals = red.get((name, "grouped" if m.kind == "grouped_in" else m.dim))
            if vals is None:
                continue
            vals, idx = vals.reshape(-1), m.index.reshape(-1)
            if vals.numel() != idx.numel():
                continue
            ok = idx >= 0
            total.index_add_(0, idx[ok], vals[ok])
        per_batch.append(total.square())
    return torch.stack(per_batch).mean(0)
