"""Wall time of ``prunekit --help`` and ``prunekit prune --help`` (a fresh interpreter each run), in the current
folder's prunekit: run it from a checkout to time that checkout.

    python benchmarks/help_time.py --runs 5 --label after --out results/options/help_times.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {"prunekit --help": ["--help"], "prunekit prune --help": ["prune", "--help"]}


def wall_times(args: list, runs: int) -> list:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "prunekit.cli.main", *args], check=True, capture_output=True)
        times.append(round(time.perf_counter() - t0, 3))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--label", default="current")
    ap.add_argument("--out", type=Path, default=None, help="JSON file to add this label's times to")
    a = ap.parse_args()
    rows = {name: wall_times(args, a.runs) for name, args in COMMANDS.items()}
    load = os.getloadavg()[0]
    print(f"| command ({a.label}, load {load:.1f}) | median s | min s | max s |\n|---|---:|---:|---:|")
    for name, t in rows.items():
        print(f"| {name} | {statistics.median(t):.2f} | {min(t):.2f} | {max(t):.2f} |")
    if a.out:
        data = json.loads(a.out.read_text()) if a.out.is_file() else {}
        data[a.label] = {"times_s": rows, "load_avg_1min": round(load, 2), "cpus": os.cpu_count()}
        a.out.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
