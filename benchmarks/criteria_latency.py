"""Latency of the criteria comparison's pruned models, per target (the column the GPU grids left empty).

    .venv/bin/python benchmarks/criteria_latency.py    # -> results/criteria/latency/criteria_latency.json, a table

Under uniform scope every criterion removes the same number of channels per layer at a target, so every criterion's
model has the same shapes and the same latency: one model per target is timed. It is built as the comparison builds
it (``search_ratio`` on a 21-class model at 64 px, L1 choosing the channels, weights irrelevant to speed) and its
parameter count is checked against the committed cells of the lr-0.05 grid, so the shapes are those cells' shapes.
Timing: eager PyTorch on the CPU, one thread, batch 1 and 32, every model of a network timed round-robin in one
session (``prunekit.measure.latency.measure_latency_together``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import prunekit  # noqa: E402
from prunekit.measure import count_macs, count_params  # noqa: E402
from prunekit.measure.latency import measure_latency_together  # noqa: E402
from prunekit.apply.oneshot import pruned_copy  # noqa: E402
from prunekit.files import atomic_path  # noqa: E402
from prunekit.allocate.reduce import parse_reduce, search_ratio  # noqa: E402

TARGETS = ["macs=0.3", "macs=0.5", "macs=3x", "macs=0.7"]
CELLS = REPO / "results" / "criteria" / "f20_gpu"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["vgg_small", "torchvision/resnet18"])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", type=Path, default=REPO / "results" / "criteria" / "latency" / "criteria_latency.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    x = torch.zeros(1, 3, 64, 64)
    record = {"torch": torch.__version__, "threads": 1, "repeats": args.repeats, "models": {}}
    for name in args.models:
        torch.manual_seed(0)
        base = prunekit.create_model(name, 21).eval()
        models, rows = [base], [{"target": "unpruned", "params": count_params(base),
                                 "macs": count_macs(base, (3, 64, 64))[0]}]
        for t in TARGETS:
            kwargs = search_ratio(base, x, parse_reduce(t)).plan_kwargs()
            pruned = pruned_copy(base, (x,), None, criterion="l1", **kwargs).eval()
            cell = CELLS / f"{name.replace('/', '_')}-ucmerced64-l1-{t.replace('=', '')}-s0-b30-f20-lr0.05-bs0.json"
            row = {"target": t, "params": count_params(pruned), "macs": count_macs(pruned, (3, 64, 64))[0]}
            if cell.is_file():
                row["same_shapes_as_cells"] = json.loads(cell.read_text())["params"] == row["params"]
            models.append(pruned)
            rows.append(row)
        timings = measure_latency_together(models, (3, 64, 64), (1, 32), repeats=args.repeats)
        for row, (median, _) in zip(rows, timings):
            row.update(latency_ms_b1=round(median[1], 3), latency_ms_b32=round(median[32], 2))
            row.update(speedup_b1=round(rows[0].get("latency_ms_b1", median[1]) / median[1], 2),
                       speedup_b32=round(rows[0].get("latency_ms_b32", median[32]) / median[32], 2))
        record["models"][name] = rows
        print(f"\n{name}")
        print(f"{'target':10} {'params':>10} {'MACs (M)':>9} {'b1 ms':>8} {'b32 ms':>8} {'b1 x':>6} {'b32 x':>6} cells")
        for r in rows:
            print(f"{r['target']:10} {r['params']:>10} {r['macs'] / 1e6:>9.2f} {r['latency_ms_b1']:>8.3f} "
                  f"{r['latency_ms_b32']:>8.2f} {r['speedup_b1']:>6.2f} {r['speedup_b32']:>6.2f} "
                  f"{r.get('same_shapes_as_cells', '-')}")
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
