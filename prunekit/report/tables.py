"""Plain-text and Markdown tables from a list of row dicts (no third-party table library needed)."""
from __future__ import annotations

import numbers
from typing import Any, Sequence


def _columns(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def _cell(value: Any, floatfmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return format(float(value), floatfmt)
    return str(value)


def _is_numeric(values: list[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in present)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, floatfmt: str = ".4g") -> str:
    """Aligned text table for the terminal: numbers right-aligned, text left-aligned, ``None`` shown as ``-``.

    Columns default to every key in order of first appearance; a row missing a key shows ``-``.

    Example::

        print(format_table([{"model": "resnet18", "acc": 0.83}]))
    """
    cols = _columns(rows, columns)
    cells = [[_cell(row.get(c), floatfmt) for c in cols] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    numeric = [_is_numeric([row.get(c) for row in rows]) for c in cols]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line(cols), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, floatfmt: str = ".4g") -> str:
    """GitHub-flavoured Markdown table; numeric columns are right-aligned with ``---:``."""
    cols = _columns(rows, columns)
    numeric = [_is_numeric([row.get(c) for row in rows]) for c in cols]

    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(esc(c) for c in cols) + " |"
    rule = "|" + "|".join("---:" if num else "---" for num in numeric) + "|"
    body = ["| " + " | ".join(esc(_cell(row.get(c), floatfmt)) for c in cols) + " |" for row in rows]
    return "\n".join([head, rule, *body])
