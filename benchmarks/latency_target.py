"""``--reduce latency=...`` on real models: which arm (blocks, channels, both) reaches a measured latency target
while keeping the most MACs?

For each model (random init, batch 1, the model's input size, eager PyTorch, one intra-op thread) and each target,
the ``latency_target`` allocator times its candidates (depth: the first n blocks, lowest magnitude first; width:
one uniform channel ratio on multiples of ``--round-to``; mixes: n blocks + the ratio that fills the rest), each
right after the dense model, and keeps the one that reaches the target removing the fewest MACs. The chosen model is
then built and timed once more against the dense one, round-robin (``measure_latency_together``), for the gain
reported. One JSON per model under results/latency_target/, a target at a time (a finished target is skipped, so
the run resumes); ``--table`` prints the markdown table of every JSON there. Time it alone on the CPU, e.g.

    bash benchmarks/quiet.sh python benchmarks/latency_target.py --models tv/resnet50 --targets 2x
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from depth_vs_width import build, input_size  # noqa: E402  (the same models, built the same way)
from prunekit.allocate import AllocationRequest, allocate, parse_reduce  # noqa: E402
from prunekit.apply.oneshot import prune_structured  # noqa: E402
from prunekit.report.tables import markdown_table  # noqa: E402
from prunekit.files import atomic_path  # noqa: E402
from prunekit.measure import count_macs, count_params, measure_latency_together  # noqa: E402

MODELS = ["tv/resnet50", "tv/convnext_tiny", "timm/resnet26d", "tv/vit_b_16"]


def bench(name: str, target: str, round_to: int, repeats: int) -> Dict[str, Any]:
    """One model at one target: the allocator's record, then the chosen model timed against the dense one."""
    base = build(name)
    shape = input_size(base)
    x = torch.randn(2, *shape)
    t0 = time.perf_counter()
    alloc = allocate("latency_target", AllocationRequest(base, x, criterion="l2", reduce=parse_reduce(
        f"latency={target}", measured=True), plan_kwargs={"round_to": round_to}, options={"runtime": "eager"}))
    search_s = time.perf_counter() - t0
    pruned, plan = prune_structured(copy.deepcopy(base), x, criterion="l2", round_to=round_to, **alloc.plan_kwargs)
    (dense, _), (small, _) = measure_latency_together([base, pruned], shape, batch_sizes=(1,), warmup=2,
                                                      repeats=repeats)
    rec = alloc.record["latency_target"]
    macs = (count_macs(base, shape)[0], count_macs(pruned, shape)[0])
    params = (count_params(base), count_params(pruned))
    return {"model": name, "input": list(shape), "target": target, "round_to": round_to, "arm": rec["arm"],
            "blocks_removed": plan.blocks, "blocks_available": rec["blocks_available"], "ratio": rec["ratio"],
            "macs": {"dense": macs[0], "pruned": macs[1]}, "params": {"dense": params[0], "pruned": params[1]},
            "search": {k: rec[k] for k in ("requested_factor", "reached_factor", "dense_ms", "ms", "why")},
            "check_ms": {"dense": round(dense[1], 2), "pruned": round(small[1], 2)},
            "latency_gain": round(dense[1] / small[1], 3), "macs_gain": round(macs[0] / macs[1], 3),
            "candidates": rec["candidates"], "search_seconds": round(search_s, 1),
            "threads": torch.get_num_threads(), "repeats": repeats}


def table(rows: List[Dict[str, Any]]) -> str:
    """The markdown table docs/structured.md shows: one line per model and target."""
    return markdown_table([{
        "model": r["model"], "target": r["target"], "chosen arm": r["arm"],
        "blocks removed": f"{len(r['blocks_removed'])}/{r['blocks_available']}", "channel ratio": str(r["ratio"]),
        "GMACs dense -> pruned": f"{r['macs']['dense'] / 1e9:.2f} -> {r['macs']['pruned'] / 1e9:.2f}",
        "Mparams dense -> pruned": f"{r['params']['dense'] / 1e6:.1f} -> {r['params']['pruned'] / 1e6:.1f}",
        "eager ms dense -> pruned (gain)": f"{r['check_ms']['dense']:.0f} -> {r['check_ms']['pruned']:.0f} "
                                           f"({r['latency_gain']:.2f}x)",
        "candidates timed": str(len(r["candidates"]))} for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--targets", nargs="+", default=["1.5x", "2x"])
    ap.add_argument("--round-to", type=int, default=8, help="width arm: channel counts kept multiples of this")
    ap.add_argument("--repeats", type=int, default=10, help="timed runs of the final dense/pruned check")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "latency_target")
    ap.add_argument("--table", action="store_true", help="print the table of the finished runs and stop")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table:
        torch.set_num_threads(1)
        for name in args.models:
            path = args.out / f"{name.replace('/', '__')}.json"
            done = json.loads(path.read_text()) if path.exists() else {"model": name, "targets": {}}
            for target in args.targets:
                if target in done["targets"]:
                    print(f"{name} {target}: done before ({path.name}), skipped")
                    continue
                t0 = time.perf_counter()
                done["targets"][target] = bench(name, target, args.round_to, args.repeats)
                with atomic_path(path) as tmp:
                    tmp.write_text(json.dumps(done, indent=1))
                print(f"{name} {target}: {time.perf_counter() - t0:.0f} s")
    rows = [r for p in sorted(args.out.glob("*.json")) for r in json.loads(p.read_text())["targets"].values()]
    print(table(rows))


if __name__ == "__main__":
    main()
