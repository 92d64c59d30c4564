"""From a trace recording to Groups: sets of coupled parameter slices that are removed together.

A channel = a connected component of atoms that contains at least one layer output (a real channel) and is not
frozen. A Group = all channels of one channel space (e.g. a ResNet stage's residual stream, a conv's outputs
inside a dense block) with every parameter slice that indexes them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from .heads import head_units
from .idops import separable_dim
from .trace import MemberRecord, Recording


def within(name: str, prefix: str) -> bool:
    """True when module ``name`` is ``prefix`` or lies inside it (dotted names: "layer1.0" is in "layer1", "layer10"
    is not)."""
    return name == prefix or name.startswith(prefix + ".")


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
        """The sliced tensor's dotted name, ``module.attr`` (just ``attr`` on the root module)."""
        return f"{self.module}.{self.attr}" if self.module else self.attr


@dataclass
class Group:
    """Coupled channels: removing channel ``c`` removes position(s) ``c`` of every member.

    ``rows`` (optional, [n_rows, per_row]) lists channels laid out in blocks (attention heads, conv groups,
    channel-shuffle halves) that must all keep the same number of channels. ``pinned`` channels never go;
    ``dim_pinned`` ones never go alone but may go with their whole head (RoPE's rotated dims). ``heads`` lists the
    channels of each attention head (q, k and v rows together; ``fixed_heads`` cannot go whole) and
    ``head_members`` the parameter slices indexed by head (``index`` = head number). ``normalized``: a
    LayerNorm/RMSNorm/GroupNorm (or a mean) reads these channels together, so removing any is never exact.
    ``prefer_whole_heads``: the heads' dims set their attention scale (SDPA's default), so dims go only where the
    group is inexact anyway (tied to a normalised stream).
    """

    key: str
    size: int
    members: List[Member]
    rows: Optional[torch.Tensor] = None
    row_kind: str = ""
    scopes: List[Tuple[str, Tuple[int, ...]]] = field(default_factory=list)
    pinned: Optional[torch.Tensor] = None
    dim_pinned: Optional[torch.Tensor] = None
    heads: Optional[List[List[int]]] = None
    fixed_heads: set = field(default_factory=set)
    head_members: List[Member] = field(default_factory=list)
    normalized: bool = False
    prefer_whole_heads: bool = False

    @property
    def module(self) -> str:
        """Module that first produces this group's channels (used for overrides and printing)."""
        return self.members[0].module if self.members else ""

    def hard_pins(self) -> torch.Tensor:
        """Bool per channel: never removed."""
        return self.pinned if self.pinned is not None else torch.zeros(self.size, dtype=torch.bool)

    def removable_heads(self) -> List[int]:
        """Indices of the heads that may go whole (not fixed, no channel pinned for good)."""
        if not self.heads:
            return []
        hard = self.hard_pins()
        return [i for i, h in enumerate(self.heads) if i not in self.fixed_heads and not bool(hard[h].any())]

    @property
    def prunable(self) -> bool:
        """True when the group has more than one channel and some channel can go alone, or some head whole."""
        if self.size <= 1:
            return False
        stuck = self.hard_pins()
        if self.dim_pinned is not None:
            stuck = stuck | self.dim_pinned
        return not bool(stuck.all()) or (len(self.heads or []) > 1 and bool(self.removable_heads()))

    def modules(self) -> List[str]:
        """Sorted names of every module with a slice in this group."""
        return sorted({m.module for m in self.members})


@dataclass
class DependencyGraph:
    """All groups of a model plus the blocks that depth pruning may replace by identity."""

    groups: List[Group]
    residual_blocks: List[str]
    visited: set
    output_shapes: List[torch.Size] = field(default_factory=list)
    traced_in_training: bool = False

    def group(self, key: str) -> Group:
        """The group with key ``key``; raises KeyError when there is none."""
        for g in self.groups:
            if g.key == key:
                return g
        raise KeyError(key)

    def prunable_modules(self) -> List[str]:
        """Names of the modules whose channel groups can be pruned, in graph order: the unit of a per-layer
        override (``make_plan(overrides={name: ratio})``), a ratio search's refinement and a sensitivity scan."""
        names: List[str] = []
        for g in self.groups:
            if g.prunable and g.module not in names:
                names.append(g.module)
        return names

    def stream_modules(self) -> List[str]:
        """Prunable modules whose channels run through a residual connection (members inside and outside one of
        ``residual_blocks``): the stream every block of a stage reads and adds to. The other groups live inside one
        block (a bottleneck's or an inverted residual's expanded channels), so they can be cut apart from it."""
        names: List[str] = []
        for g in self.groups:
            mods = {m.module for m in g.members}
            if g.prunable and g.module not in names and any(
                    any(within(m, b) for m in mods) and not all(within(m, b) for m in mods)
                    for b in self.residual_blocks):
                names.append(g.module)
        return names

    def __repr__(self) -> str:
        lines = [f"DependencyGraph({len(self.groups)} groups)"]
        for g in self.groups:
            rows = f" rows={tuple(g.rows.shape)}" if g.rows is not None else ""
            lines.append(f"  {g.key}: {g.size} ch, {len(g.members)} slices{rows}")
        return "\n".join(lines)


def build_groups(rec: Recording) -> DependencyGraph:
    """Turn a trace recording into a DependencyGraph: connected atoms that hold a layer output become
    channels, channels of one channel space form a group, and every member (including raw parameters sliced along
    the one dim their channels run along) is attached to its group; unsliceable channels are pinned.
    """
    same, space = rec.atoms.components()
    is_channel = torch.zeros(rec.atoms.count, dtype=torch.bool)
    is_channel[same[rec.producer]] = True
    is_channel[0] = False
    head_labels = torch.zeros(rec.atoms.count, dtype=torch.bool)
    for heads, _ in rec.head_links:
        head_labels[same[heads]] = True
    head_labels[0] = False
    is_channel &= ~head_labels  # a layer output joined to a head (a per-head bias MLP) goes with its head
    head_params: List[Tuple[str, str, str, int, torch.Tensor]] = []  # (module, attr, kind, dim, head label per index)
    for r in rec.members:
        if r.atoms.dim() == 1 and bool(head_labels[same[r.atoms]].any()):
            head_params.append((r.module, r.attr, r.kind, r.dim, same[r.atoms]))

    records: List[MemberRecord] = list(rec.members)
    pinned_labels: List[int] = []
    explicit = {f"{m.module}.{m.attr}" if m.module else m.attr for m in rec.members}
    for key, atoms in rec.param_atoms.items():  # raw parameters: find the one dim their channels run along
        if key in explicit:
            continue  # a layer already said how it is sliced (e.g. a standardised conv weight)
        mod, _, attr = key.rpartition(".")
        lab = same[atoms]
        valid = is_channel[lab]
        if not bool(valid.any()):
            dim = separable_dim(torch.where(head_labels[lab], lab, torch.full_like(lab, -1)))
            if bool(head_labels[lab].any()) and dim is not None:
                line = lab.movedim(dim, 0).reshape(lab.shape[dim], -1)[:, 0]
                head_params.append((mod, attr, rec.param_kind.get(key, "param"), dim, line))
            continue
        dim = separable_dim(torch.where(valid, lab, torch.full_like(lab, -1)))
        if dim is None:
            pinned_labels += torch.unique(lab[valid]).tolist()
            continue
        row_atoms = atoms.movedim(dim, 0).reshape(atoms.shape[dim], -1)[:, 0]
        records.append(MemberRecord(mod, attr, dim, row_atoms, rec.param_kind.get(key, "param")))

    labels = [_channel_labels(r.atoms, same, is_channel) for r in records]
    chan, order = _number_channels(labels, space, rec.atoms.count)
    groups: Dict[int, Group] = {}
    for r, lab in zip(records, labels):
        ok = lab >= 0
        if not bool(ok.any()):
            continue
        sp = torch.where(ok, space[lab.clamp(min=0)], torch.full_like(lab, -1))
        index_all = torch.where(ok, chan[lab.clamp(min=0)], torch.full_like(lab, -1))
        for s_ in torch.unique(sp[ok]).tolist():
            index = torch.where(sp == s_, index_all, torch.full_like(lab, -1))
            member = Member(r.module, r.attr, r.dim, r.kind, index)
            if s_ not in groups:
                groups[s_] = Group(key="", size=0, members=[])
            groups[s_].members.append(member)
    sizes = _space_sizes(chan, space, is_channel)
    for s_, g in groups.items():
        first = g.members[0]
        g.key, g.size = f"{first.name}:{first.dim}", sizes[s_]
    for b in sorted(rec.blockings, key=lambda b: b.grid.shape[-1]):  # finest rows first: coarser ones then refine
        _apply_blocking(b, same, space, is_channel, chan, groups)
    for lbl in pinned_labels:
        g = groups.get(int(space[lbl]))
        if g is not None and int(chan[lbl]) >= 0:
            if g.pinned is None:
                g.pinned = torch.zeros(g.size, dtype=torch.bool)
            g.pinned[int(chan[lbl])] = True
    _attach_heads(rec, same, space, chan, groups, head_params, head_labels)
    _flag_channels(rec, same, space, chan, is_channel, groups)
    blocks = sorted(rec.residual_blocks)
    inner = [b for b in blocks if not any(o != b and o.startswith(b + ".") for o in blocks)]
    ordered = [groups[s_] for s_ in order if s_ in groups]
    return DependencyGraph(ordered, inner, rec.visited, list(rec.output_shapes))


def _attach_heads(rec: Recording, same: torch.Tensor, space: torch.Tensor, chan: torch.Tensor,
                  groups: Dict[int, Group], head_params: list, head_labels: torch.Tensor) -> None:
    """``Group.heads`` from the trace's head links, and parameters indexed by head as ``head_members``."""
    by_space, fixed, index = head_units(rec, same, space, chan)
    for s_, heads in by_space.items():
        g = groups.get(s_)
        if g is None or len(heads) < 2:
            continue
        flat = [c for h in heads for c in h]
        if len(flat) != len(set(flat)) or len({len(h) for h in heads}) != 1:
            continue  # heads that overlap or differ in width cannot be removed as units
        g.heads, g.fixed_heads = heads, set(fixed.get(s_, set()))
    for mod, attr, kind, dim, line in head_params:
        where = [index.get(int(x)) if bool(head_labels[x]) else None for x in line]
        spaces = {w[0] for w in where if w is not None}
        g = groups.get(next(iter(spaces))) if len(spaces) == 1 else None
        if g is None or g.heads is None:
            continue
        idx = torch.tensor([w[1] if w is not None else -1 for w in where], dtype=torch.long)
        g.head_members.append(Member(mod, attr, dim, kind, idx))


def _flag_channels(rec: Recording, same: torch.Tensor, space: torch.Tensor, chan: torch.Tensor,
                   is_channel: torch.Tensor, groups: Dict[int, Group]) -> None:
    """Soft pins (``Group.dim_pinned``), normalised groups (``Group.normalized``) and groups whose heads prefer to go
    whole (``Group.prefer_whole_heads``), from the atom flags."""
    def flagged(which: str) -> List[Tuple[Group, int]]:
        labels = (rec.atoms.flagged(same, which) & is_channel & (chan >= 0)).nonzero().squeeze(1).tolist()
        return [(groups[int(space[lab])], int(chan[lab])) for lab in labels if int(space[lab]) in groups]

    for g, _ in flagged("normed"):
        g.normalized = True
    for g, _ in flagged("prefer"):
        g.prefer_whole_heads = True
    for g, c in flagged("pinned"):
        if g.dim_pinned is None:
            g.dim_pinned = torch.zeros(g.size, dtype=torch.bool)
        g.dim_pinned[c] = True


def _soft_pin_all(g: Group) -> None:
    g.dim_pinned = torch.ones(g.size, dtype=torch.bool)


def _channel_labels(atoms: torch.Tensor, same: torch.Tensor, is_channel: torch.Tensor) -> torch.Tensor:
    """Channel label per position (the component's smallest atom), -1 where it is not a prunable channel."""
    lab = torch.where(atoms >= 0, same[atoms.clamp(min=0)], torch.zeros_like(atoms))
    return torch.where((atoms >= 0) & is_channel[lab], lab, torch.full_like(lab, -1))


def _number_channels(labels: List[torch.Tensor], space: torch.Tensor, n_atoms: int):
    """Channel index of every label inside its space, in order of first appearance over the members, and
    the spaces in order of first appearance (so keys and indices are stable across re-traces)."""
    flat = torch.cat([lab.reshape(-1) for lab in labels]) if labels else torch.zeros(0, dtype=torch.long)
    pos = torch.arange(flat.numel())
    ok = flat >= 0
    big = flat.numel() + 1
    first = torch.full((n_atoms,), big, dtype=torch.long)
    first.scatter_reduce_(0, flat[ok], pos[ok], reduce="amin")
    used = (first < big).nonzero().squeeze(1)
    f, sp = first[used], space[used]
    space_first = torch.full((n_atoms,), big, dtype=torch.long)
    space_first.scatter_reduce_(0, sp, f, reduce="amin")
    perm = torch.argsort(space_first[sp] * big + f)
    used, sp = used[perm], sp[perm]
    chan = torch.full((n_atoms,), -1, dtype=torch.long)
    if used.numel():
        spaces, counts = torch.unique_consecutive(sp, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        chan[used] = torch.arange(used.numel()) - torch.repeat_interleave(starts, counts)
        return chan, spaces.tolist()
    return chan, []


def _space_sizes(chan: torch.Tensor, space: torch.Tensor, is_channel: torch.Tensor) -> Dict[int, int]:
    used = (chan >= 0).nonzero().squeeze(1)
    sizes: Dict[int, int] = {}
    if used.numel():
        sp, counts = torch.unique(space[used], return_counts=True)
        sizes = dict(zip(sp.tolist(), counts.tolist()))
    return sizes


def _apply_blocking(b, same, space, is_channel, chan, groups) -> None:
    lab = same[b.grid.clamp(min=0)]
    valid = is_channel[lab] & (b.grid >= 0)
    if not bool(valid.any()):
        return
    spaces = set(space[b.grid[valid]].tolist())
    owners = [groups[s] for s in spaces if s in groups]
    pin = _soft_pin_all if b.kind == "heads" else _pin_all  # heads may still go whole (checked by head units)
    if b.kind == "heads":  # the module whose forward split these heads: its head attributes follow a plan
        for g in owners:
            if (b.scope, tuple(b.grid.shape)) not in g.scopes:
                g.scopes.append((b.scope, tuple(b.grid.shape)))
    if not bool(valid.all()) or len(owners) != 1:
        for g in owners:  # part frozen, or spread over groups: keep it simple and safe
            pin(g)
        return
    g = owners[0]
    rows = chan[lab].reshape(-1, b.grid.shape[-1])
    uniq = {tuple(sorted(r.tolist())): r for r in rows}
    if len(uniq) == 1:  # one row: no constraint
        return
    new = set(uniq)
    flat = [c for r in new for c in r]
    if len(flat) != len(set(flat)):
        pin(g)
        return
    if g.rows is not None:
        old = {tuple(sorted(r.tolist())) for r in g.rows}
        if old == new or _refines(old, new):
            return  # the constraint we hold already implies the new one
        if not _refines(new, old):
            merged = old | new
            flat = [c for r in merged for c in r]
            if len(flat) != len(set(flat)) or len({len(r) for r in merged}) != 1:
                pin(g)
                return
            new = merged
    rows = torch.tensor(sorted(new))
    g.rows = rows
    g.row_kind = b.kind if not g.row_kind or g.row_kind == b.kind else "mixed"


def _pin_all(g: Group) -> None:
    g.pinned = torch.ones(g.size, dtype=torch.bool)


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
