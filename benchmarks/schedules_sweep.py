"""Which pruning schedule gives the best accuracy for a given sparsity, with the same training budget for all.

    .venv/bin/python benchmarks/schedules_sweep.py                                  # embedded data, full grid
    .venv/bin/python benchmarks/schedules_sweep.py --data ../shared/data/ucmerced --seeds 0 1 2
    .venv/bin/python benchmarks/schedules_sweep.py --model vgg_tiny --epochs 4 --seeds 0 --sparsities 0.9 \\
        --schedules oneshot gradual --structured-schedules                          # quick check

Every cell (model, data, epochs, method, target, schedule, seed) trains from scratch for the same ``--epochs``;
each schedule prunes inside that budget (one-shot: train half, prune, fine-tune half; iterative: rounds over the
middle half; gradual, DNS: from 1/8 to 3/4 of the run; RigL: sparse from the start; soft: every epoch, removal at
the end). A cell writes one JSON file ``results/schedules/cpu/<key>.json`` named by its settings; a rerun skips
finished cells, and an interrupted cell resumes from its last epoch (``runs/schedules_sweep/<key>``). The
markdown table and plots are rebuilt from all JSON files found: ``docs/schedules/schedules_sweep.md`` and
``docs/schedules/schedules_sweep_{unstructured,structured}.png``. Choices are made on the validation split; the table
reports the test split.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from prunekit.data import load_dataset  # noqa: E402
from prunekit.measure.counts import count_macs, count_params  # noqa: E402
from prunekit.models import create_model  # noqa: E402
from prunekit.report import plot_tradeoff  # noqa: E402
from prunekit.files import atomic_path  # noqa: E402
from prunekit.schedules import build_schedule  # noqa: E402
from prunekit.sparse import masked_sparsity  # noqa: E402
from prunekit.train import TrainConfig, evaluate, fit  # noqa: E402

UNSTRUCTURED = ("oneshot", "iterative", "gradual", "dns", "rigl")
STRUCTURED = ("oneshot", "iterative", "soft")


def window(schedule: str, epochs: int) -> Dict[str, Any]:
    """Where each schedule prunes inside the shared budget of ``epochs`` (see the module docstring)."""
    half, quarter, eighth, three_q = epochs // 2, epochs // 4, epochs // 8, (3 * epochs) // 4
    return {"none": {}, "oneshot": {"start_epoch": half},
            "iterative": {"start_epoch": quarter, "end_epoch": three_q, "every": max(1, (three_q - quarter) // 4)},
            "gradual": {"start_epoch": eighth, "end_epoch": three_q}, "dns": {"start_epoch": eighth,
                                                                            "end_epoch": three_q},
            "rigl": {"start_epoch": 0, "end_epoch": three_q}, "soft": {"start_epoch": 0, "every": 1}}[schedule]


def cell_key(s: Dict[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(s, sort_keys=True).encode()).hexdigest()[:8]
    target = s["target"] if s["method"] == "unstructured" else s["target"].replace("=", "")
    return (f"{s['model'].replace('/', '_')}-{s['data']}-{s['image_size']}px-e{s['epochs']}-{s['method']}-"
            f"{s['schedule']}-{target}-s{s['seed']}-{digest}")


def run_cell(s: Dict[str, Any], ds: Any, runs: Path, device: str = "cpu") -> Dict[str, Any]:
    """Train one cell (resuming its run folder if a previous attempt was interrupted) and measure it."""
    cfg = TrainConfig(epochs=s["epochs"], batch_size=s["batch_size"], lr=s["lr"], seed=s["seed"])
    torch.manual_seed(s["seed"])
    model = create_model(s["model"], num_classes=ds.num_classes)
    shape = (3, s["image_size"], s["image_size"])
    params0, macs0 = count_params(model), count_macs(model, shape)[0]
    callbacks, schedule = [], None
    if s["schedule"] != "none":
        opts: Dict[str, Any] = dict(window(s["schedule"], s["epochs"]), seed=s["seed"])
        if s["method"] == "structured":
            opts.update(reduce=s["target"], criterion=s["criterion"], input_size=s["image_size"])
            schedule = build_schedule(s["schedule"], method="structured", **opts)
        else:
            schedule = build_schedule(s["schedule"], method="unstructured", target=float(s["target"]),
                                      criterion=s["criterion"], **opts)
        callbacks.append(schedule)
    t0 = time.perf_counter()
    res = fit(model, ds, cfg, device=device, callbacks=callbacks, out_dir=runs, progress=False)
    seconds = time.perf_counter() - t0
    model = res.model.eval()
    test = evaluate(model, ds, "test")
    model = model.cpu()
    out = {"settings": s, "test_acc": test["accuracy"], "val_acc": res.history[-1].get("val_acc"),
           "best_val": res.best_val, "train_seconds": round(seconds, 1), "params_dense": params0,
           "macs_dense": macs0, "params": count_params(model), "macs": count_macs(model, shape)[0],
           "history": res.history, "resumed_from": res.resumed_from,
           "device": torch.device(device).type}
    if schedule is not None:
        out["schedule"] = repr(schedule)
        out["schedule_history"] = schedule.history[-200:]
        if getattr(schedule, "masks", None) is not None:
            out["sparsity"] = masked_sparsity(model, schedule.masks).overall
        if getattr(schedule, "resolved", None):
            out["resolved"] = schedule.resolved
    return out


def summarize(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Mean and spread (sample std) over seeds, one row per (method, target, schedule, setup)."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in results:
        s = r["settings"]
        key = (s["model"], s["data"], s["image_size"], s["epochs"], s["method"], s["target"], s["schedule"],
               s.get("criterion", "-"), r.get("device", "cpu"))
        groups.setdefault(key, []).append(r)
    rows = []
    for key, rs in sorted(groups.items(), key=lambda kv: (kv[0][:5], str(kv[0][5]), kv[0][6])):
        accs = [r["test_acc"] for r in rs]
        rows.append({"model": key[0], "data": key[1], "image_size": key[2], "epochs": key[3], "method": key[4],
                     "target": key[5], "schedule": key[6], "criterion": key[7], "device": key[8], "seeds": len(rs),
                     "acc": statistics.fmean(accs),
                     "spread": statistics.stdev(accs) if len(accs) > 1 else None,
                     "sparsity": statistics.fmean(r.get("sparsity", 0.0) for r in rs),
                     "macs_x": statistics.fmean(r["macs_dense"] / max(1, r["macs"]) for r in rs),
                     "params_x": statistics.fmean(r["params_dense"] / max(1, r["params"]) for r in rs),
                     "seconds": statistics.fmean(r["train_seconds"] for r in rs)})
    return rows


def write_report(rows: List[Dict[str, Any]], docs: Path, setup: Optional[Dict[str, Any]] = None,
                 name: str = "schedules_sweep") -> None:
    """The table of every row found; the plots of the rows of ``setup`` (model, data, image size, epochs and the
    unstructured criterion of this run) only, so one figure compares schedules under one protocol."""
    lines = ["# Schedules sweep (generated by benchmarks/schedules_sweep.py)", "",
             f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}. Accuracy on the test "
             "split, mean ± sample std over seeds; every schedule gets the same epochs. Sparsity is measured on the "
             "final weights (zeros / targeted weights); MACs and params reductions are dense / pruned.", "",
             "| model | data | px | epochs | method | target | schedule | criterion | device | seeds | test acc "
             "| sparsity | MACs x | params x | train s |", "|---" * 15 + "|"]
    for r in rows:
        acc = f"{r['acc']:.3f}" + (f" ± {r['spread']:.3f}" if r["spread"] is not None else "")
        lines.append(f"| {r['model']} | {r['data']} | {r['image_size']} | {r['epochs']} | {r['method']} | "
                     f"{r['target']} | {r['schedule']} | {r['criterion']} | {r['device']} | {r['seeds']} | {acc} | "
                     f"{r['sparsity']:.1%} | "
                     f"{r['macs_x']:.2f} | {r['params_x']:.2f} | {r['seconds']:.0f} |")
    docs.mkdir(parents=True, exist_ok=True)
    with atomic_path(docs / f"{name}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    if setup:
        keys = ("model", "data", "image_size", "epochs")
        rows = [r for r in rows if all(r[k] == setup[k] for k in keys)
                and (r["method"] != "unstructured" or r["criterion"] == setup["unstructured_criterion"])]
    for method, xname in (("unstructured", "sparsity (%)"), ("structured", "MACs reduction (x)")):
        series: Dict[str, list] = {}
        for r in rows:
            if r["method"] != method or r["schedule"] == "none":
                continue
            x = 100 * r["sparsity"] if method == "unstructured" else r["macs_x"]
            label = f"{r['schedule']} ({r['criterion']})" if setup else \
                f"{r['schedule']} {r['criterion']} ({r['model']}, {r['data']})"
            series.setdefault(label, []).append((x, r["acc"], r["spread"]))
        dense = [r for r in rows if r["schedule"] == "none"]
        if series and dense:
            r = dense[0]
            series["dense"] = [(0.0 if method == "unstructured" else 1.0, r["acc"], r["spread"])]
        if series:
            plot_tradeoff(series, docs / f"{name}_{method}.png", xlabel=xname, ylabel="test accuracy")


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="class-per-folder dataset (default: the embedded UC Merced subset)")
    ap.add_argument("--model", default="vgg_small")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=30, help="training budget of every cell")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sparsities", type=float, nargs="*", default=[0.9, 0.95, 0.98])
    ap.add_argument("--schedules", nargs="*", default=list(UNSTRUCTURED), choices=UNSTRUCTURED)
    ap.add_argument("--reductions", nargs="*", default=["macs=2x", "macs=3x"],
                    help="structured targets (prunekit.allocate.reduce syntax)")
    ap.add_argument("--structured-schedules", nargs="*", default=list(STRUCTURED), choices=STRUCTURED)
    ap.add_argument("--criterion", default="l2", help="structured criterion")
    ap.add_argument("--unstructured-criterion", default="lamp", choices=["l1", "lamp", "erk"],
                    help="how unstructured schedules share the global budget between layers: plain global magnitude "
                         "(l1), LAMP scores or ERK ratios. Default lamp: global magnitude near initialization "
                         "empties whole layers (the widest layer has the smallest init weights)")
    ap.add_argument("--no-dense", action="store_true", help="skip the unpruned baseline cells")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", help="where cells train (cpu, cuda); results record it")
    ap.add_argument("--name", default="schedules_sweep", help="<docs>/<name>.md and <docs>/<name>_*.png")
    ap.add_argument("--results", type=Path, default=REPO / "results" / "schedules" / "cpu")
    ap.add_argument("--docs", type=Path, default=REPO / "docs" / "schedules")
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "schedules_sweep")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data_tag = Path(args.data).name if args.data else "embedded"
    ds = load_dataset(args.data, image_size=args.image_size, seed=0, test_frac=0.2, val_frac=0.1)
    base = {"model": args.model, "data": data_tag, "image_size": args.image_size, "epochs": args.epochs,
            "batch_size": args.batch_size, "lr": args.lr}
    cells = []
    for seed in args.seeds:
        if not args.no_dense:
            cells.append({**base, "method": "dense", "target": "0", "schedule": "none", "criterion": "-",
                          "seed": seed})
        cells += [{**base, "method": "unstructured", "target": str(t), "schedule": sch,
                   "criterion": args.unstructured_criterion,
                   "seed": seed} for t in args.sparsities for sch in args.schedules]
        cells += [{**base, "method": "structured", "target": red, "schedule": sch, "criterion": args.criterion,
                   "seed": seed} for red in args.reductions for sch in args.structured_schedules]
    args.results.mkdir(parents=True, exist_ok=True)
    print(f"{len(cells)} cells; results in {args.results}")
    for i, s in enumerate(cells, 1):
        key = cell_key(s)
        path = args.results / f"{key}.json"
        if path.is_file():
            print(f"[{i}/{len(cells)}] {key}: done before, skipped")
            continue
        result = run_cell(s, ds, args.runs / key, args.device)
        result["key"] = key
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(result, indent=1))
        shutil.rmtree(args.runs / key, ignore_errors=True)
        print(f"[{i}/{len(cells)}] {key}: test acc {result['test_acc']:.3f}, "
              f"{result['train_seconds']:.0f} s")
    results = [json.loads(p.read_text()) for p in sorted(args.results.glob("*.json"))]
    rows = summarize(results)
    write_report(rows, args.docs, {"model": args.model, "data": data_tag, "image_size": args.image_size,
                                   "epochs": args.epochs, "unstructured_criterion": args.unstructured_criterion},
                 args.name)
    for r in rows:
        spread = f" ± {r['spread']:.3f}" if r["spread"] is not None else ""
        print(f"{r['method']:>12} {r['target']:>8} {r['schedule']:>9}  acc {r['acc']:.3f}{spread}  "
              f"sparsity {r['sparsity']:.1%}  MACs x{r['macs_x']:.2f}  ({r['seeds']} seeds)")


if __name__ == "__main__":
    main()
