"""Atoms: one integer per prunable slice (an output channel, a parameter element), joined by edges.

The trace never resolves anything while it runs; it only allocates atoms and records edges ("these two
positions must be removed together"). Connected components are computed once at the end with a vectorised
label propagation, so tracing a model with 100k channels stays fast.

Atom 0 is FROZEN: anything joined to it can never be removed (model inputs, model outputs, ignored modules).
"""
from __future__ import annotations

from typing import Dict, List

import torch

FROZEN = 0


class AtomTable:
    """Allocates atom ranges and collects two kinds of edges.

    ``same`` edges say two atoms are the same channel (removed together). ``space`` edges say two atoms
    belong to the same channel space (one Group) without being the same channel, e.g. the outputs of one conv.
    """

    def __init__(self) -> None:
        self.count = 1  # atom 0 is FROZEN
        self._same: List[torch.Tensor] = []
        self._space: List[torch.Tensor] = []
        self._frozen: List[torch.Tensor] = []
        self._flags: Dict[str, List[torch.Tensor]] = {"pinned": [], "normed": [], "prefer": []}

    def new(self, n: int) -> torch.Tensor:
        """Allocate ``n`` fresh atoms that form one channel space."""
        ids = torch.arange(self.count, self.count + n, dtype=torch.long)
        self.count += n
        if n > 1:
            self._space.append(torch.stack([ids[:-1], ids[1:]], 1))
        return ids

    def new_loose(self, n: int) -> torch.Tensor:
        """Allocate ``n`` atoms with no space link (parameter elements)."""
        ids = torch.arange(self.count, self.count + n, dtype=torch.long)
        self.count += n
        return ids

    def join(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Same-channel edges between equal-shaped (broadcastable) atom tensors; negative ids are ignored."""
        a, b = torch.broadcast_tensors(a, b)
        a, b = a.reshape(-1), b.reshape(-1)
        ok = (a >= 0) & (b >= 0) & (a != b)
        a, b = a[ok], b[ok]
        if a.numel():
            key = torch.unique(a * (1 << 32) + b)  # one int64 per pair: 1-D unique is much faster than rows
            self._same.append(torch.stack([key >> 32, key & ((1 << 32) - 1)], 1))

    def freeze(self, ids: torch.Tensor) -> None:
        """Make every atom in ``ids`` unremovable."""
        flat = ids.reshape(-1)
        flat = torch.unique(flat[flat > 0])
        if flat.numel():
            self._frozen.append(torch.stack([flat, torch.zeros_like(flat)], 1))

    def pin(self, ids: torch.Tensor) -> None:
        """Atoms that cannot go one by one but may go with their whole row (a head's dims that RoPE's cos/sin or a
        per-head-dim norm weight index, shared by every head: removing whole heads keeps them consistent)."""
        self._flag("pinned", ids)

    def mark_normalized(self, ids: torch.Tensor) -> None:
        """Atoms that a normalisation or mean reads together (LayerNorm, RMSNorm, GroupNorm over channels): removing
        one changes the statistics the others are scaled by, so their removal is never exact."""
        self._flag("normed", ids)

    def prefer_whole(self, ids: torch.Tensor) -> None:
        """Atoms of heads whose dims set their softmax scale (SDPA's default 1/sqrt(head size)): removing dims would
        change the attention, so whole heads are preferred where the group is otherwise removed exactly."""
        self._flag("prefer", ids)

    def _flag(self, which: str, ids: torch.Tensor) -> None:
        flat = ids.reshape(-1)
        self._flags[which].append(torch.unique(flat[flat > 0]))

    def flagged(self, same: torch.Tensor, which: str) -> torch.Tensor:
        """Bool per component label: some atom of it was pinned (``which="pinned"``), normalised (``"normed"``) or
        prefers whole heads (``"prefer"``)."""
        out = torch.zeros(self.count, dtype=torch.bool)
        lists = self._flags[which]
        if lists:
            out[same[torch.cat(lists)]] = True
        out[0] = False
        return out

    def link_space(self, ids: torch.Tensor) -> None:
        """Put all atoms of ``ids`` in one channel space (used by head/group blockings)."""
        flat = torch.unique(ids.reshape(-1))
        flat = flat[flat > 0]
        if flat.numel() > 1:
            self._space.append(torch.stack([flat[:-1], flat[1:]], 1))

    def components(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(channel label, space label) per atom: smallest atom of its component; label 0 = frozen.

        Space labels ignore freezing, so one frozen channel does not glue unrelated spaces together.
        """
        same = _components(self.count, self._same + self._frozen)
        space = _components(self.count, self._same + self._space)
        return same, space


def _components(n: int, edges: List[torch.Tensor]) -> torch.Tensor:
    """Connected components by min-label propagation with pointer jumping (all vectorised)."""
    full = torch.arange(n, dtype=torch.long)
    if not edges:
        return full
    e = torch.cat(edges, 0)
    nodes, compact = torch.unique(e.reshape(-1), return_inverse=True)  # only atoms that have edges
    compact = compact.view(-1, 2)
    full[nodes] = nodes[_propagate(nodes.numel(), compact[:, 0], compact[:, 1])]
    return full


def _propagate(n: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Component label (smallest node index) per node; node order = atom order, so the minimum carries over."""
    labels = torch.arange(n, dtype=torch.long)
    while True:
        lu, lv = labels[u], labels[v]
        m = torch.minimum(lu, lv)
        new = labels.clone()
        new.scatter_reduce_(0, u, m, reduce="amin")
        new.scatter_reduce_(0, v, m, reduce="amin")
        new.scatter_reduce_(0, lu, m, reduce="amin")  # hook roots too, so long chains collapse fast
        new.scatter_reduce_(0, lv, m, reduce="amin")
        while True:  # pointer jumping
            jumped = new[new]
            if torch.equal(jumped, new):
                break
            new = jumped
        if torch.equal(new, labels):
            return labels
        labels = new
