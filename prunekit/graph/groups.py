"""From a trace recording to Groups: sets of coupled parameter slices that are removed together.

A channel = a connected component of atoms that contains at least one layer output (a real channel) and is not
frozen. A Group = all channels of one channel space (e.g. a ResNet stage's residual stream, a conv's outputs
inside a dense block) with every parameter slice that indexes them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from .trace import MemberRecord, Recording


@dataclass
class Member:
    """Slice ``dim`` of ``module.attr``; ``index[i]`` = the group channel that owns position i (-1: not ours).

    ``kind`` is param, buffer, attr (a module attribute such as LayerNorm.normalized_shape) or grouped_in
    (a grouped conv's input dim; ``index`` is then [groups, per_group]).
    """

    module: str
    attr: str
    dim: int
    kind: str
    index: torch.Tensor

    @property
    def name(self) -> str:
        return f"{self.module}.{self.attr}" if self.module else self.attr


@dataclass
class Group:
    """Coupled channels: removing channel ``c`` removes position(s) ``c`` of every member.

    ``rows`` (optional, [n_rows, per_row]) lists channels laid out in blocks (attention heads, conv groups,
    channel-shuffle halves) that must all keep the same number of channels. ``pinned`` channels never go.
    """

    key: str
    size: int
    members: List[Member]
    rows: Optional[torch.Tensor] = None
    row_kind: str = ""
    scopes: List[Tuple[str, Tuple[int, ...]]] = field(default_factory=list)
    pinned: Optional[torch.Tensor] = None

    @property
    def module(self) -> str:
        """Module that first produces this group's channels (used for overrides and printing)."""
        return self.members[0].module if self.members else ""

    @property
    def prunable(self) -> bool:
        return self.size > 1 and (self.pinned is None or not bool(self.pinned.all()))

    def modules(self) -> List[str]:
        return sorted({m.module for m in self.members})


@dataclass
class DependencyGraph:
    """All groups of a model plus the blocks that depth pruning may replace by identity."""

    groups: List[Group]
    residual_blocks: List[str]
    visited: set

    def group(self, key: str) -> Group:
        for g in self.groups:
            if g.key == key:
                return g
        raise KeyError(key)

    def __repr__(self) -> str:
        lines = [f"DependencyGraph({len(self.groups)} groups)"]
        for g in self.groups:
            rows = f" rows={tuple(g.rows.shape)}" if g.rows is not None else ""
            lines.append(f"  {g.key}: {g.size} ch, {len(g.members)} slices{rows}")
        return "\n".join(lines)


def build_groups(rec: Recording) -> DependencyGraph:
    same, space = rec.atoms.components()
    is_channel = torch.zeros(rec.atoms.count, dtype=torch.bool)
    is_channel[same[rec.producer]] = True
    is_channel[0] = False

    order: List[int] = []  # space labels in order of first appearance
    chan_idx: Dict[int, Dict[int, int]] = {}
    parts: Dict[int, List[Member]] = {}
    pinned: Dict[int, set] = {}

    def add(rec_m: MemberRecord, atoms: torch.Tensor) -> None:
        safe = atoms.clamp(min=0)
        lab = torch.where(atoms >= 0, same[safe], torch.zeros_like(atoms))
        valid = (atoms >= 0) & is_channel[lab]
        if not bool(valid.any()):
            return
        sp = torch.where(valid, space[safe], torch.full_like(atoms, -1))
        for s in _ordered_unique(sp[valid]):
            if s not in chan_idx:
                chan_idx[s], parts[s], pinned[s] = {}, [], set()
                order.append(s)
            table = chan_idx[s]
            mine = valid & (sp == s)
            for lbl in _ordered_unique(lab[mine]):
                table.setdefault(lbl, len(table))
            lut = _lookup(table, lab)
            index = torch.where(mine, lut, torch.full_like(lab, -1))
            parts[s].append(Member(rec_m.module, rec_m.attr, rec_m.dim, rec_m.kind, index))

    for m in rec.members:
        add(m, m.atoms)
    for key, atoms in rec.param_atoms.items():
        mod, _, attr = key.rpartition(".")
        lab = same[atoms]
        valid = is_channel[lab]
        if not bool(valid.any()):
            continue
        dim = _separable_dim(torch.where(valid, lab, torch.full_like(lab, -1)))
        if dim is None:
            for lbl in _ordered_unique(lab[valid]):
                s = int(space[lbl])
                pinned.setdefault(s, set()).add(lbl)
            continue
        row_atoms = atoms.movedim(dim, 0).reshape(atoms.shape[dim], -1)[:, 0]
        add(MemberRecord(mod, attr, dim, row_atoms, rec.param_kind.get(key, "param")), row_atoms)

    groups: Dict[int, Group] = {}
    for s in order:
        first = parts[s][0]
        groups[s] = Group(key=f"{first.name}:{first.dim}", size=len(chan_idx[s]), members=parts[s])
    for b in rec.blockings:
        _apply_blocking(b, same, space, is_channel, chan_idx, groups)
    for s, g in groups.items():
        pins = [chan_idx[s][lbl] for lbl in pinned.get(s, ()) if lbl in chan_idx[s]]
        if pins:
            g.pinned = torch.zeros(g.size, dtype=torch.bool)
            g.pinned[pins] = True
    blocks = sorted(rec.residual_blocks)
    inner = [b for b in blocks if not any(o != b and o.startswith(b + ".") for o in blocks)]
    return DependencyGraph([groups[s] for s in order], inner, rec.visited)


def _apply_blocking(b, same, space, is_channel, chan_idx, groups) -> None:
    lab = same[b.grid.clamp(min=0)]
    valid = is_channel[lab] & (b.grid >= 0)
    if not bool(valid.any()):
        return
    spaces = set(space[b.grid[valid]].tolist())
    owners = [groups[s] for s in spaces if s in groups]
    if not bool(valid.all()) or len(owners) != 1:
        for g in owners:  # part frozen, or spread over groups: keep it simple and safe
            g.pinned = torch.ones(g.size, dtype=torch.bool)
        return
    g = owners[0]
    table = chan_idx[next(iter(spaces))]
    rows = _lookup(table, lab).reshape(-1, b.grid.shape[-1])
    uniq = {tuple(sorted(r.tolist())): r for r in rows}
    if len(uniq) == 1:  # one row: no constraint
        return
    new = set(uniq)
    flat = [c for r in new for c in r]
    if len(flat) != len(set(flat)):
        g.pinned = torch.ones(g.size, dtype=torch.bool)
        return
    if b.kind == "heads":
        g.scopes.append((b.scope, tuple(b.grid.shape)))
    if g.rows is not None:
        old = {tuple(sorted(r.tolist())) for r in g.rows}
        if old == new or _refines(old, new):
            return  # the constraint we hold already implies the new one
        if not _refines(new, old):
            merged = old | new
            flat = [c for r in merged for c in r]
            if len(flat) != len(set(flat)) or len({len(r) for r in merged}) != 1:
                g.pinned = torch.ones(g.size, dtype=torch.bool)
                return
            new = merged
    rows = torch.tensor(sorted(new))
    g.rows = rows
    g.row_kind = b.kind if not g.row_kind or g.row_kind == b.kind else "mixed"


def _refines(fine: set, coarse: set) -> bool:
    """Every coarse row is a union of the same number of equal-size fine rows (so equal fine counts imply
    equal coarse counts)."""
    if len({len(r) for r in fine}) != 1:
        return False
    owner = {c: r for r in fine for c in r}
    counts = set()
    for row in coarse:
        parts = {owner.get(c) for c in row}
        if None in parts or sum(len(p) for p in parts) != len(row):
            return False
        counts.add(len(parts))
    return len(counts) == 1


def _ordered_unique(t: torch.Tensor) -> List[int]:
    vals, inv = torch.unique(t.reshape(-1), return_inverse=True)
    first = torch.full((vals.numel(),), t.numel(), dtype=torch.long)
    first.scatter_reduce_(0, inv, torch.arange(t.numel()), reduce="amin")
    return vals[torch.argsort(first)].tolist()


def _lookup(table: Dict[int, int], labels: torch.Tensor) -> torch.Tensor:
    keys = torch.tensor(list(table.keys()), dtype=torch.long)
    vals = torch.tensor(list(table.values()), dtype=torch.long)
    sorted_keys, perm = torch.sort(keys)
    pos = torch.searchsorted(sorted_keys, labels.clamp(min=0)).clamp(max=len(keys) - 1)
    hit = sorted_keys[pos] == labels
    return torch.where(hit, vals[perm][pos], torch.full_like(labels, -1))


def _separable_dim(lab: torch.Tensor) -> Optional[int]:
    """The one dim along which the channel labels of a raw parameter vary (None if they mix)."""
    for d in range(lab.dim()):
        if lab.shape[d] <= 1:
            continue
        rows = lab.movedim(d, 0).reshape(lab.shape[d], -1)
        if bool((rows == rows[:, :1]).all()):
            return d
    return None
