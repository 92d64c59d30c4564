"""Compressed sparse checkpoint: a pruned model's file really shrinks (about 8.5x at 90% sparsity, losslessly).

A pruned model saved densely is as large as the original, and a generic compressor does not reach the entropy of
"which weights are zero" plus the kept values. This format stores, per weight tensor, the positions of the
nonzero weights (a bitmask, or entropy-coded gaps between positions, whichever compresses smaller) and the
nonzero values (losslessly, or on request in fp16/bf16, int8 with per-channel scales, or k-means shared values),
and everything else (BN, biases, counters) plainly; the whole stream is zstd-compressed. Never pickle.

File layout (little-endian)::

    MAGIC (8 bytes) | version u32 | raw_len u64 | comp_len u64 | raw_crc32 u32 | outer_crc32 u32 | zstd(raw)
    raw = header_len u32 | header JSON | sections (positions of all tensors, then values, then plain tensors)

The header lists each tensor (name, dtype, shape, how it is coded, which sections) and the checkpoint's
description. CRCs over the outer fields and the raw stream turn any truncation or bit flip into a
``CheckpointError``; the parser validates every field so a crafted file cannot crash it either. Sizes are checked
before they are allocated: the raw stream may be at most :data:`MAX_EXPANSION` times the compressed one, and the
tensors the header declares (an all-zero tensor costs a few bytes to declare) at most :data:`MAX_EXPANSION` times
the file (beyond a floor of :data:`DENSE_FLOOR` bytes); a ``check`` callback given to :func:`read_compressed` sees
the declared shapes (as meta tensors) before any tensor is decoded, so a caller can compare them with the model.

    write_compressed("m.pks", model.state_dict(), {"arch": ...}, values="int8")
    tensors, description = read_compressed("m.pks")
"""
from __future__ import annotations

import json
import math
import struct
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import zstandard as zstd

from ..errors import CheckpointError, ConfigError
from ..files import atomic_path
from ..sparse import quantize as q
from ..sparse.positions import KINDS as POSITION_KINDS
from ..sparse.positions import decode_positions, encode_positions

MAGIC = b"\x89PKSPZ\r\n"
VERSION = 1
FORMAT = "prunekit-sparse"
_OUTER = struct.Struct("<IQQI")
_CRC = struct.Struct("<I")
PREFIX_LEN = len(MAGIC) + _OUTER.size + _CRC.size
DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
    torch.int8, torch.uint8, torch.bool)}
_INT_VIEW = {2: torch.int16, 4: torch.int32, 8: torch.int64}
_GROUPS = ("positions", "values", "plain")
# The most a real file expands: dense tensors over file bytes reach ~1000x only for a model pruned to ~99.9%
# (kept values still cost their bytes); the raw stream over the zstd stream stays near 1-3x for weights.
MAX_EXPANSION = 1000
DENSE_FLOOR = 256 << 20  # a small file may always declare this many dense bytes
RAW_FLOOR = 64 << 20
# Called with the declared tensors (meta device: shapes and dtypes, no memory) and the description, before decoding.
DeclaredCheck = Callable[[Dict[str, torch.Tensor], Dict[str, Any]], None]


def is_sparse_coded(name: str, t: torch.Tensor) -> bool:
    """Weight-like tensors (floating, >= 2-D) get positions + values; the rest is stored plainly."""
    return t.is_floating_point() and t.ndim >= 2 and t.dtype in DTYPES.values()


def kept_mask(t: torch.Tensor) -> torch.Tensor:
    """Nonzero by bit pattern, so a -0.0 is a kept value and the lossless round trip stays bit-exact."""
    return t.contiguous().view(_INT_VIEW[t.element_size()]).flatten() != 0


# -- writing -----------------------------------------------------------------------------------------------------
class _Sections:
    """Collects byte sections by group so similar data sits together in the zstd stream."""

    def __init__(self) -> None:
        self.items: List[Tuple[str, bytes]] = []

    def add(self, group: str, data: bytes) -> int:
        self.items.append((group, data))
        return len(self.items) - 1

    def layout(self) -> Tuple[List[List[int]], bytes, Dict[str, int]]:
        order = sorted(range(len(self.items)), key=lambda i: _GROUPS.index(self.items[i][0]))
        table: List[List[int]] = [[0, 0]] * len(self.items)
        chunks, offset, per_group = [], 0, Counter()
        for i in order:
            group, data = self.items[i]
            table[i] = [offset, len(data)]
            chunks.append(data)
            offset += len(data)
            per_group[group] += len(data)
        return table, b"".join(chunks), dict(per_group)


def _mask_source(name: str, t: torch.Tensor, tensors: Dict[str, torch.Tensor]) -> str | None:
    """For a saved mask ``@mask/W`` equal to W's nonzero pattern: W (the mask then costs nothing to store)."""
    weight = tensors.get(name[len("@mask/"):]) if name.startswith("@mask/") else None
    if weight is None or t.dtype != torch.bool or weight.shape != t.shape or not is_sparse_coded(name[6:], weight):
        return None
    return name[len("@mask/"):] if torch.equal(t.flatten().cpu(), kept_mask(weight.detach().cpu())) else None


def _encode_tensor(name: str, t: torch.Tensor, values: str, sections: _Sections, stats: Counter,
                   tensors: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    t = t.detach().cpu().contiguous()
    if t.dtype not in DTYPES.values():
        raise ConfigError(f"tensor {name!r} has dtype {t.dtype}, which the compressed format does not store")
    entry: Dict[str, Any] = {"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
    if t.dtype == torch.bool:
        source = _mask_source(name, t, tensors)
        if source is not None:
            entry.update(layout="mask_of", of=source)
        else:
            bits = np.packbits(t.flatten().numpy(), bitorder="little").tobytes()
            entry.update(layout="bits", sections=[sections.add("positions", bits)])
        return entry
    if not is_sparse_coded(name, t):
        entry.update(layout="plain", sections=[sections.add("plain", q.to_bytes(t))])
        return entry
    mask = kept_mask(t)
    kind, pos_secs = encode_positions(mask)
    fmt_name = values if not name.startswith("@") else "fp32"  # "@" = training state: never quantized
    fmt, opts = q.resolve(fmt_name)
    flat = t.flatten()
    kept_values = flat[mask]
    rows = torch.nonzero(mask).flatten() // max(1, t.numel() // max(1, t.shape[0]))
    val_secs, meta = fmt.encode(kept_values, rows, t.shape[0], **opts)
    stats[kind] += 1
    stats["nnz"] += int(mask.sum())
    stats["sparse_numel"] += t.numel()
    entry.update(layout="sparse", nnz=int(mask.sum()), positions=kind, values=fmt_name, meta={**opts, **meta},
                 pos_sections=[sections.add("positions", s) for s in pos_secs],
                 val_sections=[sections.add("values", s) for s in val_secs])
    return entry


def write_compressed(path: str | Path, tensors: Dict[str, torch.Tensor], description: Dict[str, Any],
                     values: str = "fp32", level: int = 19) -> Dict[str, Any]:
    """Write ``tensors`` + ``description`` to ``path`` (atomically); returns sizes and coding statistics.

    ``values``: ``fp32`` (lossless, bit-exact in each tensor's dtype), ``fp16``, ``bf16``, ``int8``, or
    ``kmeansB`` (B-bit weight sharing, e.g. ``kmeans4``). Only weight-like tensors are quantized.
    """
    q.resolve(values)  # fail fast on a bad format name
    if not isinstance(level, int) or not 1 <= level <= 22:
        raise ConfigError(f"level={level!r} must be a zstd level from 1 to 22")
    sections, stats = _Sections(), Counter()
    entries = [_encode_tensor(name, t, values, sections, stats, tensors) for name, t in tensors.items()]
    table, body, per_group = sections.layout()
    header = {"format": FORMAT, "version": VERSION, "values": values, "sections": table, "tensors": entries,
              "description": description}
    try:
        header_bytes = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise ConfigError(f"checkpoint description is not plain JSON ({e}); pass only str/number/list/dict values")
    raw = _CRC.pack(len(header_bytes)) + header_bytes + body
    comp = zstd.ZstdCompressor(level=level, write_checksum=True, write_content_size=True).compress(raw)
    outer = _OUTER.pack(VERSION, len(raw), len(comp), zlib.crc32(raw))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(MAGIC + outer + _CRC.pack(zlib.crc32(outer)) + comp)
    dense = sum(t.numel() * t.element_size() for t in tensors.values())
    file_bytes = PREFIX_LEN + len(comp)
    return {"path": str(path), "values": values, "bytes": file_bytes, "dense_bytes": dense,
            "ratio": dense / file_bytes, "header_bytes": len(header_bytes), "raw_bytes": len(raw),
            "section_bytes": per_group, "nnz": stats["nnz"], "sparse_numel": stats["sparse_numel"],
            "positions": {k: stats[k] for k in POSITION_KINDS if stats[k]}}


# -- reading -----------------------------------------------------------------------------------------------------
def is_compressed(path: str | Path) -> bool:
    """True when ``path`` starts with this format's magic bytes (cheap: reads 8 bytes)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_compressed(path: str | Path, check: Optional[DeclaredCheck] = None
                    ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Dense tensors (pruned positions as +0.0) and the description. Any damage raises ``CheckpointError``.

    ``check(declared, description)`` runs before any tensor is allocated, on the declared tensors as meta tensors;
    it raises to refuse the file (``prunekit.storage.checkpoint`` compares them with the described model).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {e.strerror}") from None
    try:
        return _parse(data, check)
    except CheckpointError as e:
        raise CheckpointError(str(e) if str(path) in str(e) else f"{path}: {e}") from None
    except (ValueError, KeyError, TypeError, IndexError, ArithmeticError, RuntimeError, struct.error,
            zstd.ZstdError) as e:
        raise CheckpointError(f"{path} is a corrupted compressed checkpoint ({type(e).__name__}: {e}); "
                              f"re-create it with prunekit") from None


def _raw_stream(data: bytes) -> bytes:
    if len(data) < PREFIX_LEN or data[:len(MAGIC)] != MAGIC:
        raise CheckpointError("not a prunekit compressed checkpoint (bad magic bytes or truncated header)")
    outer = data[len(MAGIC):len(MAGIC) + _OUTER.size]
    version, raw_len, comp_len, raw_crc = _OUTER.unpack(outer)
    if _CRC.unpack_from(data, len(MAGIC) + _OUTER.size)[0] != zlib.crc32(outer):
        raise CheckpointError("corrupted file header (checksum mismatch)")
    if version > VERSION:
        raise CheckpointError(f"written by a newer prunekit (format v{version}, this reads v{VERSION}); upgrade")
    if len(data) - PREFIX_LEN != comp_len:
        raise CheckpointError(f"truncated or padded: {len(data) - PREFIX_LEN} compressed bytes, expected {comp_len}")
    if raw_len > max(RAW_FLOOR, MAX_EXPANSION * comp_len):
        raise CheckpointError(f"its header declares a {raw_len:,}-byte stream in {comp_len:,} compressed bytes, more "
                              f"than {MAX_EXPANSION}x; the file was edited or damaged")
    comp = data[PREFIX_LEN:]
    if zstd.get_frame_parameters(comp).content_size != raw_len:
        raise CheckpointError("corrupted compressed stream (frame size does not match the header)")
    raw = zstd.ZstdDecompressor().decompress(comp, max_output_size=raw_len)
    if len(raw) != raw_len or zlib.crc32(raw) != raw_crc:
        raise CheckpointError("corrupted compressed stream (checksum mismatch)")
    return raw


def _check_entry(entry: Any, n_sections: int) -> Tuple[str, torch.dtype, List[int]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ValueError("tensor entry without a name")
    dtype = DTYPES[entry["dtype"]]
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(isinstance(s, int) and 0 <= s < 2**40 for s in shape):
        raise ValueError(f"bad shape {shape!r}")
    ids = entry.get("sections", []) + entry.get("pos_sections", []) + entry.get("val_sections", [])
    if not all(isinstance(i, int) and 0 <= i < n_sections for i in ids):
        raise ValueError("section reference out of range")
    return entry["name"], dtype, shape


def _check_declared_size(declared: Dict[str, Tuple[torch.dtype, List[int]]], file_bytes: int) -> None:
    """Refuse a header that declares far more dense bytes than a real file of this size can hold."""
    sizes = {name: math.prod(shape) * dtype.itemsize for name, (dtype, shape) in declared.items()}
    total = sum(sizes.values())
    if total > max(DENSE_FLOOR, MAX_EXPANSION * file_bytes):
        name = max(sizes, key=sizes.get)
        raise CheckpointError(f"its header declares {total / 2**30:,.1f} GiB of tensors ({name} "
                              f"{list(declared[name][1])} alone is {sizes[name] / 2**30:,.1f} GiB) in a "
                              f"{file_bytes:,}-byte file, more than {MAX_EXPANSION}x; the file was edited or damaged")


def _parse(data: bytes, check: Optional[DeclaredCheck] = None) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    raw = memoryview(_raw_stream(data))
    header_len = _CRC.unpack_from(raw, 0)[0]
    header = json.loads(bytes(raw[_CRC.size:_CRC.size + header_len]))
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError("header is not a prunekit-sparse header")
    body = raw[_CRC.size + header_len:]
    table = header["sections"]
    if not all(isinstance(s, list) and len(s) == 2 and all(isinstance(v, int) and v >= 0 for v in s)
               and s[0] + s[1] <= len(body) for s in table):
        raise ValueError("section table points outside the stream")
    section = [body[off:off + length] for off, length in table]
    description = header.get("description")
    if not isinstance(description, dict) or not isinstance(header["tensors"], list):
        raise ValueError("missing description or tensor list")
    checked = [_check_entry(entry, len(section)) for entry in header["tensors"]]  # every shape before any memory
    declared = {name: (dtype, shape) for name, dtype, shape in checked}
    _check_declared_size(declared, len(data))
    if check is not None:
        check({name: torch.empty(shape, dtype=dtype, device="meta") for name, (dtype, shape) in declared.items()},
              description)
    tensors: Dict[str, torch.Tensor] = {}
    positions: Dict[str, torch.Tensor] = {}  # decoded kept-masks of sparse tensors, for "mask_of" entries
    derived: List[Tuple[str, str, List[int]]] = []
    for entry, (name, dtype, shape) in zip(header["tensors"], checked):
        n = math.prod(shape)
        if entry["layout"] == "plain":
            tensors[name] = q.from_bytes(section[entry["sections"][0]], dtype, n).reshape(shape)
            continue
        if entry["layout"] in ("bits", "mask_of") and dtype == torch.bool:
            tensors[name] = torch.empty(0)  # placeholder keeps the stored order
            if entry["layout"] == "mask_of":
                derived.append((name, entry["of"], shape))
                continue
            packed = section[entry["sections"][0]]
            if len(packed) != (n + 7) // 8:
                raise ValueError(f"bit section of {name!r} has the wrong length")
            bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), bitorder="little")[:n]
            tensors[name] = torch.from_numpy(bits.astype(bool)).reshape(shape)
            continue
        if entry["layout"] != "sparse" or not dtype.is_floating_point or len(shape) < 2:
            raise ValueError(f"bad layout for {name!r}")
        nnz = entry["nnz"]
        if not isinstance(nnz, int) or not 0 <= nnz <= n:
            raise ValueError(f"bad nonzero count for {name!r}")
        mask = decode_positions(entry["positions"], [section[i] for i in entry["pos_sections"]], n, nnz)
        fmt, _ = q.resolve(entry["values"])
        rows = torch.nonzero(mask).flatten() // max(1, n // shape[0]) if shape[0] else torch.zeros(0, dtype=int)
        meta = {**entry["meta"], "rows": shape[0]}
        kept = fmt.decode([section[i] for i in entry["val_sections"]], meta, nnz, rows, dtype)
        flat = torch.zeros(n, dtype=dtype)
        flat[mask] = kept
        tensors[name] = flat.reshape(shape)
        positions[name] = mask
    for name, source, shape in derived:
        if source not in positions or positions[source].numel() != math.prod(shape):
            raise ValueError(f"mask {name!r} refers to {source!r}, which is not a sparse tensor of its size")
        tensors[name] = positions[source].reshape(shape).clone()
    return tensors, description


# -- size report -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SizeReport:
    """Dense size, compressed size and the entropy bound for lossless values, in bytes."""

    dense_bytes: int  # every tensor stored densely (what a plain state_dict file holds, minus its header)
    compressed_bytes: int  # this format, with ``values``
    bound_bytes: int  # nnz x value bits + n x H(density) bits for positions + dense rest
    nnz: int
    sparse_numel: int
    values: str

    @property
    def ratio(self) -> float:
        """Dense size over compressed size."""
        return self.dense_bytes / max(1, self.compressed_bytes)

    @property
    def bound_ratio(self) -> float:
        """Dense size over the lossless entropy bound: the most any coder could get."""
        return self.dense_bytes / max(1, self.bound_bytes)

    def as_dict(self) -> Dict[str, Any]:
        """The report with its ratios, JSON-able."""
        return {**asdict(self), "ratio": self.ratio, "bound_ratio": self.bound_ratio}

    def __str__(self) -> str:
        mb = 1e6
        density = self.nnz / max(1, self.sparse_numel)
        return "\n".join([
            f"weights      {self.sparse_numel:,} in sparse-coded tensors, {self.nnz:,} nonzero "
            f"({1 - density:.2%} sparse)",
            f"dense        {self.dense_bytes / mb:9.2f} MB",
            f"compressed   {self.compressed_bytes / mb:9.2f} MB  ({self.ratio:.2f}x, values={self.values})",
            f"bound        {self.bound_bytes / mb:9.2f} MB  ({self.bound_ratio:.2f}x: lossless entropy bound)"])


def _entropy(p: float) -> float:
    return 0.0 if p <= 0.0 or p >= 1.0 else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def entropy_bound_bytes(tensors: Dict[str, torch.Tensor]) -> Tuple[int, int, int]:
    """(bound bytes, nnz, sparse numel): values at full width, positions at the binary entropy of the density."""
    bits, nnz_total, numel_total = 0.0, 0, 0
    for name, t in tensors.items():
        if is_sparse_coded(name, t):
            nnz = int(kept_mask(t).sum())
            bits += nnz * t.element_size() * 8 + t.numel() * _entropy(nnz / max(1, t.numel()))
            nnz_total, numel_total = nnz_total + nnz, numel_total + t.numel()
        else:
            bits += t.numel() * t.element_size() * 8
    return math.ceil(bits / 8), nnz_total, numel_total


def recorded_values(path: str | Path, default: str) -> str:
    """The value format recorded in a compressed file's header (already validated by read_compressed)."""
    raw = _raw_stream(Path(path).read_bytes())
    header_len = _CRC.unpack_from(raw, 0)[0]
    return str(json.loads(raw[_CRC.size:_CRC.size + header_len]).get("values", default))
