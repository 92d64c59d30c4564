"""Attention heads as units: which channels make up each head, and the parameters indexed by head.

The trace links every head of an attention product to its channel rows (q, k and v dims of that head; see
``Recorder.link_heads``) and gives the head dim of attention scores its own head atoms, which a per-head bias table
(Swin's relative position bias) is joined to. Here those links become ``Group.heads``: for each head, the channel
indices of all its rows (query heads that share a key/value head under grouped-query attention fall into one unit
with it), so a plan can remove whole heads; and ``Group.head_members``: parameter slices indexed by head, removed
with their head.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from .trace import Recording


class _Union:
    """Union-find over ints (channel keys)."""

    def __init__(self) -> None:
        self.parent: Dict[int, int] = {}

    def find(self, a: int) -> int:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def head_units(rec: Recording, same: torch.Tensor, space: torch.Tensor, chan: torch.Tensor
               ) -> Tuple[Dict[int, List[List[int]]], Dict[int, set], Dict[int, Tuple[int, int]]]:
    """Per channel space: the heads (sorted channel indices of each), the indices of heads that cannot go whole
    (a row frozen, e.g. attention weights returned as an output), and head label -> (space, head index)."""
    uf = _Union()
    label_chans: Dict[int, List[int]] = {}  # head label -> channel keys (space-qualified) it touches
    fixed_labels: set = set()
    n = int(chan.numel())
    pseudo = 0
    for heads, rows in rec.head_links:
        hl = same[heads].tolist()
        labs = same[rows]
        ch = chan[labs]
        for h, label in enumerate(hl):
            if label == 0:  # a frozen head (its scores are a model output): its channels stay a unit that stays
                pseudo -= 1
                label = pseudo
                fixed_labels.add(label)
            ok = ch[h] >= 0
            if not bool(ok.all()):  # part of the head is not removable (frozen channels)
                fixed_labels.add(label)
            if not bool(ok.any()):
                continue
            label_chans.setdefault(label, []).extend((space[labs[h][ok]] * n + ch[h][ok]).tolist())
    for keys in label_chans.values():  # every row of one head label is one unit
        for k in keys[1:]:
            uf.union(keys[0], k)
    units: Dict[int, Dict[int, set]] = {}  # space -> root -> channels
    for keys in label_chans.values():
        for k in keys:
            units.setdefault(k // n, {}).setdefault(uf.find(k), set()).add(k % n)
    heads_by_space: Dict[int, List[List[int]]] = {}
    index: Dict[int, Tuple[int, int]] = {}
    root_index: Dict[Tuple[int, int], int] = {}
    for s, by_root in units.items():
        ordered = sorted(by_root.items(), key=lambda kv: min(kv[1]))
        heads_by_space[s] = [sorted(c) for _, c in ordered]
        for i, (root, _) in enumerate(ordered):
            root_index[(s, root)] = i
    fixed: Dict[int, set] = {}
    for label, keys in label_chans.items():
        s = keys[0] // n
        i = root_index[(s, uf.find(keys[0]))]
        index[label] = (s, i)
        if label in fixed_labels:
            fixed.setdefault(s, set()).add(i)
    return heads_by_space, fixed, index
