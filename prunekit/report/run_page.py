"""``report.html`` of one run, rendered from its ``report.json`` record (so it can be re-rendered any time).

What a colleague needs on one page: the before/after table with each number's spread, where the channels were
removed (per-layer widths), the training curves of every phase, the settings that mattered and the command that
reproduces the run.

Example::

    record = json.loads(Path("runs/demo/report.json").read_text())
    Path("runs/demo/report.html").write_text(render_run_html(record, Path("runs/demo/report.png").read_bytes()))
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from .charts import plot_curves, plot_widths
from .compare import default_keys, describe_change, metric_info
from .html import code, esc, image, note, number, page, pointer, section, table

PHASES = {"start": "train", "pruning": "schedule"}  # report section holding a "history" -> the phase it records
_LONG = ("plan", "history", "attention", "sparsity", "schedule", "sparse_kernels", "curves")


def _epoch_rows(rows: Any) -> bool:
    return isinstance(rows, list) and bool(rows) and all(isinstance(r, dict) and "epoch" in r for r in rows)


def curves_of(extra: Dict[str, Any]) -> Dict[str, List[Dict[str, Any]]]:
    """Per-epoch rows by phase: ``extra["curves"]`` when the run recorded it, else the ``history`` lists found in
    the record (the training before pruning, a pruning schedule's epochs, a train run's history)."""
    if isinstance(extra.get("curves"), dict):
        return {k: v for k, v in extra["curves"].items() if _epoch_rows(v)}
    found = {PHASES.get(name, name): body["history"] for name, body in extra.items()
             if isinstance(body, dict) and _epoch_rows(body.get("history"))}
    if _epoch_rows(extra.get("history")):
        found["train"] = extra["history"]
    return found


def _spread(key: str, before: Dict[str, Any], after: Dict[str, Any], together: bool) -> str:
    """What is known of a number's uncertainty: the IQR of timed runs, one run for accuracy, exact counts."""
    kind = metric_info(key)[1]
    if kind == "ms":
        spread = key.replace("latency_ms_", "latency_spread_ms_")
        if spread in before or spread in after:
            parts = [f"{side} IQR {number(rec.get(spread), pointer(side, spread), 'ms')}"
                     for side, rec in (("before", before), ("after", after))]
            return ", ".join(parts) + "; median of timed runs" + (", both models timed together (interleaved)"
                                                                 if together else "")
        return "one timing, no spread recorded"
    if kind == "accuracy":
        return "n=1 (one run, one test split): no spread; compare seeds with <code>prunekit compare</code>"
    return "exact (counted)"


def _before_after(record: Dict[str, Any]) -> str:
    before, after = record["before"], record["after"]
    rows = []
    for key in default_keys(before, after):
        label, kind = metric_info(key)
        b, a = before.get(key), after.get(key)
        rows.append([esc(label), number(b, pointer("before", key), kind), number(a, pointer("after", key), kind),
                     esc(describe_change(b, a, kind)),
                     _spread(key, before, after, bool(record.get("latency_timed_together")))])
    where = f"measured on {before.get('device', '?')}, {before.get('threads', '?')} threads"
    return section("Before / after", table(["metric", "before", "after", "change", "spread"], rows,
                                           [False, True, True, True, False], ident="before-after"),
                   note(f"Test split accuracy; sizes counted at batch 1; {where}."), ident="summary")


def _widths(pruning: Dict[str, Any]) -> Optional[str]:
    """The per-layer chart: channels kept of each pruned group (structured), weights kept (unstructured)."""
    plan = pruning.get("plan") or {}
    groups = plan.get("groups") or []
    parts: List[str] = []
    if groups:
        layers = [g["module"] for g in groups]
        sizes = [g["size"] for g in groups]
        kept = [g["size"] - len(g["remove"]) for g in groups]
        removed, total = sum(sizes) - sum(kept), sum(sizes)
        parts += [image(plot_widths(layers, sizes, kept, "channels"), "channels kept per layer", "widths-chart"),
                  note(f"{removed} of {total} channels removed over {len(groups)} groups (the plan in "
                       "report.json: extra.pruning.plan).")]
        if plan.get("blocks"):
            parts.append(note("Whole blocks removed: " + ", ".join(plan["blocks"])))
    per_layer = (pruning.get("sparsity") or {}).get("per_layer") or {}
    if per_layer and not groups:
        layers = list(per_layer)
        parts.append(image(plot_widths(layers, [100.0] * len(layers), [round(100 * (1 - s), 1)
                                                                       for s in per_layer.values()],
                                       "% of weights kept (zeros stay in the tensors)"),
                           "weights kept per layer", "widths-chart"))
    return section("What was removed where", *parts, ident="widths") if parts else None


def _curves(extra: Dict[str, Any]) -> Optional[str]:
    curves = curves_of(extra)
    if not curves:
        return None
    told = ", ".join(f"{phase}: {len(rows)} epochs" for phase, rows in curves.items())
    return section("Training curves", image(plot_curves(curves), "training curves", "curves-chart"),
                   note(f"Per epoch, phases in order ({told}); solid: training split, dashed: validation."),
                   ident="curves")


def _value_cell(value: Any, key: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "accuracy" in key.rsplit("/", 1)[-1]:
            return number(value, key, "accuracy")
        return number(value, key, text=f"{value:g}")
    return esc(value if isinstance(value, str) else json.dumps(value))


def _settings(extra: Dict[str, Any]) -> Optional[str]:
    settings = extra.get("settings")
    if not isinstance(settings, dict) or not settings:
        return None
    rows = [[esc(k), _value_cell(v, pointer("extra", "settings", k))] for k, v in settings.items()]
    told = "every option is in report.json (extra.all_settings)" if "all_settings" in extra else ""
    return section("Settings that mattered", table(["setting", "value"], rows, ident="settings-table"),
                   note("The run's identity and every option typed or changed from its default, with the values "
                        "actually used; " + told if told else "The options as recorded."), ident="settings")


def _done(extra: Dict[str, Any]) -> Optional[str]:
    rows = []
    for section_name in ("pruning", "start"):
        body = extra.get(section_name)
        if isinstance(body, dict):
            rows += [[esc(f"{section_name}.{k}"), _value_cell(v, pointer("extra", section_name, k))]
                     for k, v in body.items() if k not in _LONG and not isinstance(v, (dict, list))]
    return section("What was done", table(["step", "value"], rows, ident="done-table"), ident="done") \
        if rows else None


def render_run_html(record: Dict[str, Any], summary_png: Optional[bytes] = None) -> str:
    """The whole page of one run from its ``report.json`` record (and the summary bar chart, when given)."""
    extra = record.get("extra") or {}
    body = [_before_after(record)]
    if summary_png:
        body.append(section("After as a share of before", image(summary_png, "after / before per metric",
                                                               "summary-chart"), ident="shares"))
    body += [s for s in (_widths(extra.get("pruning") or {}), _curves(extra), _settings(extra), _done(extra)) if s]
    commands = extra.get("reproduce")
    if commands:
        body.append(section("Reproduce", code("\n".join(commands)),
                            note("Run from the same prunekit version on the same data folder."), ident="reproduce"))
    sub = f"prunekit {record.get('prunekit_version', '?')}, {record.get('created', '')}"
    return page(record.get("title", "prunekit report"), body, sub)
