"""PFAM (issue 8) against its peers under one training budget, from scratch, resumable cell by cell.

    .venv/bin/python benchmarks/pfam_from_scratch.py --data ../shared/data/ucmerced --model vgg_small \\
        --epochs 30 --targets params=0.4 macs=0.5 --seeds 0 1 2
    .venv/bin/python benchmarks/pfam_from_scratch.py --epochs 4 --model vgg_tiny --seeds 0      # quick check

Methods, every one with ``--epochs`` epochs of training in total:
- ``unpruned``: the network trained from scratch, no pruning;
- ``pfam``, ``sfp_l2``, ``fpgm_soft``, ``random_soft``: the soft schedule from scratch (zero the lowest-scored
  filters at every epoch end, let them regrow, remove the final zeros physically) with the PFAM, L2-norm (soft filter
  pruning), FPGM and random criteria;
- ``l1_oneshot``, ``attention``: train ``epochs - finetune`` epochs unpruned, prune once (L1 norm, or SE attention
  trained ``--attention-epochs`` epochs), fine-tune ``--finetune`` epochs.

Each cell runs ``prunekit.jobs.prune.prune_job`` (which itself resumes after a kill) and writes one JSON under
``results/pfam/cpu/``; a rerun skips finished cells. The table ``docs/pfam/pfam_results.md`` is rebuilt from all JSON.
Nothing is chosen on the test split: settings are the defaults, fixed before any run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from prunekit.config import PruneOptions  # noqa: E402
from prunekit.jobs.common import write_json  # noqa: E402
from prunekit.jobs.prune import prune_job  # noqa: E402
from prunekit.report.tables import markdown_table  # noqa: E402
from prunekit.device import pick_device  # noqa: E402

RESULTS = REPO / "results" / "pfam" / "cpu"
DOCS = REPO / "docs" / "pfam"
SOFT = {"pfam": "pfam", "pfam_energy": "pfam_energy", "sfp_l2": "l2", "fpgm_soft": "fpgm", "random_soft": "random"}
ONESHOT = {"l1_oneshot": "l1", "attention": "attention"}


def cell_options(method: str, target: str, seed: int, a: argparse.Namespace, work: Path) -> PruneOptions:
    common = dict(model=a.model, data=a.data, image_size=a.image_size, seed=seed, out=work, progress=False,
                  latency=False, method="structured", batch_size=a.batch_size, device=a.device)
    if method == "unpruned":
        return PruneOptions(**common, ratio=0.0, epochs=a.epochs, finetune_epochs=0)
    if method in SOFT:
        return PruneOptions(**common, schedule="soft", criterion=SOFT[method], reduce=target, epochs=a.epochs,
                            finetune_epochs=0)
    return PruneOptions(**common, criterion=ONESHOT[method], reduce=target, epochs=a.epochs - a.finetune,
                        finetune_epochs=a.finetune,  # --attention-epochs is refused for a criterion but attention
                        **({"attention_epochs": a.attention_epochs} if method == "attention" else {}))


def run_cell(method: str, target: str, seed: int, a: argparse.Namespace) -> Dict[str, Any]:
    data = Path(a.data).name if a.data else "embedded"
    key = f"{a.model.replace('/', '_')}-{data}-{a.image_size}px-e{a.epochs}-{method}-" \
          f"{'none' if method == 'unpruned' else target}-s{seed}"
    path = a.results / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    print(f"running {key}", flush=True)
    t0 = time.perf_counter()
    res = prune_job(cell_options(method, target, seed, a, REPO / "runs" / "pfam" / key))
    wall = time.perf_counter() - t0  # of this process: a cell resumed after a kill counts only its last part
    row = {"key": key, "model": a.model, "image_size": a.image_size, "method": method, "target": None if method == "unpruned" else target,
           "seed": seed, "epochs": a.epochs, "test_accuracy": res["after"]["accuracy"],
           "params": res["after"]["params"], "macs": res["after"]["macs"],
           "params_reduction": 1 - res["after"]["params"] / res["before"]["params"],
           "macs_reduction": 1 - res["after"]["macs"] / res["before"]["macs"],
           "device": pick_device(a.device).type, "wall_s": round(wall, 1),
           "threads": torch.get_num_threads()}
    write_json(path, row)
    return row


def wall(rows: List[Dict[str, Any]]) -> str:
    """Mean minutes per run and the intra-op threads, over the cells that recorded them (older cells did not)."""
    timed = [r for r in rows if r.get("wall_s")]
    if not timed:
        return "-"
    threads = sorted({str(r.get("threads", "?")) for r in timed})
    return f"{statistics.mean(r['wall_s'] for r in timed) / 60:.1f} ({'/'.join(threads)})"


def table(rows: List[Dict[str, Any]]) -> str:
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["epochs"], r["target"] or "-", r["method"], r.get("device", "cpu")),
                          []).append(r)
    out = []
    for (model, epochs, target, method, device), rs in sorted(groups.items()):
        accs = [r["test_accuracy"] for r in rs]
        out.append({"model": model, "epochs": epochs, "target": target, "method": method, "device": device,
                    "seeds": len(rs),
                    "test acc %": f"{100 * statistics.mean(accs):.2f}",
                    "spread (sd)": f"{100 * statistics.stdev(accs):.2f}" if len(accs) > 1 else "-",
                    "params -%": f"{100 * statistics.mean(r['params_reduction'] for r in rs):.1f}",
                    "MACs -%": f"{100 * statistics.mean(r['macs_reduction'] for r in rs):.1f}",
                    "wall min/run (threads)": wall(rs)})
    return markdown_table(out, list(out[0])) if out else "(no results yet)"


def main(argv: List[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None)
    p.add_argument("--model", default="vgg_small")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--finetune", type=int, default=10, help="fine-tuning epochs of the one-shot methods")
    p.add_argument("--attention-epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--targets", nargs="+", default=["params=0.4", "macs=0.5"])
    p.add_argument("--methods", nargs="+", default=["unpruned", *SOFT, *ONESHOT])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda; results record it")
    p.add_argument("--results", type=Path, default=RESULTS, help="one JSON per cell here")
    p.add_argument("--name", default="pfam_results", help="the table goes to docs/pfam/<name>.md")
    p.add_argument("--also", type=Path, nargs="*", default=[], help="more result folders the table reads")
    p.add_argument("--report-only", action="store_true", help="rebuild the table from the JSON files, run nothing")
    a = p.parse_args(argv)
    for seed in [] if a.report_only else a.seeds:
        for method in a.methods:
            for target in (a.targets if method != "unpruned" else [None]):
                run_cell(method, target, seed, a)
    rows = [json.loads(f.read_text()) for d in [a.results, *a.also] for f in sorted(d.glob("*.json"))]
    rows = [r for r in rows if r["epochs"] == a.epochs]
    text = "# PFAM against its peers, from scratch, same training budget\n\n" + table(rows) + "\n"
    (DOCS / f"{a.name}.md").write_text(text)
    plot(rows, a.name)
    print(text)


def plot(rows: List[Dict[str, Any]], name: str) -> None:
    """docs/pfam/<name>_<model>.png: test accuracy (mean, sd error bars) against MACs reduction, one line per method
    and device; the unpruned network is the flat reference line."""
    from prunekit.report import plot_tradeoff

    for model in sorted({r["model"] for r in rows}):
        groups: Dict[tuple, List[Dict[str, Any]]] = {}
        for r in rows:
            if r["model"] == model:
                groups.setdefault((r["method"], r.get("device", "cpu"), r["target"] or "-"), []).append(r)
        series: Dict[str, list] = {}
        for (method, device, _), rs in groups.items():
            accs = [100 * r["test_accuracy"] for r in rs]
            x = 100 * statistics.mean(r["macs_reduction"] for r in rs)
            sd = statistics.stdev(accs) if len(accs) > 1 else None
            series.setdefault(f"{method} ({device}, {len(rs)} seeds)", []).append((x, statistics.mean(accs), sd))
        right = max((p[0] for pts in series.values() for p in pts), default=50.0)
        for label in [k for k in series if k.startswith("unpruned")]:
            series[label] = series[label] + [(right, series[label][0][1], None)]
        plot_tradeoff(series, DOCS / f"{name}_{model.replace('/', '_')}.png", xlabel="MACs reduction (%)",
                      ylabel="test accuracy (%)", title=f"{model}, from scratch, soft vs one-shot pruning")


if __name__ == "__main__":
    main()
