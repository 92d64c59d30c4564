"""One call writes the proof of a pruning run: report.md (for people), report.json (for tools), report.png, and
report.html (one self-contained page to open or send, rendered from the JSON record)."""
from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict

from .. import __version__
from ..files import atomic_path
from .compare import compare_rows, default_keys, metric_ratios
from .plots import plot_summary
from .run_page import render_run_html
from .tables import markdown_table


def _jsonable(value: Any) -> Any:
    """Plain JSON types only: tuples -> lists, paths -> str, numpy/torch scalars -> numbers, NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item):
        try:
            return _jsonable(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


UNCERTAINTY = ("Accuracy: one run on one test split (n=1), so no spread is given. Latency: median of timed runs "
               "with their IQR{together}. Counts and sizes are exact.\n")
TOGETHER = ", both models timed together (interleaved runs)"
JSON_ONLY = ("all_settings", "curves")  # extra items too long for a Markdown section; report.html draws the curves
_MAX_CELL = 120  # long values (a whole pruning plan, a training history) stay readable only in report.json


def _short(value: Any) -> Any:
    text = json.dumps(_jsonable(value)) if isinstance(value, (dict, list, tuple)) else value
    if isinstance(text, str) and len(text) > _MAX_CELL:
        return text[: _MAX_CELL - 25] + " ... (see report.json)"
    return text


def _section(name: str, body: Any) -> str:
    if isinstance(body, dict):
        rows = [{"setting": str(k), "value": _short(v)} for k, v in body.items()]
        text = markdown_table(rows, ["setting", "value"]) if rows else "_(none)_"
    elif isinstance(body, list) and body and all(isinstance(r, dict) for r in body):
        text = markdown_table(body)
    elif isinstance(body, list) and body and all(isinstance(r, str) for r in body):  # commands
        text = "```\n" + "\n".join(body) + "\n```"
    else:
        text = str(body)
    return f"## {name}\n\n{text}\n"


def write_json_record(path: Path, record: Dict[str, Any]) -> None:
    """``record`` as indented strict JSON (NaN/inf -> null), written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(record), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_report(
    out_dir: str | os.PathLike,
    title: str,
    before: dict[str, Any],
    after: dict[str, Any],
    extra: dict[str, Any] | None = None,
    timed_together: bool = False,
) -> dict[str, Path]:
    """Write ``report.md``, ``report.json``, ``report.png`` and ``report.html`` into ``out_dir``; return their paths
    by kind.

    ``before``/``after`` are flat metric dicts (see :func:`flatten_measurement`). Each ``extra`` item becomes
    a Markdown section (a dict renders as a settings table, a list of dicts as a table; not the
    :data:`JSON_ONLY` ones) and is stored raw in the JSON. ``timed_together``: the two latencies were timed in one
    interleaved session (``measure_models``), which the report then says. Every file is written atomically, so a
    crash never leaves a half report.

    Example::

        paths = write_report("runs/r18", "resnet18, 50% channels", before, after, extra={"settings": cfg})
    """
    out = Path(out_dir)
    keys = default_keys(before, after)
    rows = compare_rows(before, after, keys)
    ratios = metric_ratios(before, after, keys)
    paths = {"md": out / "report.md", "json": out / "report.json", "png": out / "report.png",
             "html": out / "report.html"}

    md = [f"# {title}\n", markdown_table(rows, ["metric", "before", "after", "change"]) + "\n",
          UNCERTAINTY.format(together=TOGETHER if timed_together else "")]
    md += [_section(name, body) for name, body in (extra or {}).items() if name not in JSON_ONLY]
    md.append(f"![before vs after]({paths['png'].name})\n")
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text("\n".join(md), encoding="utf-8")

    record = {
        "title": title,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "prunekit_version": __version__,
        "before": before,
        "after": after,
        "after_over_before": ratios,
        "latency_timed_together": timed_together,
        "rows": rows,
        "extra": extra or {},
    }
    write_json_record(paths["json"], record)

    accuracy = (before.get("accuracy"), after.get("accuracy"))
    plot_summary(ratios, paths["png"], accuracy if any(v is not None for v in accuracy) else None, title)
    with atomic_path(paths["html"]) as tmp:
        tmp.write_text(render_run_html(json.loads(paths["json"].read_text()), paths["png"].read_bytes()),
                       encoding="utf-8")
    return paths
