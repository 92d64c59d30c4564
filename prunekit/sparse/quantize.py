"""Value formats for the kept weights of a compressed checkpoint: lossless, fp16/bf16, int8, k-means sharing.

Each format turns the 1-D vector of kept values of one tensor (plus the output row of each value, for
per-channel scales) into a few byte sections and a small JSON-able ``meta``, and back. Formats are a registry,
so a new one is one function pair and a decorator.

Stated error (what the tests check):
* ``fp32`` (lossless): bit-exact, in the tensor's own dtype (fp32, fp16, bf16, fp64 all round-trip exactly).
* ``fp16`` / ``bf16``: round-to-nearest, relative error <= 2^-11 / 2^-8 for normal values (fp16 saturates at
  +-65504).
* ``int8``: symmetric per-output-channel scale s = max|w| / 127 over the row's kept weights; |error| <= s / 2.
* ``kmeansB`` (B = 1..8, Deep Compression weight sharing): 2^B centroids per tensor, linear init over
  [min, max], Lloyd iterations; every value becomes its nearest centroid.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import Registry

Sections = List[bytes]


@dataclass(frozen=True)
class ValueFormat:
    encode: Callable[[torch.Tensor, torch.Tensor, int], Tuple[Sections, Dict]]
    decode: Callable[[Sequence[memoryview], Dict, int, torch.Tensor, torch.dtype], torch.Tensor]
    lossy: bool


FORMATS: Registry[ValueFormat] = Registry("value format")


def resolve(name: str) -> Tuple[ValueFormat, Dict]:
    """``"kmeans4"`` -> (the k-means format, {"bits": 4}); other names map directly."""
    match = re.fullmatch(r"kmeans(\d+)", str(name))
    if match:
        bits = int(match.group(1))
        if not 1 <= bits <= 8:
            raise ConfigError(f"values={name!r}: k-means sharing needs 1 to 8 bits, e.g. kmeans4")
        return FORMATS.get("kmeans"), {"bits": bits}
    if name == "kmeans":
        raise ConfigError("values='kmeans' needs a bit width, e.g. kmeans4 (16 shared values per tensor)")
    return FORMATS.get(name), {}


# -- byte helpers ------------------------------------------------------------------------------------------------
def to_bytes(t: torch.Tensor) -> bytes:
    """The raw bytes of ``t``'s elements, in its own dtype (inverse of ``from_bytes``)."""
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _checked_size(buf: memoryview | bytes, dtype: torch.dtype, count: int) -> int:
    """Bytes per element, after checking the section holds exactly ``count`` of them."""
    itemsize = torch.empty(0, dtype=dtype).element_size()
    if len(buf) != count * itemsize:
        raise ValueError(f"section holds {len(buf)} bytes, expected {count} x {itemsize}")
    return itemsize


def from_bytes(buf: memoryview | bytes, dtype: torch.dtype, count: int) -> torch.Tensor:
    """Tensor of ``count`` ``dtype`` elements from raw bytes; raises ValueError if the size does not match."""
    _checked_size(buf, dtype, count)
    if count == 0:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(buf), dtype=torch.uint8).view(dtype).clone()


def shuffle(t: torch.Tensor) -> bytes:
    """Byte planes (all first bytes, then all second bytes...): sign/exponent bytes then compress well."""
    size = t.element_size()
    raw = t.contiguous().view(torch.uint8).reshape(-1, size)
    return raw.t().contiguous().numpy().tobytes()


def unshuffle(buf: memoryview | bytes, dtype: torch.dtype, count: int) -> torch.Tensor:
    """Inverse of ``shuffle``: ``count`` ``dtype`` elements from their byte planes."""
    size = _checked_size(buf, dtype, count)
    if count == 0:
        return torch.empty(0, dtype=dtype)
    planes = torch.frombuffer(bytearray(buf), dtype=torch.uint8).reshape(size, count)
    return planes.t().contiguous().view(dtype).flatten()


def pack_bits(idx: np.ndarray, bits: int) -> bytes:
    """Pack small unsigned ints (< 2^bits) into a bit stream, low bit first."""
    if bits == 8:
        return idx.astype(np.uint8).tobytes()
    planes = np.unpackbits(idx.astype(np.uint8)[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def unpack_bits(buf: memoryview | bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of ``pack_bits``: ``count`` unsigned ints of ``bits`` bits each, as uint8."""
    if len(buf) != (count * bits + 7) // 8:
        raise ValueError(f"index section holds {len(buf)} bytes, expected {(count * bits + 7) // 8}")
    if bits == 8:
        return np.frombuffer(buf, dtype=np.uint8).copy()
    stream = np.unpackbits(np.frombuffer(buf, dtype=np.uint8), bitorder="little")[: count * bits]
    planes = np.zeros((count, 8), dtype=np.uint8)
    planes[:, :bits] = stream.reshape(count, bits)
    return np.packbits(planes, axis=1, bitorder="little").reshape(-1)


def _finite(values: torch.Tensor, fmt: str) -> None:
    if not torch.isfinite(values).all():
        raise ConfigError(f"values={fmt!r} cannot quantize NaN/inf weights; store them with values='fp32'")


# -- formats -----------------------------------------------------------------------------------------------------
def _enc_lossless(values, rows, n_rows, **_):
    return [shuffle(values)], {}


def _dec_lossless(sections, meta, count, rows, dtype):
    return unshuffle(sections[0], dtype, count)


FORMATS.register("fp32")(ValueFormat(_enc_lossless, _dec_lossless, lossy=False))


def _half(target: torch.dtype):
    def enc(values, rows, n_rows, **_):
        v = values.float()
        if target == torch.float16:
            v = v.clamp(-65504.0, 65504.0)
        return [shuffle(v.to(target))], {}

    def dec(sections, meta, count, rows, dtype):
        return unshuffle(sections[0], target, count).to(dtype)

    return ValueFormat(enc, dec, lossy=True)


FORMATS.register("fp16")(_half(torch.float16))
FORMATS.register("bf16")(_half(torch.bfloat16))


def _enc_int8(values, rows, n_rows, **_):
    v = values.float()
    _finite(v, "int8")
    amax = torch.zeros(n_rows).scatter_reduce(0, rows, v.abs(), reduce="amax", include_self=True)
    scales = amax / 127.0
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    q = torch.round(v / safe[rows]).clamp(-127, 127).to(torch.int8)
    return [to_bytes(scales), to_bytes(q)], {}


def _dec_int8(sections, meta, count, rows, dtype):
    scales = from_bytes(sections[0], torch.float32, int(meta["rows"]))
    q = from_bytes(sections[1], torch.int8, count)
    return (q.float() * scales[rows]).to(dtype)


FORMATS.register("int8")(ValueFormat(_enc_int8, _dec_int8, lossy=True))


def kmeans_1d(values: torch.Tensor, k: int, iterations: int = 30) -> Tuple[torch.Tensor, torch.Tensor]:
    """(sorted centroids, index of the nearest centroid per value); linear init, as Deep Compression advises."""
    v = values.double()
    lo, hi = float(v.min()), float(v.max())
    centroids = torch.linspace(lo, hi, k, dtype=torch.float64)
    idx = torch.zeros(v.numel(), dtype=torch.int64)
    for it in range(iterations):
        new_idx = torch.bucketize(v, (centroids[1:] + centroids[:-1]) / 2)
        if it and torch.equal(new_idx, idx):
            break
        idx = new_idx
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, idx, v)
        counts = torch.bincount(idx, minlength=k).double()
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        centroids = centroids.sort().values
    centroids = centroids.float()
    idx = torch.bucketize(values.float(), (centroids[1:] + centroids[:-1]) / 2)
    return centroids, idx


def _enc_kmeans(values, rows, n_rows, bits=4, **_):
    v = values.float()
    _finite(v, f"kmeans{bits}")
    if v.numel() == 0:
        return [b"", b""], {"k": 0}
    centroids, idx = kmeans_1d(v, 2 ** bits)
    return [to_bytes(centroids), pack_bits(idx.numpy(), bits)], {"k": 2 ** bits}


def _dec_kmeans(sections, meta, count, rows, dtype):
    bits, k = int(meta["bits"]), int(meta["k"])
    if count == 0:
        return torch.empty(0, dtype=dtype)
    centroids = from_bytes(sections[0], torch.float32, k)
    idx = torch.from_numpy(unpack_bits(sections[1], bits, count).astype(np.int64))
    if idx.numel() and int(idx.max()) >= k:
        raise ValueError("centroid index out of range")
    return centroids[idx].to(dtype)


FORMATS.register("kmeans")(ValueFormat(_enc_kmeans, _dec_kmeans, lossy=True))
