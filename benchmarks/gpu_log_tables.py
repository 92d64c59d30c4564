"""Tables from the lane logs of the first GPU batch (benchmarks/gpu_sweeps.sh, 2026-11-26), whose per-cell JSON files
were lost: that batch wrote them to untracked folders, which the device machine's sync removed before they were
fetched. Every finished cell had printed one line with its key and test accuracy, and those logs came back
(results/gpu_logs/). This script turns the lines into the mean ± sample std tables; nothing is re-run.

    .venv/bin/python benchmarks/gpu_log_tables.py          # prints markdown, writes docs/schedules/gpu_batch1_tables.md
"""
from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
LOGS = REPO / "results" / "gpu_logs"
CRITERIA_LINE = re.compile(r"^(?P<model>\w+)-ucmerced64-(?P<crit>\w+)-(?P<target>macs0\.\d|none)-s(?P<seed>\d)-b30-f10"
                           r"-bs0: test (?P<acc>[\d.]+) ")
SCHEDULE_LINE = re.compile(r"^\[\d+/\d+\] vgg_small-ucmerced-64px-e30-(?P<method>dense|unstructured|structured)-"
                           r"(?P<schedule>\w+)-(?P<target>[\w.]+)-s(?P<seed>\d)-\w+: test acc (?P<acc>[\d.]+),")


def cells(pattern: re.Pattern, files: List[Path], keys: Tuple[str, ...]) -> Dict[tuple, Dict[int, float]]:
    """{(key fields): {seed: accuracy %}} from every matching line."""
    out: Dict[tuple, Dict[int, float]] = {}
    for f in files:
        for line in f.read_text().splitlines():
            m = pattern.match(line)
            if m:
                out.setdefault(tuple(m[k] for k in keys), {})[int(m["seed"])] = 100 * float(m["acc"])
    return out


def fmt(accs: Dict[int, float]) -> str:
    vals = list(accs.values())
    sd = f" ± {statistics.stdev(vals):.2f}" if len(vals) > 1 else ""
    return f"{statistics.mean(vals):.2f}{sd} ({len(vals)})"


def pivot(data: Dict[tuple, Dict[int, float]], rows: List[str], cols: List[str], row_head: str) -> List[str]:
    lines = [f"| {row_head} | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r} | " + " | ".join(fmt(data[(r, c)]) if (r, c) in data else "-" for c in cols) + " |")
    return lines


def main() -> None:
    crit = cells(CRITERIA_LINE, sorted(LOGS.glob("cc_vgg_f10_s*_run1.log")), ("crit", "target"))
    names = sorted({k[0] for k in crit if k[0] != "unpruned"})
    unpruned = crit.get(("unpruned", "none"), {})
    sched = cells(SCHEDULE_LINE, sorted(LOGS.glob("sched_s*_run1.log")), ("schedule", "target"))
    dense = sched.get(("none", "0"), {})
    md = ["# GPU batch 1 (H200): tables rebuilt from the lane logs", "",
          "Written by `benchmarks/gpu_log_tables.py` from `results/gpu_logs/*_run1.log`. Test accuracy %, "
          "mean ± sample std (number of seeds). The per-cell JSON files of this batch were lost (see the script's "
          "docstring); a cell missing here had not finished when the batch's deadline stopped its lane.", "",
          "## Criteria, vgg_small, 10 fine-tuning epochs (UC Merced 64 px, base: the committed 89.29% model)", "",
          f"Unpruned, fine-tuned the same 10 epochs: {fmt(unpruned) if unpruned else '-'}.", ""]
    md += pivot(crit, names, ["macs0.3", "macs0.5", "macs0.7"], "criterion")
    md += ["", "## Schedules, vgg_small, 30 epochs from scratch, LAMP budget (unstructured)", "",
           f"Dense, same 30 epochs: {fmt(dense) if dense else '-'}.", ""]
    md += pivot(sched, ["oneshot", "iterative", "gradual", "dns", "rigl"], ["0.9", "0.95", "0.98"], "schedule")
    text = "\n".join(md) + "\n"
    (REPO / "docs" / "schedules" / "gpu_batch1_tables.md").write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
