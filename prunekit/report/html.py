"""Self-contained HTML: one file that opens anywhere, offline (inline CSS, images as base64 PNG, no script).

A Content-Security-Policy forbids every outside load, so a page that would need the network fails visibly in a
browser (a console error) instead of silently depending on it. Every number shown from ``report.json`` is a
:func:`number` span carrying ``data-key`` (its dotted path in the JSON) and ``data-value`` (the raw value), so a test
can read the page and compare it with the JSON.

Example::

    page("resnet18 pruned", [section("Before / after", table(["metric"], [[cell("params")]]))])
"""
from __future__ import annotations

import base64
import html
import json
from typing import Any, Iterable, Sequence

from .compare import human

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d9dde3;padding-bottom:4px}
.sub{color:#5b6472;margin:0 0 16px}.note{color:#5b6472;font-size:13px;margin:6px 0}
table{border-collapse:collapse;background:#fff;margin:6px 0;font-size:13.5px}
.scroll{overflow-x:auto}
th,td{border:1px solid #d9dde3;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.good{color:#11702f}.bad{color:#a51d1d}.spread{color:#5b6472;font-size:12px}
img{max-width:100%;background:#fff;border:1px solid #d9dde3;margin:6px 0}
pre{background:#fff;border:1px solid #d9dde3;padding:10px;overflow-x:auto;font-size:13px;white-space:pre-wrap}
details summary{cursor:pointer;color:#2a5db0}
"""


def esc(value: Any) -> str:
    """Text for HTML (``<``, ``&`` and quotes escaped)."""
    return html.escape(str(value), quote=True)


def pointer(*parts: Any) -> str:
    """A JSON Pointer (RFC 6901) to a value in the page's JSON record: ``pointer("rows", 3, "macs")`` ->
    ``/rows/3/macs`` (``~`` and ``/`` inside a part escaped, so class names and layer names are safe)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def number(value: Any, key: str, kind: str = "number", text: str | None = None) -> str:
    """A number as shown (``human(value, kind)`` unless ``text``), tagged with its place in the JSON record
    (``key``, a :func:`pointer`) and its raw value."""
    shown = human(value, kind) if text is None else text
    raw = json.dumps(value)
    return (f'<span class="num" data-key="{esc(key)}" data-kind="{esc(kind)}" data-value="{esc(raw)}">'
            f"{esc(shown)}</span>")


def image(png: bytes, alt: str, ident: str = "") -> str:
    """A PNG embedded as a data URI (the page needs no file beside it)."""
    data = base64.b64encode(png).decode("ascii")
    attr = f' id="{esc(ident)}"' if ident else ""
    return f'<img{attr} alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[bool] | None = None,
          ident: str = "") -> str:
    """A table of already-rendered cells (escape text with :func:`esc`, numbers with :func:`number`)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    flags = list(numeric) if numeric is not None else [False] * len(header)
    body = "".join("<tr>" + "".join(f'<td{" class=n" if n else ""}>{c}</td>' for c, n in zip(row, flags)) + "</tr>"
                   for row in rows)
    attr = f' id="{esc(ident)}"' if ident else ""
    return f'<div class="scroll"><table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def section(title: str, *parts: str, ident: str = "") -> str:
    """A titled section of the page."""
    attr = f' id="{esc(ident)}"' if ident else ""
    return f"<section{attr}><h2>{esc(title)}</h2>{''.join(parts)}</section>"


def note(text: str) -> str:
    """A short grey explanation under a table or figure (escaped)."""
    return f'<p class="note">{esc(text)}</p>'


def code(text: str) -> str:
    """A preformatted block (commands, recipes)."""
    return f"<pre>{esc(text)}</pre>"


def page(title: str, body: Sequence[str], subtitle: str = "") -> str:
    """The whole document: ``<head>`` with the offline-only policy and inline CSS, then ``body``'s sections."""
    sub = f'<p class="sub">{esc(subtitle)}</p>' if subtitle else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            '<meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head>"
            f"<body><main><h1>{esc(title)}</h1>{sub}{''.join(body)}</main></body></html>\n")
