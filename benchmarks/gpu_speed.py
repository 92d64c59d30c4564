"""Faster on the GPU it deploys to? Dense vs prunekit (GPU-aware) vs Torch-Pruning at equal MACs (issue 32).

Per model (torchvision, random init, 224 px) and MACs target (2x, 3x fewer), three arms:

- ``dense``: the model as built;
- ``prunekit``: widths rounded to the multiple measured on this GPU at bf16 (``round_to="auto-cuda-bf16"``), per-group
  ratios from each group's latency saving timed on this GPU at bf16, batch ``--alloc-batch`` (``--allocation
  latency --latency-runtime cuda --latency-dtype bf16``), checked against the uniform cut of the same MACs and the
  faster kept; L2 criterion;
- ``tp``: Torch-Pruning's ``MagnitudePruner`` (L2, classifier kept) with its ``round_to`` set to the same multiple,
  the uniform ratio searched until its MACs match the prunekit model's within 1%.

Each arm is timed with CUDA events (``prunekit.measure.latency_cuda``: cuDNN autotuning on, warm-up until the median
of successive windows moves < 2%, median of 30 runs, the three arms round-robin) in four settings: fp32 and bf16
autocast at batch 128 (channels-last), and fp32 at batch 1 eager and as a CUDA graph (``prunekit.deploy``
``cuda_graph``). Targets, checked and printed under the table: the prunekit model never slower than dense in any
cell; geo-mean (latency gain / MACs gain) >= 0.6 at bf16 batch 128 and >= 0.4 at batch 1 with a CUDA graph; prunekit
ahead of Torch-Pruning by >= 0.1 in that geo-mean at bf16 batch 128.

One JSON per (model, target) under ``--out`` (default results/gpu_speed/); a rerun skips finished cells, so a run
cut short by ``--budget-s`` resumes where it stopped. ``--dry-run`` lists the cells; ``--device cpu --quick`` runs
one tiny cell on the CPU (64 px, batch 4, wall clock, no CUDA graph, multiple 8) to check the script itself.

    python benchmarks/gpu_speed.py                                   # on a GPU: all 16 cells, about 8 minutes
    python benchmarks/gpu_speed.py --device cpu --models resnet18 --quick --out runs/gpu_speed_cpu
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prunekit.allocate.latency import cuda_latency, latency_allocation  # noqa: E402
from prunekit.allocate.round_to import resolve_round_to  # noqa: E402
from prunekit.apply.oneshot import prune_structured  # noqa: E402
from prunekit.deploy import prepare  # noqa: E402
from prunekit.files import atomic_path  # noqa: E402
from prunekit.measure import count_macs, count_params  # noqa: E402
from prunekit.measure.latency_cuda import CudaSettings, measure_cuda_latency_together, wall_timer  # noqa: E402
from structured_speed import build, classifier  # noqa: E402

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "densenet121", "vgg16_bn",
          "regnet_y_400mf"]
TARGETS = (2.0, 3.0)  # MACs reduction factors
ARMS = ("dense", "prunekit", "tp")
# setting -> (batch, dtype, deploy form); batch 128 is --batch, batch 1 stays 1
SETTINGS = {"fp32_b128": (128, "fp32", "eager"), "bf16_b128": (128, "bf16", "eager"),
            "fp32_b1": (1, "fp32", "eager"), "fp32_b1_graph": (1, "fp32", "cuda_graph")}
GOALS = {"bf16_b128": 0.6, "fp32_b1_graph": 0.4}  # geo-mean latency gain / MACs gain
AHEAD = 0.1  # prunekit over Torch-Pruning at bf16 batch 128, in that ratio


def cell_name(model: str, target: float) -> str:
    return f"{model}-macs{target:g}x"


def tp_pruned(model: nn.Module, x: torch.Tensor, ratio: float, round_to: Optional[int]) -> nn.Module:
    """Torch-Pruning's magnitude pruner (L2, classifier kept) at one uniform ratio, on a copy."""
    import torch_pruning as tp

    twin = copy.deepcopy(model)
    tp.pruner.MagnitudePruner(twin, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
                              ignored_layers=[classifier(twin)], round_to=round_to).step()
    return twin


def tp_matched(model: nn.Module, x: torch.Tensor, macs_goal: int, round_to: Optional[int], shape: tuple,
               steps: int = 7) -> tuple:
    """Torch-Pruning's ratio whose MACs land within 1% of ``macs_goal`` (or the nearest of ``steps`` tries): a first
    guess as if MACs fell with the square of the kept width, then secant steps on log MACs kept inside the bracket
    found so far (bisection where a step would leave it). (model, ratio, macs)."""
    dense = count_macs(model, shape)[0]
    tried: List[tuple] = []
    lo, hi = 0.0, 0.95  # ratios known to leave too many / too few MACs
    ratio = 1 - math.sqrt(macs_goal / dense)
    for _ in range(steps):
        ratio = min(max(ratio, 0.01), 0.95)
        twin = tp_pruned(model, x, ratio, round_to)
        macs = count_macs(twin, shape)[0]
        tried.append((ratio, macs, twin))
        if abs(macs / macs_goal - 1) <= 0.01:
            break
        lo, hi = (max(lo, ratio), hi) if macs > macs_goal else (lo, min(hi, ratio))
        if len(tried) == 1:
            guess = 1 - (1 - ratio) * math.sqrt(macs_goal / macs)
        else:
            (r0, m0, _), (r1, m1, _) = tried[-2], tried[-1]
            slope = (math.log(m1) - math.log(m0)) / (r1 - r0) if r1 != r0 and m1 != m0 else 0.0
            guess = r1 + (math.log(macs_goal) - math.log(m1)) / slope if slope < 0 else -1.0
        ratio = guess if lo < guess < hi else (lo + hi) / 2
    ratio, macs, twin = min(tried, key=lambda t: abs(t[1] / macs_goal - 1))
    return twin, ratio, macs


def prunekit_gpu_aware(model: nn.Module, x1: torch.Tensor, target: float, multiple: Optional[int],
                       alloc_timer: Callable[[nn.Module], float], label: str, cache: Optional[str],
                       tol: float) -> tuple:
    """The latency allocation timed by ``alloc_timer`` with widths on ``multiple``; (pruned model, record)."""
    alloc = latency_allocation(model, x1, {"macs": 1 - 1 / target}, latency_fn=alloc_timer, round_to=multiple,
                               runtime=label, cache=cache, tol=tol)
    pruned, _ = prune_structured(copy.deepcopy(model), x1, criterion="l2", round_to=multiple, **alloc.plan_kwargs())
    return pruned, {"chosen": alloc.chosen, "cached": alloc.cached, "achieved": round(alloc.achieved, 4),
                    "blend": alloc.blend, "candidates_ms": alloc.pruned_ms}


def time_arms(models: Dict[str, nn.Module], shape: tuple, batch: int, dtype: str, form: str, device: torch.device,
              args: argparse.Namespace) -> Dict[str, float]:
    """Median ms of each arm at one setting, timed round-robin; a CUDA graph form is captured per arm first."""
    settings = CudaSettings(dtype, channels_last=form == "eager", repeats=args.repeats, max_windows=args.max_windows)
    if form != "eager":
        example = torch.randn(batch, *shape, device=device)
        models = {k: prepare(copy.deepcopy(m).to(device), form, example, autocast=dtype) for k, m in models.items()}
    timed = measure_cuda_latency_together(list(models.values()), shape, (batch,), settings, device)
    return {k: round(t[0][batch], 4) for k, t in zip(models, timed)}


def run_cell(name: str, target: float, args: argparse.Namespace, device: torch.device,
             multiple: Optional[int]) -> Dict[str, Any]:
    shape = (3, args.image_size, args.image_size)
    x1 = torch.randn(1, *shape)
    dense = build(name)
    row: Dict[str, Any] = {"model": name, "target_macs_factor": target, "round_to": multiple, "device": str(device),
                           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                           "torch": torch.__version__, "image_size": args.image_size, "batch": args.batch,
                           "fp32_conv_tf32": torch.backends.cudnn.allow_tf32}  # torch's default: fp32 convs in TF32
    t0 = time.perf_counter()
    alloc_x = torch.randn(args.alloc_batch, *shape)
    quick = CudaSettings("bf16", window=5, max_windows=min(6, args.max_windows), repeats=args.alloc_repeats)
    on_gpu = device.type == "cuda"  # else the same code times on the CPU's wall clock (checking this script)
    timer = cuda_latency((alloc_x,), quick, timer=None if on_gpu else wall_timer)
    label = f"{'' if on_gpu else 'cpu-'}{quick.label()}-b{args.alloc_batch}"  # the cache key's runtime
    ours, row["prunekit_allocation"] = prunekit_gpu_aware(dense, x1, target, multiple, timer, label, args.cache,
                                                          args.tol)
    row["prunekit_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"  {name} {target:g}x: prunekit allocated in {row['prunekit_seconds']} s", flush=True)
    macs = {"dense": count_macs(dense, shape)[0], "prunekit": count_macs(ours, shape)[0]}
    models = {"dense": dense, "prunekit": ours}
    try:
        t0 = time.perf_counter()
        models["tp"], row["tp_ratio"], macs["tp"] = tp_matched(dense, x1, macs["prunekit"], multiple, shape)
        row["tp_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"  {name} {target:g}x: Torch-Pruning matched in {row['tp_seconds']} s (ratio {row['tp_ratio']:.3f})",
              flush=True)
    except ImportError:
        row["tp_skipped"] = "torch_pruning is not installed (benchmarks/gpu_check.sh says how to bring it)"
    row["macs"] = macs
    if "tp" in macs:  # the nearest Torch-Pruning gets at its round_to; efficiencies below are per MAC, so still fair
        row["tp_macs_vs_prunekit"] = round(macs["tp"] / macs["prunekit"] - 1, 4)
    row["params"] = {k: count_params(m) for k, m in models.items()}
    row["ms"] = {}
    for setting, (batch, dtype, form) in SETTINGS.items():
        batch = args.batch if batch == 128 else batch
        if form == "cuda_graph" and device.type != "cuda":
            row["ms"][setting] = None  # a CUDA graph needs a GPU
            continue
        row["ms"][setting] = time_arms(models, shape, batch, dtype, form, device, args)
    return row


def efficiency(row: Dict[str, Any], setting: str, arm: str) -> Optional[float]:
    """Latency gain / MACs gain of ``arm`` over dense at ``setting`` (1.0: time fell as much as MACs)."""
    ms = row["ms"].get(setting)
    if not ms or arm not in ms:
        return None
    return (ms["dense"] / ms[arm]) / (row["macs"]["dense"] / row["macs"][arm])


def geo(values: List[float]) -> Optional[float]:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def table(rows: List[Dict[str, Any]]) -> str:
    """Markdown table: per cell and setting, the arms' ms and efficiency; then the targets, checked."""
    head = "| model | MACs | round_to | " + " | ".join(f"{s}: dense / prunekit / tp ms (eff pk / tp)" for s in SETTINGS)
    lines = [head + " |", "|" + "---|" * (3 + len(SETTINGS))]
    for r in rows:
        cells = []
        for s in SETTINGS:
            ms = r["ms"].get(s)
            if not ms:
                cells.append("-")
                continue
            eff = [efficiency(r, s, a) for a in ("prunekit", "tp")]
            cells.append(" / ".join(f"{ms[a]:.3g}" if a in ms else "-" for a in ARMS)
                         + " (" + " / ".join(f"{e:.2f}" if e else "-" for e in eff) + ")")
        lines.append(f"| {r['model']} | {r['target_macs_factor']:g}x | {r['round_to']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(rows: List[Dict[str, Any]]) -> List[str]:
    """The issue's targets, each with PASS / FAIL and the numbers."""
    out = []
    slower = [f"{r['model']} {r['target_macs_factor']:g}x {s}" for r in rows for s, ms in r["ms"].items()
              if ms and ms["prunekit"] > ms["dense"]]
    out.append(f"{'PASS' if not slower else 'FAIL'} prunekit never slower than dense"
               + (f" (slower: {', '.join(slower)})" if slower else ""))
    for s, goal in GOALS.items():
        g = geo([e for r in rows if (e := efficiency(r, s, "prunekit"))])
        out.append(f"{'PASS' if g is not None and g >= goal else 'FAIL'} geo-mean latency gain / MACs gain at {s}: "
                   f"{g if g is None else round(g, 3)} (goal >= {goal})")
    pk = geo([e for r in rows if (e := efficiency(r, "bf16_b128", "prunekit")) and efficiency(r, "bf16_b128", "tp")])
    tp = geo([e for r in rows if (e := efficiency(r, "bf16_b128", "tp")) and efficiency(r, "bf16_b128", "prunekit")])
    ok = pk is not None and tp is not None and pk - tp >= AHEAD
    out.append(f"{'PASS' if ok else 'FAIL'} prunekit ahead of Torch-Pruning at bf16_b128 by >= {AHEAD}: "
               f"{pk if pk is None else round(pk, 3)} vs {tp if tp is None else round(tp, 3)}")
    return out


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=MODELS)
    p.add_argument("--targets", nargs="*", type=float, default=list(TARGETS))
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "gpu_speed")
    p.add_argument("--budget-s", type=float, default=450, help="start no new cell after this many seconds")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--alloc-batch", type=int, default=128, help="batch the allocation's probes are timed at")
    p.add_argument("--alloc-repeats", type=int, default=10)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--max-windows", type=int, default=20, help="warm-up windows of 10 runs at most")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--round-to", default="auto-cuda-bf16", help="the multiple both tools round to")
    p.add_argument("--tol", type=float, default=0.02, help="how close prunekit's MACs reduction lands on the target "
                                                          "(fewer allocation trials than the library's 0.01)")
    p.add_argument("--cache", default="auto", help="latency cache folder (probes reused between 2x and 3x)")
    p.add_argument("--quick", action="store_true", help="CPU check: 64 px, batch 4, 3 repeats, 2 warm-up windows, "
                                                        "one target (2x)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and which are done; time nothing")
    p.add_argument("--force", action="store_true", help="redo finished cells")
    args = p.parse_args(argv)
    if args.quick:
        args.image_size, args.batch, args.alloc_batch, args.repeats, args.alloc_repeats = 64, 4, 4, 3, 3
        args.max_windows = 2
        args.targets = args.targets[:1]
    cells = [(m, t) for m in args.models for t in args.targets]
    if args.dry_run:
        for m, t in cells:
            done = (args.out / f"{cell_name(m, t)}.json").is_file()
            print(f"{cell_name(m, t)}: {'done' if done else 'to run'} ({', '.join(SETTINGS)})")
        return
    device = torch.device(args.device)
    multiple = resolve_round_to(int(args.round_to) if args.round_to.isdigit() else args.round_to) \
        if device.type == "cuda" or args.round_to.isdigit() else 8  # the GPU's multiple needs the GPU
    print(f"round_to for both tools: {multiple} ({args.round_to if device.type == 'cuda' else 'fixed on the CPU'})")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for m, t in cells:
        path = args.out / f"{cell_name(m, t)}.json"
        if path.is_file() and not args.force:
            continue
        if time.perf_counter() - start > args.budget_s:
            print(f"budget of {args.budget_s:g} s spent: {cell_name(m, t)} and later cells left for a rerun")
            break
        t0 = time.perf_counter()
        row = run_cell(m, t, args, device, multiple)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(row, indent=1))
        print(f"{cell_name(m, t)}: {row['seconds']} s, bf16_b128 ms {row['ms'].get('bf16_b128')}", flush=True)
    rows = [json.loads((args.out / f"{cell_name(m, t)}.json").read_text()) for m, t in cells
            if (args.out / f"{cell_name(m, t)}.json").is_file()]
    print(table(rows))
    print("\n".join(targets(rows)))
    if len(rows) < len(cells):
        print(f"{len(cells) - len(rows)} of {len(cells)} cells not run yet (rerun to resume)")


if __name__ == "__main__":
    main()
