"""Where the nonzero weights are: coded near the entropy n x H(density) bits.

Three codings, each for either the kept or the pruned positions (whichever set is smaller), and per tensor the
one that comes out smallest wins:

* ``bitmask``: one bit per weight; best near 50% density and for structured patterns (N:M) that zstd's
  Huffman stage picks up.
* ``*_gaps``: the gap between consecutive positions as one byte (255 escapes to a 4-byte value); zstd then
  entropy-codes the bytes, and catches repeats when the pattern has structure.
* ``*_rice``: Golomb-Rice code of the gaps with the best parameter k: for independently pruned weights the gaps
  are geometric, for which Rice codes are within about 1-2% of the entropy. The unary and remainder parts are
  separate bit streams, so both directions are vectorized (no Python loop per weight).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch
import zstandard as zstd

KINDS = ("bitmask", "kept_gaps", "pruned_gaps", "kept_rice", "pruned_rice")


def _gaps(positions: np.ndarray) -> np.ndarray:
    return np.diff(positions, prepend=-1) - 1


def _positions(gaps: np.ndarray, n: int) -> np.ndarray:
    positions = np.cumsum(gaps + 1) - 1
    if positions.size and (positions[-1] >= n or gaps.min() < 0):
        raise ValueError("a position lies outside the tensor")
    return positions


def _encode_bytes(positions: np.ndarray) -> List[bytes]:
    gaps = _gaps(positions)
    small = gaps < 255
    return [np.where(small, gaps, 255).astype(np.uint8).tobytes(), gaps[~small].astype("<u4").tobytes()]


def _decode_bytes(sections: Sequence, count: int, n: int) -> np.ndarray:
    if len(sections) != 2:
        raise ValueError("byte gap coding needs 2 sections")
    codes = np.frombuffer(sections[0], dtype=np.uint8)
    escapes = np.frombuffer(sections[1], dtype="<u4")
    if codes.size != count or int((codes == 255).sum()) != escapes.size:
        raise ValueError("gap sections do not match the stored count")
    gaps = codes.astype(np.int64)
    gaps[codes == 255] = escapes
    return _positions(gaps, n)


def _rice_k(gaps: np.ndarray) -> int:
    """The Rice parameter with the fewest total bits (tried exhaustively: it is cheap)."""
    if gaps.size == 0:
        return 0
    costs = [int((gaps >> k).sum()) + gaps.size * (1 + k) for k in range(32)]
    return int(np.argmin(costs))


def _encode_rice(positions: np.ndarray) -> List[bytes]:
    gaps = _gaps(positions)
    k = _rice_k(gaps)
    quotients = gaps >> k
    unary = np.zeros(int(quotients.sum()) + gaps.size, dtype=np.uint8)
    unary[np.cumsum(quotients + 1) - 1] = 1  # q zeros, then a one
    rem = (gaps[:, None] >> np.arange(k)) & 1 if k else np.zeros((gaps.size, 0), dtype=np.int64)
    return [bytes([k]), np.packbits(unary, bitorder="little").tobytes(),
            np.packbits(rem.astype(np.uint8).reshape(-1), bitorder="little").tobytes()]


def _decode_rice(sections: Sequence, count: int, n: int) -> np.ndarray:
    if len(sections) != 3 or len(sections[0]) != 1 or sections[0][0] > 40:
        raise ValueError("Rice coding needs 3 sections and a parameter byte <= 40")
    k = sections[0][0]
    ones = np.flatnonzero(np.unpackbits(np.frombuffer(sections[1], dtype=np.uint8), bitorder="little"))
    if ones.size != count or len(sections[2]) != (count * k + 7) // 8:
        raise ValueError("Rice sections do not match the stored count")
    quotients = np.diff(ones[:count], prepend=-1) - 1
    bits = np.unpackbits(np.frombuffer(sections[2], dtype=np.uint8), bitorder="little")[: count * k]
    rem = (bits.reshape(count, k).astype(np.int64) << np.arange(k)).sum(1) if k else np.zeros(count, np.int64)
    return _positions((quotients << k) | rem, n)


def encode_positions(mask: torch.Tensor) -> Tuple[str, List[bytes]]:
    """(kind, sections) of the smallest coding after a quick zstd pass (the whole file is zstd-coded later)."""
    m = mask.numpy().reshape(-1)
    candidates = {"bitmask": [np.packbits(m, bitorder="little").tobytes()]}
    kept = int(m.sum())
    which, ones = ("kept", m) if kept <= m.size - kept else ("pruned", ~m)
    positions = np.flatnonzero(ones)
    candidates[f"{which}_gaps"] = _encode_bytes(positions)
    candidates[f"{which}_rice"] = _encode_rice(positions)
    quick = zstd.ZstdCompressor(level=3)
    sizes = {k: sum(len(quick.compress(s)) for s in secs) for k, secs in candidates.items()}
    best = min(sizes, key=sizes.get)
    return best, candidates[best]


def decode_positions(kind: str, sections: Sequence, n: int, nnz: int) -> torch.Tensor:
    """The flat keep-mask back from ``encode_positions``' output; malformed input raises ValueError."""
    if kind == "bitmask":
        if len(sections) != 1 or len(sections[0]) != (n + 7) // 8:
            raise ValueError("bitmask section has the wrong length")
        m = np.unpackbits(np.frombuffer(sections[0], dtype=np.uint8), bitorder="little")[:n].astype(bool)
        if int(m.sum()) != nnz:
            raise ValueError("bitmask does not match the stored nonzero count")
        return torch.from_numpy(m)
    if kind not in KINDS:
        raise ValueError(f"unknown position coding {kind!r}")
    kept = kind.startswith("kept")
    decode = _decode_bytes if kind.endswith("gaps") else _decode_rice
    m = np.full(n, not kept)
    m[decode(sections, nnz if kept else n - nnz, n)] = kept
    return torch.from_numpy(m)
