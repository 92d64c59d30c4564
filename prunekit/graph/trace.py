"""Runtime trace: run one forward pass under a TorchFunctionMode and follow channel identities.

Why not torch.fx? symbolic_trace fails on data-dependent Python (swin's window shifts, maxvit, most timm models
with shape checks). A runtime trace sees exactly the ops that ran, with real shapes, for any model that runs.

Every tensor that carries channel information gets an *id tensor* (``t._pk_ids``): an int64 tensor of the same
shape whose entries are atoms (see atoms.py), -1 where a position has no channel identity. Ids are usually
stride-0 expanded views (a conv output is ``atoms.view(1, C, 1, 1).expand(...)``), so they cost no memory.
Data-movement ops (view, permute, cat, roll, getitem, ...) are mirrored on the id tensor; element-wise ops join
the atoms at equal positions; layers (conv, linear, norms, attention) record *members*: which parameter slices
belong to which atoms. Handlers live in ops_*.py and register by op name.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import UnsupportedOpError
from .atoms import AtomTable
from .idops import compress

Handler = Callable[["Recorder", str, tuple, dict, Any], None]
HANDLERS: Dict[str, Handler] = {}
# Ops that never carry channel data (shape queries, dtype checks, factories without tensor inputs).
QUIET = {
    "size", "dim", "shape", "dtype", "device", "numel", "is_contiguous", "stride", "__len__", "__get__", "ndim",
    "requires_grad", "is_floating_point", "data_ptr", "element_size", "item", "tolist", "__bool__", "__int__",
    "__float__", "__index__", "grad_fn", "is_cuda", "layout", "__format__", "__repr__", "storage_offset",
    "_is_view", "untyped_storage", "is_sparse", "is_complex", "nelement", "get_device", "is_nested", "__hash__",
    "__iter__", "__contains__", "names", "is_leaf", "output_nr", "_version", "__array__", "register_hook",
    "retain_grad", "backward", "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor", "zeros_like",
    "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "arange", "isfinite", "isnan", "all_gather",
    "argmax", "argmin", "argsort", "sort_indices", "nonzero", "_has_compatible_shallow_copy_type", "data",
    "__reduce_ex__", "__deepcopy__", "__setstate__", "_make_subclass",
}


def register(*names: str) -> Callable[[Handler], Handler]:
    """Register one handler for several op names (``add``, ``__add__``, ``add_`` ...)."""

    def deco(fn: Handler) -> Handler:
        for n in names:
            HANDLERS[n] = fn
        return fn

    return deco


@dataclass
class MemberRecord:
    """A slice of one parameter/buffer/attribute along ``dim``; ``atoms[i]`` owns index ``i``."""

    module: str
    attr: str
    dim: int
    atoms: torch.Tensor  # 1-D, or 2-D [groups, per_group] for kind == "grouped_in"
    kind: str = "param"  # param | buffer | attr | grouped_in


@dataclass
class BlockingRecord:
    """Channels laid out as a grid [..., rows, per_row]; every row must keep the same count."""

    scope: str
    grid: torch.Tensor
    kind: str  # "heads" (reshape split) or "groups" (grouped conv / GroupNorm)


@dataclass
class Recording:
    atoms: AtomTable
    members: List[MemberRecord]
    blockings: List[BlockingRecord]
    param_atoms: Dict[str, torch.Tensor]  # "module.attr" -> element atoms (lazily atomised raw params)
    param_kind: Dict[str, str]
    producer: torch.Tensor  # bool per atom: allocated by a layer output (a real channel)
    residual_blocks: List[str]
    visited: set
    output_shapes: List[torch.Size] = field(default_factory=list)
    head_links: List[Tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


class Recorder:
    """Mutable state of one trace; handlers call its helpers."""

    def __init__(self, model: nn.Module, ignore: List[str]) -> None:
        self.atoms = AtomTable()
        self.members: Dict[Tuple[str, str, int], MemberRecord] = {}
        self.blockings: List[BlockingRecord] = []
        self._rows: set = set()
        self.param_atoms: Dict[str, torch.Tensor] = {}
        self.param_kind: Dict[str, str] = {}
        self.producer_ranges: List[Tuple[int, int]] = []
        self.owner: Dict[int, Tuple[str, str, str]] = {}
        self.modules: Dict[str, nn.Module] = dict(model.named_modules())
        for mname, mod in model.named_modules():
            for pname, p in mod._parameters.items():
                if p is not None and id(p) not in self.owner:
                    self.owner[id(p)] = (mname, pname, "param")
            for bname, b in mod._buffers.items():
                if b is not None and id(b) not in self.owner:
                    self.owner[id(b)] = (mname, bname, "buffer")
        self.ignore = ignore
        self.stack: List[str] = [""]
        self.tagged: List[weakref.ref] = []
        self.residual_blocks: List[str] = []
        self.visited: set = set()
        self._atom_owner: List[Tuple[int, str]] = []  # (first atom, "module.attr") of atomised raw params
        self.head_links: List[Tuple[torch.Tensor, torch.Tensor]] = []  # (head atoms [H], channel rows [H, D])
        self._head_rows: Dict[int, torch.Tensor] = {}
        self.head_atoms: set = set()

    # ---- scope -------------------------------------------------------------------------------------------
    @property
    def scope(self) -> str:
        """Name of the module whose forward is running now ("" for the root)."""
        return self.stack[-1]

    def ignored(self, name: str) -> bool:
        """True when module ``name`` is in the ignore list or inside an ignored module."""
        return any(name == ig or name.startswith(ig + ".") for ig in self.ignore)

    # ---- ids ---------------------------------------------------------------------------------------------
    def ids(self, t: Any) -> Optional[torch.Tensor]:
        """Id tensor of ``t``; parameters/buffers get element atoms on first generic use."""
        if not isinstance(t, torch.Tensor):
            return None
        got = t.__dict__.get("_pk_ids") if hasattr(t, "__dict__") else None
        if got is not None:
            return got
        own = self.owner.get(id(t))
        if own is None:
            return None
        key = f"{own[0]}.{own[1]}" if own[0] else own[1]
        if key not in self.param_atoms:
            atoms = self.atoms.new_loose(t.numel()).view(t.shape)
            self.param_atoms[key] = atoms
            self.param_kind[key] = own[2]
            self._atom_owner.append((int(atoms.reshape(-1)[0]) if t.numel() else 0, key))
        return self.param_atoms[key]

    def set_ids(self, t: Any, ids: Optional[torch.Tensor]) -> None:
        """Attach id tensor ``ids`` to activation ``t`` (expanded or reshaped to its shape). Parameters, None and
        ids without any channel (all -1) are skipped.
        """
        if not isinstance(t, torch.Tensor) or ids is None or id(t) in self.owner or ids.device.type == "meta":
            return
        if tuple(ids.shape) != tuple(t.shape):
            ids = ids.expand(t.shape) if ids.dim() == t.dim() or ids.dim() == 0 else ids.reshape(t.shape)
        if (compress(ids) < 0).all():
            return
        t._pk_ids = ids
        self.tagged.append(weakref.ref(t))

    def tracked(self, t: Any) -> bool:
        """True when ``t`` carries ids or is a parameter/buffer of the model."""
        return isinstance(t, torch.Tensor) and ("_pk_ids" in getattr(t, "__dict__", {}) or id(t) in self.owner)

    def param_of(self, t: Any) -> Optional[Tuple[str, str, str]]:
        """(module, attr, kind) for a parameter/buffer, also when it was reshaped and reshaped back."""
        if not isinstance(t, torch.Tensor):
            return None
        own = self.owner.get(id(t))
        if own is not None:
            return own
        ids = t.__dict__.get("_pk_ids") if hasattr(t, "__dict__") else None
        if ids is None or ids.numel() == 0:
            return None
        first = int(ids.reshape(-1)[0])
        for start, key in self._atom_owner:
            if start == first:
                src = self.param_atoms[key]
                if src.shape == ids.shape and torch.equal(src, ids):
                    mname, _, attr = key.rpartition(".")
                    return mname, attr, "param"
        return None

    def is_loose(self, ids: torch.Tensor) -> bool:
        """True when ``ids`` start with an element atom of a raw parameter (not an activation channel)."""
        flat = ids.reshape(-1)[:1] if ids.numel() else ids
        if not flat.numel() or int(flat[0]) <= 0:
            return False
        a = int(flat[0])
        return any(start <= a < start + self.param_atoms[key].numel() for start, key in self._atom_owner)

    # ---- records -----------------------------------------------------------------------------------------
    def new_channels(self, n: int) -> torch.Tensor:
        """``n`` fresh atoms for a layer's output channels (real channels); frozen inside an ignored module."""
        atoms = self.atoms.new(n)
        if n:
            self.producer_ranges.append((int(atoms[0]), int(atoms[-1]) + 1))
        if self.ignored(self.scope):
            self.atoms.freeze(atoms)
        return atoms

    def member(self, module: str, attr: str, dim: int, atoms: torch.Tensor, kind: str = "param") -> None:
        """Record that slice ``dim`` of ``module.attr`` belongs to ``atoms``. A module used twice joins both uses'
        atoms so they prune alike (frozen if the shapes differ); slices of ignored modules freeze their atoms.
        """
        key = (module, attr, dim)
        if self.ignored(module):
            self.atoms.freeze(atoms)
        old = self.members.get(key)
        if old is None:
            self.members[key] = MemberRecord(module, attr, dim, atoms.clone(), kind)
        elif old.atoms.shape == atoms.shape:
            self.atoms.join(old.atoms, atoms)  # a shared module: both uses must prune alike
        else:
            self.atoms.freeze(atoms)
            self.atoms.freeze(old.atoms)

    def block(self, grid: torch.Tensor, kind: str) -> None:
        """Record channels laid out as ``grid`` rows (heads, conv groups) that must all keep the same count."""
        self.atoms.link_space(grid)
        self.blockings.append(BlockingRecord(self.scope, grid.clone(), kind))
        self._rows.update(frozenset(r.tolist()) for r in grid.reshape(-1, grid.shape[-1]))

    def link_heads(self, heads: torch.Tensor, rows: torch.Tensor) -> None:
        """Attention head ``heads[h]`` (a head atom, see ``new_heads``) reads or writes the channels ``rows[h]`` (its
        q, k or v dims). Rows of one head share a channel space, so a plan sees q/k and v of a head as one unit and
        removes whole heads together; the rows must also keep equal widths (one head size per module)."""
        self.head_links.append((heads.clone(), rows.clone()))
        for h, row in zip(heads.tolist(), rows):
            first = self._head_rows.setdefault(h, row)
            if first is not row:
                self.atoms.link_space(torch.cat([first, row]))
        self.atoms.link_space(rows)

    def new_heads(self, n: int) -> torch.Tensor:
        """``n`` head atoms: ids for the head dim of attention scores (never channels themselves); a parameter joined
        to them (a relative position bias table) is sliced by head."""
        heads = self.atoms.new_loose(n)
        self.head_atoms.update(heads.tolist())
        return heads

    def row_sets(self) -> set:
        """Atom sets of every blocking row recorded so far."""
        return self._rows

    def known_rows(self, rows: torch.Tensor) -> bool:
        """True when every row of ``rows`` [n, width] is a row of a blocking recorded so far (heads split off)."""
        return all(frozenset(r.tolist()) in self._rows for r in rows)

    def unsupported(self, op: str, why: str = "") -> None:
        """Raise UnsupportedOpError for ``op`` in the current module, naming the ``ignore`` entry that skips it."""
        where = self.scope or "<model>"
        extra = f" ({why})" if why else ""
        raise UnsupportedOpError(
            f"pruning cannot follow op {op!r} in module {where!r}{extra}; "
            f"skip it with ignore=[{where!r}] (CLI: --ignore {where})"
        )

    def finish(self) -> Recording:
        """End the trace: strip the ids from every tagged tensor and return the Recording."""
        producer = torch.zeros(self.atoms.count, dtype=torch.bool)
        for a, b in self.producer_ranges:
            producer[a:b] = True
        for ref in self.tagged:
            t = ref()
            if t is not None:
                t.__dict__.pop("_pk_ids", None)
                t.__dict__.pop("_pk_roots", None)
        return Recording(self.atoms, list(self.members.values()), self.blockings, self.param_atoms,
                         self.param_kind, producer, self.residual_blocks, self.visited,
                         head_links=self.head_links)


class _Mode(TorchFunctionMode):
    def __init__(self, rec: Recorder) -> None:
        super().__init__()
        self.rec = rec

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name == "__get__":
            name = getattr(getattr(func, "__self__", None), "__name__", name)
        if name in QUIET:
            return out
        rec = self.rec
        if not _any_tracked(rec, args, kwargs):
            return out
        handler = HANDLERS.get(name)
        if handler is None:
            if not _has_tensor(out):
                return out
            if _only_frozen(rec, args, kwargs):  # e.g. masks built from token ids: no channel to follow
                for t in flatten_outputs(out):
                    rec.set_ids(t, torch.zeros((), dtype=torch.long).expand(t.shape))
                return out
            if rec.ignored(rec.scope):
                for t in _tensors(args, kwargs):
                    i = rec.ids(t)
                    if i is not None:
                        rec.atoms.freeze(i)
                return out
            rec.unsupported(name)
        handler(rec, name, args, kwargs, out)
        return out


def _tensors(args: tuple, kwargs: dict) -> List[torch.Tensor]:
    found = []
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor):
            found.append(a)
        elif isinstance(a, (list, tuple)):
            found.extend(x for x in a if isinstance(x, torch.Tensor))
    return found


def _any_tracked(rec: Recorder, args: tuple, kwargs: dict) -> bool:
    return any(rec.tracked(t) for t in _tensors(args, kwargs))


def _only_frozen(rec: Recorder, args: tuple, kwargs: dict) -> bool:
    """True when every tracked operand carries only frozen ids (model inputs such as token ids and what is computed
    from them): any op on them yields frozen ids, whatever it does."""
    for t in _tensors(args, kwargs):
        if rec.tracked(t):
            ids = rec.ids(t)
            if ids is None or rec.is_loose(ids) or bool((compress(ids) > 0).any()):
                return False
    return True


def _has_tensor(out: Any) -> bool:
    if isinstance(out, torch.Tensor):
        return True
    if isinstance(out, (list, tuple)):
        return any(isinstance(x, torch.Tensor) for x in out)
    return False


def flatten_outputs(out: Any) -> List[torch.Tensor]:
    """All tensors in a nested output (tensor, tuple, list, dict, namedtuple, dataclass-like). A key/value cache
    (``transformers``' ``DynamicCache`` and kin) is state for the next call, not an output whose width must stay:
    pruning key/value heads shrinks it, so it is left out."""
    if isinstance(out, torch.Tensor):
        return [out]
    if type(out).__name__.endswith("Cache"):
        return []
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten_outputs(v)]
    if hasattr(out, "__dict__"):
        return [t for v in vars(out).values() for t in flatten_outputs(v)]
    return []
