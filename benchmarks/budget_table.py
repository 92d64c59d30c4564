"""The accuracy budget against a uniform ratio at the same MACs: one table from a folder of result files.

    .venv/bin/python benchmarks/budget_table.py results/balance/aid_cpu --name budget_vs_uniform_aid_cpu

Pairs each ``budget-d<D>-e<E>-f<F>-s<S>.json`` (``prunekit prune --max-drop D`` result, as
``benchmarks/budget_vs_uniform.sh`` or ``benchmarks/aid.sh budget`` keeps it) with the
``uniform-macs<r>-f<F>-s<S>.json`` run at the MACs the budget removed, and writes ``<docs>/<name>.md`` (default ``docs/aid``): one row per
run, then per budget the mean test accuracy of both and their difference paired by seed (with t from 2 seeds).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aid_vs_ucmerced import REPO, paired, shown  # noqa: E402
from prunekit.report.tables import markdown_table  # noqa: E402

BUDGET = re.compile(r"budget-d(?P<drop>[\d.]+)-e\d+-f(?P<ft>\d+)-s(?P<seed>\d+)\.json$")


def pairs(folder: Path) -> List[Dict[str, Any]]:
    """One dict per budget run whose uniform partner exists: drop, seed, and both results."""
    out = []
    for f in sorted(folder.glob("budget-*.json")):
        m = BUDGET.search(f.name)
        if not m:
            continue
        budget = json.loads(f.read_text())
        macs = round(budget["pruning"]["budget"]["macs_reduction"], 4)
        partner = folder / f"uniform-macs{macs}-f{m['ft']}-s{m['seed']}.json"
        if partner.exists():
            out.append({"drop": float(m["drop"]), "seed": int(m["seed"]), "budget": budget,
                        "uniform": json.loads(partner.read_text())})
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _removed(r: Dict[str, Any], key: str) -> str:
    return f"{100 * (1 - r['after'][key] / r['before'][key]):.1f}%"


def rows(found: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per (budget, seed): what each removed, accuracy right after the cut and after fine-tuning."""
    table = []
    for p in sorted(found, key=lambda p: (p["drop"], p["seed"])):
        b, u = p["budget"], p["uniform"]
        table.append({"max drop (val points)": f"{p['drop']:g}", "seed": p["seed"],
                      "base test %": _pct(b["before"]["accuracy"]),
                      "MACs removed": _removed(b, "macs"),
                      "params removed: budget / uniform": f"{_removed(b, 'params')} / {_removed(u, 'params')}",
                      "after cut: budget / uniform": f"{_pct(b['pruning']['test_accuracy_after_cut'])} / "
                                                     f"{_pct(u['pruning']['test_accuracy_after_cut'])}",
                      "after fine-tuning: budget": _pct(b["after"]["accuracy"]),
                      "uniform, same MACs": _pct(u["after"]["accuracy"]),
                      "budget − uniform": f"{100 * (b['after']['accuracy'] - u['after']['accuracy']):+.2f}"})
    return table


def summary(found: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per budget: mean test accuracy of each side and the difference paired by seed."""
    out = []
    for drop in sorted({p["drop"] for p in found}):
        acc = {side: {p["seed"]: 100 * p[side]["after"]["accuracy"] for p in found if p["drop"] == drop}
               for side in ("budget", "uniform")}
        out.append({"max drop": f"{drop:g}", "seeds": len(acc["budget"]),
                    "budget test %": f"{statistics.mean(acc['budget'].values()):.2f}",
                    "uniform test %": f"{statistics.mean(acc['uniform'].values()):.2f}",
                    "budget − uniform (paired)": paired(acc["budget"], acc["uniform"])})
    return out


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--name", default="budget_vs_uniform_aid_cpu")
    p.add_argument("--docs", type=Path, default=REPO / "docs" / "aid", help="folder the table is written to")
    a = p.parse_args(argv)
    found = pairs(a.folder)
    if not found:
        raise SystemExit(f"budget_table: no budget-*.json with its uniform partner in {a.folder}")
    text = (f"# Accuracy budget against a uniform ratio at the same MACs\n\nResults: `{shown(a.folder)}` "
            "(`budget-*`: `prunekit prune --max-drop`, `uniform-*`: `--reduce macs=<what the budget removed>`, "
            "both `--criterion l2` and the same fine-tuning). Test accuracy %.\n\n"
            + markdown_table(rows(found)) + "\n\n" + markdown_table(summary(found)) + "\n")
    a.docs.mkdir(parents=True, exist_ok=True)
    out = a.docs / f"{a.name}.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
