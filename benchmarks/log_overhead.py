"""What the per-epoch records cost a training run: time per epoch added by fit's logging, on the demo's model.

    .venv/bin/python benchmarks/log_overhead.py            # vgg_small, 21 classes (the demo), CPU, 1 thread

Per epoch fit now counts the model's parameters and zero weights (``model_width``), hands the row to the job's
loggers (``history.csv`` rewritten atomically, TensorBoard scalars flushed, the in-memory curves) and prints one
line. Opening the run log with TensorBoard imports ``torch.utils.tensorboard`` once per job. Prints a table and
writes ``results/logs/overhead.json``; the median of ``--repeats`` timings of ``--epochs`` rows each.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from prunekit.models import create_model  # noqa: E402
from prunekit.report.tables import markdown_table  # noqa: E402
from prunekit.train.logs import run_log  # noqa: E402
from prunekit.train.metrics import model_width  # noqa: E402
from prunekit.train.progress import epoch_line  # noqa: E402


def _per_call_ms(fn, calls: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(calls):
            fn(i)
        times.append((time.perf_counter() - t) / calls)
    return round(1e3 * statistics.median(times), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vgg_small")
    ap.add_argument("--classes", type=int, default=21)
    ap.add_argument("--epochs", type=int, default=20, help="rows logged per timing")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "logs" / "overhead.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = create_model(args.model, args.classes)
    width = model_width(model)
    row = {"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5, "lr": 0.01, **width,
           "seconds": 1.0}
    folder = Path(tempfile.mkdtemp(prefix="log_overhead-"))
    try:
        t = time.perf_counter()
        log = run_log(folder, tensorboard=True)
        open_s = round(time.perf_counter() - t, 3)
        results = {
            "model_width_ms": _per_call_ms(lambda i: model_width(model), args.epochs, args.repeats),
            "log_epoch_ms": _per_call_ms(lambda i: log.log_epoch("train", {**row, "epoch": i + 1}), args.epochs,
                                         args.repeats),
            "epoch_line_ms": _per_call_ms(lambda i: epoch_line("train", args.epochs, row), args.epochs, args.repeats),
        }
        log.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    per_epoch = round(sum(results.values()), 3)
    record = {"model": args.model, "params": width["params"], "threads": 1, "machine": platform.machine(),
              "python": platform.python_version(), "torch": torch.__version__,
              "cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 1),
              "open_run_log_with_tensorboard_s": open_s, **results, "per_epoch_ms": per_epoch,
              "command": "python benchmarks/log_overhead.py " + " ".join(sys.argv[1:])}
    rows = [{"what": k, "cost": v} for k, v in record.items() if k.endswith(("_ms", "_s"))]
    print(markdown_table(rows, ["what", "cost"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
