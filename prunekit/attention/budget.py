"""Budget-aware attention training: the gate penalty falls only on as many channels per group as the plan removes.

    budgets = budget_groups(model, inputs, ratio=0.67)   # {host: GroupBudget}, on the plain model
    train_attention(model, data, sparsity=3e-2, budget=budgets)

A uniform L1 penalty on every gate pushes whole layers down (penalty 1e-2 silences layers:
docs/journal/2026-11-26-criteria-ucmerced.md); the
plan, though, removes a known number of channels per group. With a budget, each training batch penalizes only
that many channels of each group, the ones whose batch-mean gate is lowest, so the attention learns which set of
channels the frozen network can lose *together* (a channel whose loss hurts resists the push and another takes
its place) while the other gates are free to compensate. The counts come from a dry plan on the plain model:
under uniform scope they do not depend on the criterion.

A group can be gated by several attention modules (a ResNet stage's residual stream: the BN of every block's last
conv and of the downsample), and the plan removes a channel from all of them at once. Its hosts therefore share
one :class:`GroupBudget`: the pushed channels are the lowest of the group's summed gates (each host's latest
batch mean), the same channels in every host.
"""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

from ..apply.oneshot import checked_plan
from ..errors import ConfigError


class GroupBudget:
    """The ``k`` channels of one group to push, chosen from the latest batch-mean gates of all its hosts.

    ``index[host][i]`` is the group channel at the host's position i (-1: a position outside the group)."""

    def __init__(self, k: int, size: int, index: Dict[str, torch.Tensor]) -> None:
        self.k, self.size, self.index = k, size, index
        self.latest: Dict[str, torch.Tensor] = {}
        self.hosts = torch.zeros(size)  # per group channel: how many hosts hold it (fixed, so counted once)
        for i in index.values():
            self.hosts.index_add_(0, i[i >= 0], torch.ones(int((i >= 0).sum())))

    def counts(self) -> Dict[str, int]:
        """Per host: how many of its positions belong to pushed channels (k for a host holding the whole group)."""
        return {h: round(self.k * int((i >= 0).sum()) / self.size) for h, i in self.index.items()}

    def mask(self, host: str, gate_mean: torch.Tensor) -> torch.Tensor:
        """Record ``host``'s batch-mean gate and return its 0/1 mask of the channels to push now. Hosts not seen
        yet count as gate 1 (their value at insertion)."""
        self.latest[host] = gate_mean.detach()
        device = gate_mean.device
        total = torch.zeros(self.size, device=device)
        seen = torch.zeros(self.size, device=device)
        for h, g in self.latest.items():
            idx = self.index[h].to(device)
            ok = idx >= 0
            total.index_add_(0, idx[ok], g[ok].float())
            seen.index_add_(0, idx[ok], torch.ones(int(ok.sum()), device=device))
        hosts = self.hosts.to(device)
        mean = (total + (hosts - seen)) / hosts.clamp(min=1)  # unseen hosts at gate 1
        pushed = torch.zeros(self.size, dtype=torch.bool, device=device)
        pushed[mean.topk(min(self.k, self.size), largest=False).indices] = True
        idx = self.index[host].to(device)
        out = torch.zeros(idx.numel(), dtype=gate_mean.dtype, device=device)
        out[idx >= 0] = pushed[idx[idx >= 0]].to(gate_mean.dtype)
        return out


def budget_groups(model: nn.Module, inputs: Any, **plan_options: Any) -> Dict[str, GroupBudget]:
    """Layer name -> the :class:`GroupBudget` of the group whose channels its weight rows are, for every group the
    plan ``make_plan(model, inputs, **plan_options)`` shrinks (convs, BNs, Linears; attention hosts are among them,
    and hosts of one group share one budget). Call it on the plain model, before attention is inserted."""
    if plan_options.get("scope", "uniform") != "uniform":
        raise ConfigError("the attention budget needs uniform scope (per-layer counts known before training); "
                          "drop the budget or the global scope")
    plan, graph = checked_plan(model, inputs, criterion="l2", **plan_options)
    out: Dict[str, GroupBudget] = {}
    for gp in plan.groups:
        index = {m.module: m.index.clone() for m in graph.group(gp.key).members
                 if m.kind == "param" and m.attr == "weight" and m.dim == 0}
        shared = GroupBudget(len(gp.remove), gp.size, index)
        out.update({name: shared for name in index})
    return out


def restrict(budgets: Dict[str, GroupBudget], hosts: Any) -> Dict[str, GroupBudget]:
    """The budgets of the attention hosts only, each group's index cut down to its hosts (so that layers without
    attention, e.g. the convs before the BNs, neither vote nor wait)."""
    hosts = set(hosts)
    shared: Dict[int, GroupBudget] = {}
    out: Dict[str, GroupBudget] = {}
    for name, b in budgets.items():
        if name not in hosts:
            continue
        if id(b) not in shared:
            shared[id(b)] = GroupBudget(b.k, b.size, {h: i for h, i in b.index.items() if h in hosts})
        out[name] = shared[id(b)]
    return out
