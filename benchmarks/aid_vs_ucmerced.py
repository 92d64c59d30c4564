"""Does a method's rank on AID agree with its rank on UC Merced? One table from two result folders.

    .venv/bin/python benchmarks/aid_vs_ucmerced.py                       # the PFAM cells (issue 21, question 1)
    .venv/bin/python benchmarks/aid_vs_ucmerced.py --model torchvision/resnet18 --aid results/pfam/aid_gpu

Reads the one-JSON-per-cell results of ``benchmarks/pfam_from_scratch.py`` for one model and target on both
datasets (same recipe, same device kind), and writes ``docs/aid/<name>.md``: per method the test accuracy mean ± sd
and seed count on each dataset, the difference to the unpruned network paired by seed (mean, and t when 2+ pairs),
and the rank of its mean on each dataset (read ranks with the paired differences: a gap inside the seeds' spread
is not an order).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from prunekit.report.tables import markdown_table  # noqa: E402


def cells(folder: Path, model: str, target: str, epochs: int) -> Dict[str, Dict[int, float]]:
    """method -> seed -> test accuracy (%), for one model and target (the unpruned cells have no target)."""
    out: Dict[str, Dict[int, float]] = {}
    for f in sorted(folder.glob("*.json")):
        r = json.loads(f.read_text())
        if r["model"] == model and r["epochs"] == epochs and r["target"] in (target, None):
            out.setdefault(r["method"], {})[int(r["seed"])] = 100 * r["test_accuracy"]
    return out


def summary(accs: Dict[int, float]) -> str:
    vals = list(accs.values())
    sd = f" ± {statistics.stdev(vals):.2f}" if len(vals) > 1 else ""
    return f"{statistics.mean(vals):.2f}{sd} ({len(vals)})"


def paired(accs: Dict[int, float], ref: Dict[int, float]) -> str:
    """Mean difference to the reference over the seeds both have, with its t value when there are 2+ pairs."""
    diffs = [accs[s] - ref[s] for s in sorted(set(accs) & set(ref))]
    if not diffs:
        return "-"
    if len(diffs) == 1:
        return f"{diffs[0]:+.2f} (1 seed)"
    sd = statistics.stdev(diffs)
    t = statistics.mean(diffs) / (sd / math.sqrt(len(diffs))) if sd > 0 else float("inf")
    return f"{statistics.mean(diffs):+.2f} (t {t:.1f}, {len(diffs)} seeds)"


def shown(folder: Path) -> str:
    """A folder as the reader would type it: relative to the repository when inside it."""
    folder = folder.resolve()
    return str(folder.relative_to(REPO)) if folder.is_relative_to(REPO) else str(folder)


def ranks(data: Dict[str, Dict[int, float]]) -> Dict[str, int]:
    order = sorted(data, key=lambda m: -statistics.mean(data[m].values()))
    return {m: i + 1 for i, m in enumerate(order)}


def table(aid: Dict[str, Dict[int, float]], ucm: Dict[str, Dict[int, float]]) -> str:
    methods = sorted(set(aid) | set(ucm), key=lambda m: (m != "unpruned", m))
    r_aid, r_ucm = ranks(aid), ranks(ucm)
    rows = []
    for m in methods:
        rows.append({"method": m,
                     "AID test % (seeds)": summary(aid[m]) if m in aid else "not run",
                     "AID − unpruned": paired(aid[m], aid["unpruned"]) if m in aid and "unpruned" in aid and
                     m != "unpruned" else "-",
                     "UC Merced test % (seeds)": summary(ucm[m]) if m in ucm else "not run",
                     "UCM − unpruned": paired(ucm[m], ucm["unpruned"]) if m in ucm and "unpruned" in ucm and
                     m != "unpruned" else "-",
                     "rank AID / UCM": f"{r_aid.get(m, '-')} / {r_ucm.get(m, '-')}"})
    return markdown_table(rows, list(rows[0])) if rows else "(no results yet)"


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="vgg_small")
    p.add_argument("--target", default="params=0.4")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--aid", type=Path, default=REPO / "results" / "pfam" / "aid_cpu")
    p.add_argument("--ucmerced", type=Path, default=REPO / "results" / "pfam" / "cpu")
    p.add_argument("--name", default="pfam_vgg_small_cpu")
    a = p.parse_args(argv)
    aid, ucm = (cells(d, a.model, a.target, a.epochs) for d in (a.aid, a.ucmerced))
    ucm = {m: accs for m, accs in ucm.items() if m in aid}  # ranks among the methods run on both
    text = (f"# {a.model}, {a.target}, {a.epochs} epochs from scratch: AID against UC Merced\n\n"
            f"AID cells: `{shown(a.aid)}`; UC Merced cells: `{shown(a.ucmerced)}`. "
            "Test accuracy mean ± sd (seeds); differences paired by seed.\n\n" + table(aid, ucm) + "\n")
    out = REPO / "docs" / "aid" / f"{a.name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
