"""How long does measuring take, and how stable are the numbers? Prints a table and writes JSON.

For each model: the time spent in each phase of ``measure_model`` (MAC counting, latency, peak memory) and,
over ``--trials`` repeated latency measurements, how much the median itself moves (the noise a before/after
latency comparison must beat).

Usage::

    .venv/bin/python benchmarks/measure_overhead.py --models resnet18 mobilenet_v2 --size 64 --out runs/bench
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torchvision

from prunekit.measure import count_macs, measure_latency, peak_forward_memory
from prunekit.report import format_table, human
from prunekit.files import atomic_path


def bench_model(name: str, size: int, batches: tuple[int, ...], trials: int) -> dict:
    model = getattr(torchvision.models, name)()  # random init: cost and size do not depend on the weights
    shape = (3, size, size)
    t0 = time.perf_counter()
    macs, _ = count_macs(model, shape)
    t1 = time.perf_counter()
    medians = []
    for _ in range(trials):
        median, _ = measure_latency(model, shape, batches)
        medians.append(median)
    t2 = time.perf_counter()
    peak = peak_forward_memory(model, shape, max(batches))
    t3 = time.perf_counter()
    row = {"model": name, "input": f"{size}px", "MACs": human(macs, "count"), "peak mem": human(peak, "bytes"),
           "macs_s": t1 - t0, "latency_s_per_trial": (t2 - t1) / trials, "peak_mem_s": t3 - t2}
    for b in batches:
        values = [m[b] for m in medians]
        row[f"b{b} ms"] = statistics.median(values)
        row[f"b{b} trial spread %"] = 100 * (max(values) - min(values)) / statistics.median(values)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()
    rows = [bench_model(n, args.size, tuple(args.batches), args.trials) for n in args.models]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu")
    print(format_table(rows, floatfmt=".3g"))
    with atomic_path(args.out / "measure_overhead.json") as tmp:
        tmp.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows},
                                  indent=2))
    print(f"wrote {args.out / 'measure_overhead.json'}")


if __name__ == "__main__":
    main()
