"""Before/after comparison in human units: "11.69M -> 2.84M, 4.12x smaller", "1.8x faster", "-0.40 pts".

The dicts compared are flat: ``{"accuracy": 0.83, "params": ..., "latency_ms_b1": ...}``, i.e.
:func:`flatten_measurement` of a :class:`~prunekit.measure.Measurement` plus an ``accuracy`` (a fraction in
[0, 1]; values above 1 are taken as already in percent).
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # keep `import prunekit.report` free of torch
    from ..measure import Measurement

_LATENCY = re.compile(r"^latency_ms_b(\d+)$")

# key -> (label, kind). kind decides the unit and how a change is worded.
METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("accuracy", "accuracy"),
    "params": ("params", "count"),
    "nonzero_params": ("nonzero params", "count"),
    "macs": ("MACs (batch 1)", "count"),
    "flops": ("FLOPs (batch 1)", "count"),
    "file_bytes": ("file size", "bytes"),
    "peak_memory_bytes": ("peak forward memory", "bytes"),
}
DEFAULT_ORDER = ("accuracy", "params", "nonzero_params", "macs", "file_bytes")


def flatten_measurement(m: Measurement) -> dict[str, Any]:
    """One flat dict per model (``latency_ms_b32`` instead of nested dicts), ready to add ``accuracy`` to."""
    flat: dict[str, Any] = {
        "params": m.params,
        "nonzero_params": m.nonzero_params,
        "macs": m.macs,
        "flops": m.flops,
        "file_bytes": m.file_bytes,
        "peak_memory_bytes": m.peak_memory_bytes,
    }
    for batch in sorted(m.latency_ms):
        flat[f"latency_ms_b{batch}"] = m.latency_ms[batch]
    for batch in sorted(m.latency_spread_ms):
        flat[f"latency_spread_ms_b{batch}"] = m.latency_spread_ms[batch]
    flat.update(threads=m.threads, device=m.device, input_shape=list(m.input_shape))
    return flat


def metric_info(key: str) -> tuple[str, str]:
    """(label, kind) of a metric key; unknown numeric keys are plain numbers compared by ratio."""
    if key in METRICS:
        return METRICS[key]
    match = _LATENCY.match(key)
    if match:
        return f"latency b{match.group(1)}", "ms"
    return key, "number"


def _si(value: float, suffix: str = "") -> str:
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{unit}{suffix}"
    return f"{value:.4g}{suffix}" if suffix else f"{value:.4g}"


def human(value: Any, kind: str) -> str:
    """A value in the unit of its kind: 11.69M, 44.7 MB, 11.6 ms, 83.00%."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "accuracy":
        return f"{_percent(value):.2f}%"
    if kind == "count":
        return _si(float(value))
    if kind == "bytes":
        for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
            if abs(value) >= scale:
                return f"{value / scale:.4g} {unit}"
        return f"{int(value)} B"
    if kind == "ms":
        return f"{value:.0f} ms" if abs(value) >= 100 else f"{value:.3g} ms"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _percent(value: float) -> float:
    return float(value) * 100.0 if abs(float(value)) <= 1.0 else float(value)


def _times(ratio: float) -> str:
    if ratio >= 1000:
        return f"{ratio:,.0f}x"
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"


def describe_change(before: Any, after: Any, kind: str) -> str:
    """Words for the change: "-0.40 pts", "4.12x smaller", "1.80x faster", "same"; "n/a" when a side is missing."""
    if before is None or after is None:
        return "n/a"
    if kind == "accuracy":
        return f"{_percent(after) - _percent(before):+.2f} pts"
    if before == after:
        return "same"
    if after == 0 or before == 0:
        return "removed" if after == 0 else "new"
    ratio = float(before) / float(after)
    if kind == "ms":
        return f"{_times(ratio)} faster" if ratio > 1 else f"{_times(1 / ratio)} slower"
    if kind in ("count", "bytes"):
        return f"{_times(ratio)} smaller" if ratio > 1 else f"{_times(1 / ratio)} larger"
    return f"x{float(after) / float(before):.3g}"


def default_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The headline metrics present in either dict, latency rows sorted by batch size, peak memory last."""
    present = set(before) | set(after)
    keys = [k for k in DEFAULT_ORDER if k in present]
    keys += sorted((k for k in present if _LATENCY.match(k)), key=lambda k: int(_LATENCY.match(k).group(1)))
    if "peak_memory_bytes" in present:
        keys.append("peak_memory_bytes")
    return keys


def compare_rows(
    before: dict[str, Any], after: dict[str, Any], keys: Sequence[str] | None = None
) -> list[dict[str, str]]:
    """Rows ``{"metric", "before", "after", "change"}`` (all strings) for :func:`format_table` or Markdown; a
    latency shows its recorded spread (``latency_spread_ms_bN``).

    Example::

        print(format_table(compare_rows({"params": 4e6}, {"params": 1e6})))   # params  4M  1M  4.00x smaller
    """
    rows = []
    for key in keys if keys is not None else default_keys(before, after):
        label, kind = metric_info(key)
        b, a = before.get(key), after.get(key)
        change = describe_change(b, a, kind)
        spread = key.replace("latency_ms_", "latency_spread_ms_") if kind == "ms" else None
        rows.append({"metric": label, "before": _with_spread(b, before.get(spread), kind),
                     "after": _with_spread(a, after.get(spread), kind), "change": change})
    return rows


def _with_spread(value: Any, spread: Any, kind: str) -> str:
    """A latency with its spread (the IQR of the timed runs) when one was recorded: "11.6 ms (IQR 0.4 ms)"."""
    text = human(value, kind)
    return text if spread is None or value is None else f"{text} (IQR {human(spread, kind)})"


def metric_ratios(
    before: dict[str, Any], after: dict[str, Any], keys: Sequence[str] | None = None
) -> dict[str, float]:
    """after / before for every non-accuracy metric with both sides positive (< 1 means it shrank or sped up)."""
    ratios = {}
    for key in keys if keys is not None else default_keys(before, after):
        b, a = before.get(key), after.get(key)
        if key == "accuracy" or not isinstance(b, (int, float)) or not isinstance(a, (int, float)) or b <= 0:
            continue
        ratios[key] = float(a) / float(b)
    return ratios
