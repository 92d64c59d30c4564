"""Depth against width at the same MACs, in accuracy (issue 22): trained, cut, fine-tuned, several seeds.

    OMP_NUM_THREADS=1 python benchmarks/depth_accuracy.py --seeds 0 1 2       # the run in docs/structured.md
    python benchmarks/depth_accuracy.py --report                              # the table from the JSON files
    python benchmarks/depth_accuracy.py --epochs 1 --finetune 1 --seeds 0 --results runs/da_check   # quick check

Per seed, a base model (torchvision/resnet18 by default; vgg is not residual) is trained from scratch on UC Merced
with ``prunekit train``'s job and recipe defaults (checkpoint under ``runs/depth_accuracy/``, reused on rerun). For
each MACs target two arms are cut from it:

- ``depth``: the fewest whole identity-residual blocks that remove at least the target (the ``depth`` allocator,
  ``--allocation depth``; blocks ordered by ``--depth-criterion``);
- ``width``: channels, uniform l2 criterion, the ``reduce`` allocator searched to remove the MACs the depth arm
  removed (not the nominal target: blocks overshoot it).

Both are fine-tuned ``--finetune`` epochs with the recipe ``prunekit prune`` fine-tunes with (the training recipe's
``recovery``: no warm-up, a fifth of the peak lr). Test accuracy is recorded right after the cut and after
fine-tuning. One JSON per cell (model, size, epochs, arm, target, seed in its name) under
``results/depth_accuracy/``, written atomically; a rerun skips finished cells. ``--report`` writes
``docs/structured/depth_accuracy.md``: mean and sd over seeds, and the paired depth - width difference with its t.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prunekit.allocate import AllocationRequest, allocate  # noqa: E402
from prunekit.apply.oneshot import prune_structured  # noqa: E402
from prunekit.config import TrainOptions  # noqa: E402
from prunekit.data import calibration_batches, data_section  # noqa: E402
from prunekit.device import pick_device, seed_everything  # noqa: E402
from prunekit.jobs.common import data_for_checkpoint, write_json  # noqa: E402
from prunekit.jobs.train import train_job  # noqa: E402
from prunekit.measure import count_macs, count_params  # noqa: E402
from prunekit.storage import checkpoint as ckpt  # noqa: E402
from prunekit.train import TrainConfig, evaluate, fit  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ucmerced"
RESULTS = ROOT / "results" / "depth_accuracy"
RUNS = ROOT / "runs" / "depth_accuracy"
DOC = ROOT / "docs" / "structured" / "depth_accuracy.md"
ARMS = ("depth", "width")


def base_name(a: argparse.Namespace, seed: int) -> str:
    return f"{a.model.replace('/', '_')}-{Path(a.data).name}-{a.image_size}px-e{a.epochs}-s{seed}"


def cell_key(a: argparse.Namespace, arm: str, target: Optional[float], seed: int) -> str:
    cut = "none" if target is None else f"macs{target:g}"
    ft = "" if target is None else f"-ft{a.finetune}"
    return f"{a.model.replace('/', '_')}-{Path(a.data).name}-{a.image_size}px-e{a.epochs}{ft}-{arm}-{cut}-s{seed}"


def train_options(a: argparse.Namespace, seed: int) -> TrainOptions:
    return TrainOptions(model=a.model, data=a.data, image_size=a.image_size, epochs=a.epochs, seed=seed,
                        batch_size=a.batch_size, device=a.device, progress=False, out=a.runs / base_name(a, seed))


def base_model(a: argparse.Namespace, seed: int) -> Tuple[nn.Module, Any, Dict[str, Any]]:
    """The seed's trained base (trained here once, then loaded), its data split, and its own cell."""
    opts = train_options(a, seed)
    path = opts.out / "model.safetensors"
    if not path.is_file():
        print(f"training {base_name(a, seed)}", flush=True)
        train_job(opts)  # resumes an interrupted training run found in opts.out
    metrics = json.loads((opts.out / "metrics.json").read_text())
    row_path = a.results / f"{cell_key(a, 'unpruned', None, seed)}.json"
    if not row_path.is_file():
        write_json(row_path, {"key": row_path.stem, "model": a.model, "arm": "unpruned", "target": None,
                              "seed": seed, "epochs": a.epochs, "test_accuracy": metrics["test"]["accuracy"],
                              "wall_s": metrics["train_seconds"], "threads": torch.get_num_threads(),
                              "device": pick_device(a.device).type, "checkpoint": str(path)})
    loaded = ckpt.load_checkpoint(path, pick_device(a.device))
    ds = data_for_checkpoint(opts, loaded, path)
    return loaded.model, ds, json.loads(row_path.read_text())


def cut(arm: str, model: nn.Module, ds, target: float, a: argparse.Namespace) -> Tuple[nn.Module, Dict[str, Any]]:
    """The depth arm at ``target``, or the width arm at the MACs the depth arm removes (searched again here: the
    depth search is deterministic and takes seconds)."""
    device = next(model.parameters()).device
    example = ds.images[:2].float().to(device)
    shared = {"data": calibration_batches(ds, 4, device=device)}
    depth = allocate("depth", AllocationRequest(model, example, reduce={"macs": target}, plan_kwargs=shared,
                                                options={"depth_criterion": a.depth_criterion}))
    alloc = depth
    if arm == "width":
        alloc = allocate("reduce", AllocationRequest(model, example, criterion="l2", plan_kwargs=shared,
                                                     reduce={"macs": depth.record["reduce_achieved"]}))
    pruned, plan = prune_structured(copy.deepcopy(model), example, criterion="l2", **{**shared, **alloc.plan_kwargs})
    return pruned, {"blocks_removed": list(plan.blocks), "ratio": alloc.plan_kwargs.get("ratio"),
                    "depth_macs_cut": round(depth.record["reduce_achieved"], 4),
                    "reduce_achieved": round(alloc.record["reduce_achieved"], 4)}


def run_cell(arm: str, target: float, seed: int, a: argparse.Namespace, base: nn.Module, ds,
             base_row: Dict[str, Any]) -> Dict[str, Any]:
    path = a.results / f"{cell_key(a, arm, target, seed)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    print(f"running {path.stem}", flush=True)
    t0 = time.perf_counter()
    seed_everything(seed)
    pruned, done = cut(arm, base, ds, target, a)
    shape = tuple(ds.images.shape[1:])
    cut_acc = evaluate(pruned, ds, "test")["accuracy"]
    recipe = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, seed=seed).recovery(a.finetune)
    res = fit(pruned, ds, recipe, device=next(pruned.parameters()).device, out_dir=a.runs / path.stem,
              progress=False, description={"data": data_section(ds)})
    macs0, macs = count_macs(base, shape)[0], count_macs(res.model, shape)[0]
    params0, params = count_params(base), count_params(res.model)
    row = {"key": path.stem, "model": a.model, "arm": arm, "target": target, "seed": seed, "epochs": a.epochs,
           "finetune_epochs": a.finetune, "depth_criterion": a.depth_criterion, **done,
           "base_accuracy": base_row["test_accuracy"], "cut_accuracy": cut_acc,
           "test_accuracy": evaluate(res.model, ds, "test")["accuracy"],
           "macs": macs, "params": params, "macs_base": macs0, "params_base": params0,
           "macs_reduction": round(1 - macs / macs0, 4), "params_reduction": round(1 - params / params0, 4),
           "wall_s": round(time.perf_counter() - t0, 1),  # of this process: a resumed cell counts its last part
           "threads": torch.get_num_threads(), "device": pick_device(a.device).type}
    write_json(path, row)
    return row


def _mean_sd(values: List[float]) -> str:
    sd = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.2f}{sd}"


def report(rows: List[Dict[str, Any]]) -> str:
    """Mean ± sd (over seeds, in %) per arm and target, then the paired depth - width difference per target."""
    base = sorted((r for r in rows if r["arm"] == "unpruned"), key=lambda r: r["seed"])
    lines = ["| target | arm | seeds | MACs -% | Mparams | blocks removed | acc. after cut % | acc. after "
             "fine-tuning % | wall s per cell |", "|---|---|---|---|---|---|---|---|---|"]
    if base:
        lines.append(f"| - | unpruned | {len(base)} | 0 | {rows_params(rows) or '-'} | - | - | "
                     f"{_mean_sd([100 * r['test_accuracy'] for r in base])} | {_walls(base)} |")
    diffs = []
    for target in sorted({r["target"] for r in rows if r["target"] is not None}):
        cells = {arm: {r["seed"]: r for r in rows if r["arm"] == arm and r["target"] == target} for arm in ARMS}
        for arm in ARMS:
            rs = list(cells[arm].values())
            if not rs:
                continue
            blocks = sorted({len(r["blocks_removed"]) for r in rs})
            lines.append(f"| macs={target:g} | {arm} | {len(rs)} | "
                         f"{100 * statistics.mean(r['macs_reduction'] for r in rs):.1f} | "
                         f"{statistics.mean(r['params'] for r in rs) / 1e6:.2f} | {'/'.join(map(str, blocks))} | "
                         f"{_mean_sd([100 * r['cut_accuracy'] for r in rs])} | "
                         f"{_mean_sd([100 * r['test_accuracy'] for r in rs])} | {_walls(rs)} |")
        seeds = sorted(set(cells["depth"]) & set(cells["width"]))
        if seeds:
            diffs.append((target, seeds, [100 * (cells["depth"][s][k] - cells["width"][s][k]) for s in seeds
                                          for k in ("cut_accuracy", "test_accuracy")]))
    lines += ["", "| target | paired seeds | depth - width after cut (points) | depth - width after fine-tuning "
              "(points) | t (after fine-tuning) |", "|---|---|---|---|---|"]
    for target, seeds, d in diffs:
        cut_d, ft_d = d[0::2], d[1::2]
        lines.append(f"| macs={target:g} | {' '.join(map(str, seeds))} | {_mean_sd(cut_d)} | {_mean_sd(ft_d)} | "
                     f"{paired_t(ft_d)} |")
    return "\n".join(lines)


def _walls(rows: List[Dict[str, Any]]) -> str:
    """Wall seconds of each cell, and where they ran (e.g. ``cpu x1`` = CPU, 1 intra-op thread)."""
    where = sorted({f"{r['device']} x{r['threads']}" for r in rows})
    walls = " / ".join(str(round(r["wall_s"])) for r in sorted(rows, key=lambda r: r["seed"]))
    return f"{walls} ({', '.join(where)})"


def rows_params(rows: List[Dict[str, Any]]) -> str:
    params = {r["params_base"] for r in rows if "params_base" in r}
    return f"{params.pop() / 1e6:.2f}" if len(params) == 1 else ""


def paired_t(d: List[float]) -> str:
    """Paired t statistic mean / (sd / sqrt(n)) of the per-seed differences ('-' below two seeds)."""
    if len(d) < 2 or statistics.stdev(d) == 0:
        return "-"
    return f"{statistics.mean(d) / (statistics.stdev(d) / math.sqrt(len(d))):.2f}"


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DATA), help="UC Merced-style class folders")
    p.add_argument("--model", default="torchvision/resnet18", help="a residual model (depth needs identity blocks)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=30, help="training epochs of the base model")
    p.add_argument("--finetune", type=int, default=10, help="fine-tuning epochs of both arms")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--targets", nargs="+", type=float, default=[0.25, 0.5], help="MACs fractions to remove")
    p.add_argument("--depth-criterion", default="magnitude", help="which blocks go first (prunekit's default)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda; cells record it")
    p.add_argument("--results", type=Path, default=RESULTS, help="one JSON per cell here")
    p.add_argument("--runs", type=Path, default=RUNS, help="base checkpoints and fine-tuning runs (not kept in git)")
    p.add_argument("--report", action="store_true", help="write the table from the JSON files, run nothing")
    a = p.parse_args(argv)
    if not a.report:
        if not Path(a.data).is_dir():
            print(f"depth_accuracy: no dataset at {a.data}; give --data DIR (UC Merced class folders). Skipped.")
            return
        for seed in a.seeds:  # seed by seed, so a cut-short run has whole seeds
            base, ds, base_row = base_model(a, seed)
            for target in a.targets:
                for arm in ARMS:
                    run_cell(arm, target, seed, a, base, ds, base_row)
    rows = [json.loads(f.read_text()) for f in sorted(a.results.glob("*.json"))]
    rows = [r for r in rows if (r["model"], r["epochs"], r.get("finetune_epochs", a.finetune)) ==
            (a.model, a.epochs, a.finetune)]
    text = (f"# Depth against width at the same MACs, after fine-tuning\n\n{a.model} trained {a.epochs} epochs "
            f"from scratch on {Path(a.data).name} at {a.image_size} px (`prunekit train` recipe) per seed; depth = the "
            f"fewest whole blocks ({a.depth_criterion} order) reaching the target, width = uniform l2 channels at the "
            f"MACs depth removed; both fine-tuned {a.finetune} epochs (`prunekit prune`'s recovery recipe). Accuracy: "
            f"test split, mean ± sd over seeds; t: paired over seeds. Wall s: per seed (unpruned row: training). "
            f"Cells: `{os.path.relpath(a.results, ROOT)}` (`python benchmarks/depth_accuracy.py --report` rebuilds "
            f"this file).\n\n{report(rows)}\n")
    if a.results.resolve() == RESULTS:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
