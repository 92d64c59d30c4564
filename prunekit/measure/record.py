"""The one record type for "how big and how fast is this model": plain data, JSON round-trip exact."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError

_REQUIRED = ("params", "nonzero_params", "macs", "flops", "threads", "device", "input_shape")


@dataclass
class Measurement:
    """Size and speed of one model, as measured by :func:`prunekit.measure.measure_model`.

    ``latency_ms`` maps batch size -> median milliseconds of warm forward passes; ``latency_spread_ms`` maps
    batch size -> inter-quartile range of those runs (how much to trust the median). ``macs``/``flops`` are at
    batch 1. ``file_bytes`` and ``peak_memory_bytes`` are ``None`` when not measured (never a made-up number).
    """

    params: int
    nonzero_params: int
    macs: int
    flops: int
    file_bytes: int | None = None
    latency_ms: dict[int, float] = field(default_factory=dict)
    latency_spread_ms: dict[int, float] = field(default_factory=dict)
    threads: int = 1
    device: str = "cpu"
    input_shape: tuple[int, ...] = (3, 64, 64)
    peak_memory_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: batch-size keys become strings and the shape a list, so ``json.dumps`` needs no help."""
        out = asdict(self)
        out["latency_ms"] = {str(b): float(v) for b, v in sorted(self.latency_ms.items())}
        out["latency_spread_ms"] = {str(b): float(v) for b, v in sorted(self.latency_spread_ms.items())}
        out["input_shape"] = [int(s) for s in self.input_shape]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        """Inverse of :meth:`to_dict`; also accepts int batch keys. Unknown keys are an error, not silently lost."""
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise ConfigError(f"measurement dict lacks {missing}; pass the output of Measurement.to_dict()")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"measurement dict has unknown keys {unknown}; expected only {sorted(known)}")
        return cls(
            params=int(d["params"]),
            nonzero_params=int(d["nonzero_params"]),
            macs=int(d["macs"]),
            flops=int(d["flops"]),
            file_bytes=None if d.get("file_bytes") is None else int(d["file_bytes"]),
            latency_ms={int(b): float(v) for b, v in d.get("latency_ms", {}).items()},
            latency_spread_ms={int(b): float(v) for b, v in d.get("latency_spread_ms", {}).items()},
            threads=int(d["threads"]),
            device=str(d["device"]),
            input_shape=tuple(int(s) for s in d["input_shape"]),
            peak_memory_bytes=None if d.get("peak_memory_bytes") is None else int(d["peak_memory_bytes"]),
        )
