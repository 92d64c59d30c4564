"""Small helpers on id tensors (see trace.py): compress broadcast dims, read channel columns, reduce dims."""
from __future__ import annotations

from typing import Iterable, List, Optional

import torch

from .atoms import AtomTable


def compress(t: torch.Tensor, keep: Iterable[int] = ()) -> torch.Tensor:
    """Drop (to size 1) every dim along which ``t`` is a stride-0 broadcast, except ``keep``."""
    keep = {k % t.dim() for k in keep} if t.dim() else set()
    for d in range(t.dim()):
        if d not in keep and t.shape[d] > 1 and t.stride(d) == 0:
            t = t.narrow(d, 0, 1)
    return t


def compress_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Broadcast two id tensors and drop dims where both are broadcasts."""
    a, b = torch.broadcast_tensors(a, b)
    for d in range(a.dim()):
        if a.shape[d] > 1 and a.stride(d) == 0 and b.stride(d) == 0:
            a, b = a.narrow(d, 0, 1), b.narrow(d, 0, 1)
    return a, b


def varies(t: torch.Tensor, d: int) -> bool:
    """True when ids differ along dim ``d`` (ignoring broadcast views)."""
    if t.shape[d] <= 1 or t.stride(d) == 0:
        return False
    c = compress(t, keep=[d])
    return bool((c != c.narrow(d, 0, 1)).any())


def varying_dims(t: torch.Tensor) -> List[int]:
    """The dims along which ``t``'s ids differ (broadcast views count as constant)."""
    return [d for d in range(t.dim()) if varies(t, d)]


def columns(atoms: AtomTable, ids: Optional[torch.Tensor], dim: int) -> Optional[torch.Tensor]:
    """The atom of each index along ``dim``, joining atoms that meet at the same index elsewhere."""
    if ids is None:
        return None
    c = compress(ids, keep=[dim]).movedim(dim, -1)
    n = c.shape[-1]
    rows = c.reshape(-1, n)
    if rows.shape[0] > 1:
        rows = rows[:1] if bool((rows == rows[:1]).all()) else torch.unique(rows, dim=0)
    col = rows[0].clone()
    for r in rows[1:]:
        atoms.join(col, r)
        col = torch.where(col >= 0, col, r)
    return col


def reduce_ids(ids: torch.Tensor, dims: List[int], keepdim: bool) -> torch.Tensor:
    """Ids after reducing ``dims``: kept where constant along them, else -1 (mixed channels)."""
    dims = sorted({d % ids.dim() for d in dims}) if ids.dim() else []
    first = ids
    for d in dims:
        first = first.narrow(d, 0, 1)
    mixed = [d for d in dims if varies(ids, d)]
    if mixed:
        same = (compress(ids) == compress(first).expand(compress(ids).shape))
        for d in dims:
            same = same.all(dim=d, keepdim=True)
        first = torch.where(same.expand(first.shape), first, torch.full_like(first, -1))
    if not keepdim:
        for d in reversed(dims):
            first = first.squeeze(d)
    return first


def spatial_core(atoms: AtomTable, ids: torch.Tensor, n_lead: int = 2) -> torch.Tensor:
    """Ids of a channel-first tensor with spatial dims squashed to size 1 (joined if they differ)."""
    core = ids
    for d in range(n_lead, ids.dim()):
        core = core.narrow(d, 0, 1)
    if any(varies(ids, d) for d in range(n_lead, ids.dim())):
        flat = compress(ids).movedim(1, -1)
        col = columns(atoms, compress(ids), 1)
        return col.view([1, -1] + [1] * (ids.dim() - 2)).expand(core.shape) if flat is not None else core
    return core


def varying_grid(ids: torch.Tensor, dims: List[int]) -> torch.Tensor:
    """``ids`` with broadcast dims dropped and every dim outside ``dims`` cut to its first index: the grid of the
    ids along ``dims`` (the dims they vary along)."""
    grid = compress(ids, keep=dims)
    for d in range(grid.dim()):
        if d not in dims:
            grid = grid.narrow(d, 0, 1)
    return grid


def separable_dim(lab: torch.Tensor) -> Optional[int]:
    """The one dim along which a raw parameter's labels vary (None if they mix): the dim it is sliced along."""
    for d in range(lab.dim()):
        if lab.shape[d] <= 1:
            continue
        rows = lab.movedim(d, 0).reshape(lab.shape[d], -1)
        if bool((rows == rows[:, :1]).all()):
            return d
    return None
