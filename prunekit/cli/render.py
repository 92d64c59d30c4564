"""Human-readable rendering of job results (the ``--json`` flag prints the raw result instead)."""
from __future__ import annotations

import json
from typing import Any, Dict


def _pct(x: Any) -> str:
    return f"{100 * x:.2f}%" if isinstance(x, (int, float)) else "-"


def train(r: Dict[str, Any]) -> str:
    hist = r.get("history") or []
    lines = [f"trained {r['model']} for {r['epochs_run']} epochs in {r['train_seconds']} s"
             + (f" (resumed from epoch {r['resumed_from_epoch']})" if r.get("resumed_from_epoch") else "")]
    if hist:
        last = hist[-1]
        lines.append(f"last epoch: train acc {_pct(last.get('train_acc'))}, val acc {_pct(last.get('val_acc'))}")
    lines.append(f"test accuracy: {_pct(r['test']['accuracy'])} on {r['test']['samples']} images")
    lines.append(f"checkpoint: {r['checkpoint']}")
    return "\n".join(lines)


def evaluation(r: Dict[str, Any]) -> str:
    lines = [f"{r['split']} accuracy: {_pct(r['accuracy'])} on {r['samples']} images", "per-class accuracy:"]
    for name, acc in r["per_class"].items():
        lines.append(f"  {name:<24} {_pct(acc)}")
    return "\n".join(lines)


def prune(r: Dict[str, Any]) -> str:
    from ..report import compare_rows, format_table

    table = format_table(compare_rows(r["before"], r["after"]))
    return f"{table}\n\ncheckpoint: {r['checkpoint']}\nreport: {r['report'].get('md', r['report'])}"


def info(r: Dict[str, Any]) -> str:
    return json.dumps(r, indent=2, default=str)


def size(r: Dict[str, Any]) -> str:
    return f"{r['checkpoint']} ({r['file_bytes'] / 1e6:.2f} MB on disk)\n{r['text']}"


def sensitivity(r: Dict[str, Any]) -> str:
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
