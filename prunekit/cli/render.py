"""Human-readable rendering of job results (the ``--json`` flag prints the raw result instead)."""
from __future__ import annotations

from typing import Any, Dict

from ..measure.state import InputSpec
from ..report import compare_rows, format_table
from ..report.compare import human, metric_info
from ..report.tables import markdown_table


def _pct(x: Any) -> str:
    return f"{100 * x:.2f}%" if isinstance(x, (int, float)) else "-"


def train(r: Dict[str, Any]) -> str:
    """``prunekit train``'s result as text: epochs run, the last epochs' accuracy, the test accuracy."""
    hist = r.get("history") or []
    lines = [f"trained {r['model']} for {r['epochs_run']} epochs in {r['train_seconds']} s"
             + (f" (resumed from epoch {r['resumed_from_epoch']})" if r.get("resumed_from_epoch") else "")]
    if hist:
        last = hist[-1]
        lines.append(f"last epoch: train acc {_pct(last.get('train_acc'))}, val acc {_pct(last.get('val_acc'))}")
    lines.append(f"test accuracy: {_pct(r['test']['accuracy'])} on {r['test']['samples']} images")
    lines.append(f"checkpoint: {r['checkpoint']}")
    return "\n".join(lines)


def compare(r: Dict[str, Any]) -> str:
    """``prunekit compare``'s table (mean ± sd over seeds per criterion and target) and where the report went."""
    keep = ("criterion", "target", "seeds", "test acc %", "val acc %", "before ft %", "params", "MACs (M)",
            "MACs red. %", "latency b1 ms")
    lines = [markdown_table([{k: row[k] for k in keep} for row in r["table"]]) if r["table"] else "no results yet",
             "", f"{r['ran']} of {r['cells']} cells run now; the others were already in {r['out']}/cells "
             "(a rerun skips finished cells)"]
    if r.get("markdown_path"):
        lines += [f"table: {r['markdown_path']}", f"plot: {r['plot']}"]
    if r.get("html_path"):
        lines.append(f"page: {r['html_path']}")
    return "\n".join(lines)


def evaluation(r: Dict[str, Any]) -> str:
    """``prunekit eval``'s accuracy, per class, and the confusion matrix."""
    lines = [f"{r['split']} accuracy: {_pct(r['accuracy'])} on {r['samples']} images", "per-class accuracy:"]
    for name, acc in r["per_class"].items():
        lines.append(f"  {name:<24} {_pct(acc)}")
    if r.get("report"):
        lines.append(f"written: {r['report']['html']} (and eval.json, eval.md)")
    return "\n".join(lines)


def prune(r: Dict[str, Any]) -> str:
    """The before/after table of a prune (or the demo), with the checkpoint and report paths."""
    if r.get("dry_run"):
        return dry_run(r)
    table = format_table(compare_rows(r["before"], r["after"]))
    cut = (r.get("pruning") or {}).get("test_accuracy_after_cut")
    if cut is not None:
        table += f"\n(test accuracy right after the cut, before fine-tuning: {_pct(cut)})"
    skipped = ((r.get("pruning") or {}).get("plan") or {}).get("skipped") or {}
    if skipped:
        table += f"\n({len(skipped)} group(s) left whole; first: {next(iter(skipped))}: {next(iter(skipped.values()))})"
    form = (r.get("pruning") or {}).get("latency_form")
    if form:
        table += f"\n(latency timed with both models in the {form} deploy form, prunekit.deploy)"
    page = f"\npage: {r['report']['html']}" if isinstance(r["report"], dict) and "html" in r["report"] else ""
    return f"{table}\n\ncheckpoint: {r['checkpoint']}\nreport: {r['report'].get('md', r['report'])}{page}"


def plan_preview(p: Dict[str, Any]) -> str:
    """A plan preview (``prunekit.plan_preview``, ``--dry-run``): the layers whose width changes, the totals, and
    what is left whole and why."""
    changed = [{"layer": layer["layer"], "width before": layer["before"], "width after": layer["after"] or "removed"}
               for layer in p["layers"] if layer["after"] != layer["before"]]
    lines = [markdown_table(changed) if changed else "no layer changes width",
             f"{len(p['layers']) - len(changed)} of {len(p['layers'])} layers keep their width"]
    for key in ("params", "macs"):
        b, a = p[key]["before"], p[key]["after"]
        lines.append(f"{key}: {human(b, 'count')} -> {human(a, 'count')} ({b / max(a, 1):.2f}x smaller)")
    lines += [f"left whole: {group}: {why}" for group, why in p.get("skipped", {}).items()]
    if p.get("blocks_removed"):
        lines.append(f"blocks removed: {', '.join(p['blocks_removed'])}")
    return "\n".join(lines)


def dry_run(r: Dict[str, Any]) -> str:
    """``prune --dry-run``: the plan (or the masks), the reach of the target, the training and its estimate."""
    lines = [f"dry run of {r['mode']} pruning of {r['model']}: nothing trained or written"]
    if r.get("plan"):
        lines.append(plan_preview(r["plan"]))
    if r.get("plan_note"):
        lines.append(f"({r['plan_note']})")
    if r.get("masks"):
        lines.append(f"masks: {r['masks']['overall']:.2%} of {r['masks']['total']:,} weights would be zeroed")
    reach = r.get("reduce_target")
    if reach and not reach["target_reached"]:
        lines.append(f"target not reachable: the closest plan is {reach['reached_factor']:g}x smaller "
                     f"(asked {reach['requested_factor']:g}x); --closest accepts it")
    t = r["training"]
    for phase in t["phases"]:
        eta = "time unknown" if phase["seconds"] is None else f"about {_duration(phase['seconds'])}"
        lines.append(f"would {phase['phase']}: {phase['epochs']} epochs x {phase['batches_per_epoch']} batches, {eta}")
    if not t["phases"]:
        lines.append("no training would run")
    elif t["total_seconds"] is not None:
        lines.append(f"estimated training time: {_duration(t['total_seconds'])} ({t['seconds_per_batch']} s per "
                     "batch measured here; evaluation not included)")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def export(r: Dict[str, Any]) -> str:
    """Where the ONNX file went and how far onnxruntime's outputs are from PyTorch's."""
    shape = f", input {InputSpec.from_dict(r['input']).label()} (batch dynamic)" if r.get("input") else ""
    return (f"{r['path']} ({human(r['bytes'], 'bytes')}, ONNX opset {r['opset']}, {r['exporter']} exporter{shape})\n"
            f"verified with onnxruntime: largest output difference from PyTorch {r['max_abs_diff']:.2g}")


def checkpoint_info(r: Dict[str, Any]) -> str:
    """What a user asks of a checkpoint at a glance; the whole description stays behind ``--json``."""
    desc, m = r["description"], r["measurement"]
    arch, data = desc.get("arch") or {}, desc.get("data") or {}
    shape = InputSpec.from_dict(r["input"]).label() if r.get("input") else \
        "x".join(str(d) for d in m.get("input_shape", []))
    model = f"{arch.get('name', '?')}, {arch.get('num_classes', '?')} classes" if arch else \
        (desc.get("module") or {}).get("qualname", "?")
    rows = [("checkpoint", r["checkpoint"]), ("model", f"{model}, input {shape}")]
    if data:
        split = (f"split seed {data['split_seed']}, test {data['test_frac']:g}, val {data['val_frac']:g}"
                 if "split_seed" in data else "split not recorded")
        rows.append(("data", f"{data.get('source', '?')} ({split})"))
    for name, value in (desc.get("metrics") or {}).items():
        if isinstance(value, dict):  # {"test": {"accuracy": ...}} as train writes it
            name, value = f"{name} accuracy", value.get("accuracy")
        rows.append((name.replace("_", " "), _pct(value)))
    pruning = desc.get("pruning")
    if pruning:
        rows.append(("pruning", _pruning_summary(pruning)))
    for key in ("params", "nonzero_params", "macs", "file_bytes", *sorted(k for k in m if k.startswith("latency_ms"))):
        if m.get(key) is not None:
            label, kind = metric_info(key)
            rows.append((label, human(m[key], kind)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows) + "\n(the full description: --json)"


def _pruning_summary(p: Dict[str, Any]) -> str:
    parts = [str(p.get("method", "?"))]
    for key in ("criterion", "scope", "ratio", "reduce", "nm", "schedule"):
        value = p.get(key) if not (key == "ratio" and p.get("budget")) else None  # budget: ratio 0 + per layer
        if value not in (None, "", {}, []):
            parts.append(f"{key} {value if not isinstance(value, dict) else value.get('schedule', value)}")
    budget = p.get("budget")
    if budget:
        parts.append(f"accuracy budget {budget['max_drop_points']:g} points ({len(budget['overrides'])} layers cut)")
    groups = (p.get("plan") or {}).get("groups") or []
    if groups:
        kept = sum(g["size"] - len(g["remove"]) for g in groups)
        parts.append(f"{kept} of {sum(g['size'] for g in groups)} channels kept in {len(groups)} groups")
    sparsity = (p.get("sparsity") or {}).get("overall")
    if sparsity is not None:
        parts.append(f"{sparsity:.1%} of the targeted weights zero")
    return ", ".join(parts)


def size(r: Dict[str, Any]) -> str:
    """``prunekit size``'s result: bytes on disk and the dense/compressed/entropy-bound report."""
    return f"{r['checkpoint']} ({r['file_bytes'] / 1e6:.2f} MB on disk)\n{r['text']}"


def sensitivity(r: Dict[str, Any]) -> str:
    """``prunekit sensitivity``'s table (drop per layer and ratio) and, with ``--max-drop``, the budget's choice."""
    lines = [f"{r['split']} accuracy in points; drop = with that one layer pruned (BN re-estimated, no fine-tuning)",
             r["table"]]
    b = r.get("budget")
    if b:
        lines += ["", f"within {b['max_drop_points']:g} points: {len(b['overrides'])} layers pruned, MACs "
                  f"-{b['macs_reduction']:.1%}, params -{b['params_reduction']:.1%}, measured drop "
                  f"{b['drop_points']:.2f} points after {b['recovery_epochs']} recovery epochs ({b['trials']} candidate plans "
                  "scored)"]
        lines += [f"  {name}: {ratio:g}" for name, ratio in b["overrides"].items()]
        lines.append("prune with: prunekit prune --structured --max-drop "
                     f"{b['max_drop_points']:g} (same data and criterion)")
    lines += ["", f"plot: {r['plot']}", f"json: {r['out']}/sensitivity.json"]
    return "\n".join(lines)
