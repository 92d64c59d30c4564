"""What ``prunekit eval --out DIR`` writes: the evaluation it printed, as ``eval.json``, ``eval.md`` and a
self-contained ``eval.html`` (accuracy, per-class accuracy, confusion matrix).

Example::

    paths = write_eval_report("runs/demo/eval", {"checkpoint": "m.safetensors", "split": "test", **metrics})
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List

from ..files import atomic_path
from .html import esc, note, number, page, pointer, section, table
from .tables import markdown_table
from .writer import write_json_record


def _summary(result: Dict[str, Any]) -> str:
    return (f"{result['split']} accuracy {100 * result['accuracy']:.2f}% on {result['samples']} images "
            f"(one evaluation, n=1: no spread)")


def eval_markdown(result: Dict[str, Any]) -> str:
    """The Markdown version: the headline, per-class accuracy and the confusion matrix (rows: true class)."""
    md = [f"# Evaluation of {result['checkpoint']}", "", _summary(result), "", "## Per-class accuracy", "",
          markdown_table([{"class": k, "accuracy %": round(100 * v, 2)}
                          for k, v in result["per_class"].items()])]
    if result.get("confusion"):
        names = list(result.get("classes") or result["per_class"])
        md += ["", "## Confusion matrix (rows: true class, columns: predicted)", "",
               markdown_table([{"true": names[i] if i < len(names) else str(i),
                                **{str(j): c for j, c in enumerate(row)}}
                               for i, row in enumerate(result["confusion"])])]
    return "\n".join(md) + "\n"


def _diagonal(cell: str, on: bool) -> str:
    return f"<b>{cell}</b>" if on else cell


def eval_html(result: Dict[str, Any]) -> str:
    """The page: headline, per-class table, confusion matrix; every number tagged with its place in eval.json."""
    head = section("Accuracy", "<p>" + number(result["accuracy"], pointer("accuracy"), "accuracy") + " on "
                   + number(result["samples"], pointer("samples"), text=str(result["samples"]))
                   + f" {esc(result['split'])} images</p>",
                   note("One evaluation of one checkpoint on one split (n=1): no spread."), ident="accuracy")
    per_class = [[esc(k), number(v, pointer("per_class", k), "accuracy")] for k, v in result["per_class"].items()]
    body = [head, section("Per-class accuracy", table(["class", "accuracy"], per_class, [False, True],
                                                      ident="per-class"), ident="classes")]
    confusion: List[List[int]] = result.get("confusion") or []
    if confusion:
        header = ["true \\ predicted"] + [str(j) for j in range(len(confusion))]
        names = list(result.get("classes") or result["per_class"])
        rows = [[esc(f"{i} {names[i]}" if i < len(names) else i)]
                + [_diagonal(number(c, pointer("confusion", i, j), text=str(c)), i == j)
                   for j, c in enumerate(row)]
                for i, row in enumerate(confusion)]
        body.append(section("Confusion matrix", table(header, rows, [False] + [True] * len(confusion),
                                                      ident="confusion"),
                            note("Rows: true class (numbered as in the per-class table order); columns: "
                                 "predicted; bold: correct."),
                            ident="confusion-matrix"))
    return page(f"Evaluation of {result['checkpoint']}", body, _summary(result))


def write_eval_report(out_dir: str | os.PathLike, result: Dict[str, Any]) -> Dict[str, Path]:
    """``eval.json`` (the result as printed with ``--json``), ``eval.md`` and ``eval.html`` in ``out_dir``."""
    out = Path(out_dir)
    paths = {"json": out / "eval.json", "md": out / "eval.md", "html": out / "eval.html"}
    write_json_record(paths["json"], result)
    for kind, text in (("md", eval_markdown(result)), ("html", eval_html(result))):
        with atomic_path(paths[kind]) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return paths
