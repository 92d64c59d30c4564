"""Does structured pruning make models faster? prunekit vs Torch-Pruning 1.6 at the same 50% channel ratio.

For each model (random init): params and MACs ratio, pruning time, CPU latency speedup at batch 1 (224 px) and
batch 32 (64 px, to keep the run short), and "latency speedup / MACs reduction" (1.0 = the pruned model is as
much faster as its MAC count promises). Torch-Pruning uses its public API: MagnitudePruner (L2),
pruning_ratio=0.5, classifier ignored. Latencies: 1 intra-op thread, models timed interleaved, median of
repeats. Writes results/structured_speed/structured_speed.json.

``--deploy`` times every model (dense, ours, Torch-Pruning's) in the same inference form, built by
``prunekit.deploy.prepare``: ``eager`` (as built), ``fold_bn`` (BatchNorm folded into the preceding convolution by
torch.fx's ``fuse``), ``channels_last`` (folded, channels-last memory format for oneDNN), ``compile`` (folded, then
``torch.compile`` with inductor and frozen weights, compiled per input shape before timing), ``ort`` (exported to
ONNX and run by ONNX Runtime on the CPU with the same thread count: BN and activations fused into the convolutions,
no Python per op).

``--allocation latency`` replaces our uniform 50% by ``prunekit.allocate.latency``: each group's latency saving per
MAC is measured on this CPU (in the ``--deploy`` form) and the per-group ratios are searched to remove exactly the
MACs Torch-Pruning's uniform model removes, so both pruned models are compared at equal MACs. ``--allocation
fastest`` (``prunekit.allocate.fastest``) reaches the same MACs by whole residual blocks, channels or a mix,
whichever split runs fastest at batch 1 here (``--choose-at-batch 32``: at batch 32; timed in eager PyTorch, or in
ONNX Runtime with ``--deploy ort``); with the residual streams cut less where that times faster.

    nice python benchmarks/structured_speed.py [--models resnet18 vgg16] [--repeats 5] [--deploy compile]
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prunekit.apply.oneshot import prune_structured  # noqa: E402
from prunekit.allocate.latency import latency_allocation, runtime_label, timed_latency  # noqa: E402
from prunekit.errors import ConfigError  # noqa: E402
from prunekit.deploy import FORMS, prepare  # noqa: E402
from prunekit.export import ExportError  # noqa: E402
from prunekit.measure import count_macs, count_params  # noqa: E402
from prunekit.allocate.round_to import resolve_round_to  # noqa: E402
from prunekit.files import atomic_path  # noqa: E402
from prunekit.allocate.reduce import search_ratio  # noqa: E402
from prunekit.allocate.fastest import fastest_at  # noqa: E402
from prunekit.allocate.latency_target import paired_timer  # noqa: E402

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "vgg16", "efficientnet_b0", "convnext_tiny", "densenet121"]


def build(name: str) -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)().eval()


def classifier(model: nn.Module) -> nn.Module:
    """The last Linear (or conv) producing the class logits."""
    last = None
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            last = m
    return last


def prune_tp(model: nn.Module, x: torch.Tensor, ratio: float, round_to: Any = None) -> nn.Module:
    """Torch-Pruning 1.6 as its README's MagnitudePruner example, with ``round_to`` (kept widths on that multiple,
    the option its docs give for hardware-friendly channels) when the comparison rounds ours."""
    import torch_pruning as tp

    pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=2),
                                       pruning_ratio=ratio, ignored_layers=[classifier(model)], round_to=round_to)
    pruner.step()
    return model


def latency_ms(models: Dict[str, nn.Module], x: torch.Tensor, repeats: int) -> Dict[str, float]:
    """Median latency per model, timing the models round-robin so machine load hits all alike. The order is
    shuffled every round (seeded): in a fixed order the model timed right after the dense one always runs on caches
    the dense one filled, which can bias its timing."""
    times: Dict[str, List[float]] = {k: [] for k in models}
    order = list(models)
    rng = random.Random(0)
    with torch.inference_mode():
        for m in models.values():
            m(x)
            m(x)
        for _ in range(repeats):
            rng.shuffle(order)
            for k in order:
                m = models[k]
                t0 = time.perf_counter()
                m(x)
                times[k].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def timed_both_orders(models: Dict[str, nn.Module], mode: str, x: torch.Tensor, repeats: int) -> Dict[str, float]:
    """Latency per model with each pruned model deployed twice, early and late (base, ours, tp, tp, ours), and
    timed as the mean of its two medians. On identical pruned graphs (same shapes from both tools) the ONNX
    Runtime session created later ran 1-2% faster here, whichever tool it held; this cancels that bias."""
    order = ["base", "ours", "tp", "tp#late", "ours#late"]
    deployed = {k: prepare(models[k.split("#")[0]], mode, x) for k in order}
    lat = latency_ms(deployed, x, repeats)
    return {k: (lat[k] + lat.get(f"{k}#late", lat[k])) / 2 for k in models}


def first_reachable(name: str, round_to: Any, search: Any) -> Tuple[Any, Any]:
    """``search(multiple)`` with ``round_to``, then smaller multiples down to none, until one reaches the target
    (a coarse multiple can make it unreachable: densenet121's 32-channel groups at 32); (result, multiple used)."""
    multiple = resolve_round_to(round_to)
    tries = [round_to] + [m for m in (8, 4) if multiple and m < multiple] + ([None] if multiple else [])
    for candidate in tries[:-1]:
        try:
            return search(candidate), candidate
        except ConfigError as exc:
            print(f"  ({name}: {exc}; trying a smaller multiple)")
    return search(tries[-1]), tries[-1]


def bench(name: str, ratio: float, repeats: int, round_to: Any, mode: str = "eager",
          allocation: str = "uniform", alpha: float = 1.0, cache: Any = None, choose_at: int = 1,
          tp_round_to: Any = None, match_tol: float = 0.01) -> Dict[str, Any]:
    shape = (3, 224, 224)
    x1 = torch.randn(1, *shape)
    base = build(name)
    row: Dict[str, Any] = {"model": name, "params": count_params(base), "macs": count_macs(base, shape)[0]}
    tp_model = copy.deepcopy(base)
    t0 = time.perf_counter()
    prune_tp(tp_model, x1, ratio, tp_round_to)
    row["tp_prune_s"] = round(time.perf_counter() - t0, 2)
    ours = copy.deepcopy(base)
    tp_macs = {"macs": 1 - count_macs(tp_model, shape)[0] / row["macs"]}  # ours is matched to this cut
    t0 = time.perf_counter()
    if allocation == "latency":
        timed = timed_latency((x1,))
        alloc, round_to = first_reachable(name, round_to, lambda multiple: latency_allocation(
            base, x1, tp_macs, latency_fn=lambda m: timed(prepare(m, mode, x1)), ignore=[], round_to=multiple,
            alpha=alpha, cache=cache, runtime=runtime_label(mode)))
        row["round_to_used"] = round_to
        row["ours_alloc_s"] = round(time.perf_counter() - t0, 2)
        row["ours_alloc_cached"] = alloc.cached
        row["ours_overrides"] = alloc.overrides
        row["ours_allocation_chosen"], row["ours_allocation_ms"] = alloc.chosen, alloc.pruned_ms
        t0 = time.perf_counter()
        ours, _ = prune_structured(ours, x1, criterion="l2", round_to=round_to, **alloc.plan_kwargs())
    elif allocation == "fastest":  # TP's MACs split between whole blocks and channels, the split timed fastest
        chooser = x1 if choose_at == 1 else torch.randn(choose_at, 3, 64, 64)  # timed as the benchmark times it

        def choose(multiple: Any, x: torch.Tensor = chooser) -> Any:
            pair = paired_timer((x,), "ort" if mode == "ort" else "eager")
            return fastest_at(base, x1, tp_macs, pair_fn=pair, round_to=resolve_round_to(multiple))

        try:
            found, round_to = first_reachable(name, round_to, choose)
        except ExportError as exc:  # vgg16 has no ONNX form at 64 px: its split is chosen at batch 1
            print(f"  ({name}: split chosen at batch 1: {str(exc)[:80]})")
            row["chosen_at_batch"] = 1
            found, round_to = first_reachable(name, round_to, lambda multiple: choose(multiple, x1))
        row["round_to_used"] = round_to
        row["ours_alloc_s"] = round(time.perf_counter() - t0, 2)
        row["ours_fastest"] = found.record()
        t0 = time.perf_counter()
        ours, _ = prune_structured(ours, x1, criterion="l2", round_to=resolve_round_to(round_to),
                                   **found.plan_kwargs())
    elif allocation == "uniform-matched":  # one ratio for every layer, searched to Torch-Pruning's MACs
        found, round_to = first_reachable(name, round_to,
                                          lambda multiple: search_ratio(base, x1, tp_macs, round_to=multiple,
                                                                              tol=match_tol))
        row["round_to_used"] = round_to
        ours, _ = prune_structured(ours, x1, round_to=round_to, **found.plan_kwargs())
    else:
        ours, _ = prune_structured(ours, x1, ratio=ratio, round_to=resolve_round_to(round_to))
    row["ours_prune_s"] = round(time.perf_counter() - t0, 2)
    row["ours_total_prune_s"] = round(row.get("ours_alloc_s", 0.0) + row["ours_prune_s"], 2)  # what a user waits
    models = {"base": base, "ours": ours, "tp": tp_model}
    # identical tensor shapes = the same computation: any latency difference between the two is timing noise
    row["same_shapes"] = [tuple(t.shape) for t in ours.state_dict().values()] == \
        [tuple(t.shape) for t in tp_model.state_dict().values()]
    for k in ("ours", "tp"):
        m = models[k]
        assert m(x1).shape == base(x1).shape
        row[f"{k}_params_ratio"] = round(count_params(m) / row["params"], 3)
        row[f"{k}_macs_ratio"] = round(count_macs(m, shape)[0] / row["macs"], 3)
    row["macs_gap"] = round(count_macs(ours, shape)[0] / count_macs(tp_model, shape)[0] - 1, 4)  # ours vs TP
    x32 = torch.randn(32, 3, 64, 64)
    row["loadavg_before"] = [round(v, 2) for v in os.getloadavg()]  # a loaded machine makes the numbers indicative
    lat1 = timed_both_orders(models, mode, x1, repeats)
    try:  # each batch is deployed for its own shape (an ONNX graph and a compiled graph are tied to it)
        lat32 = timed_both_orders(models, mode, x32, max(2, repeats // 2))
    except ExportError as exc:  # e.g. vgg16 at 64 px: adaptive pooling 2 -> 7 has no ONNX form; say so, keep b1
        print(f"  ({name}: no batch-32 timing in {mode}: {str(exc)[:120]})")
        row["b32_skipped"] = str(exc)[:300]
        lat32 = None
    row["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    row["tp_ms_over_ours_b1"] = round(lat1["tp"] / lat1["ours"], 3)  # > 1: ours faster, both timed interleaved
    row["tp_ms_over_ours_b32"] = round(lat32["tp"] / lat32["ours"], 3) if lat32 else None
    for k in ("ours", "tp"):
        s1 = lat1["base"] / lat1[k]
        row[f"{k}_speedup_b1"] = round(s1, 2)
        row[f"{k}_eff_b1"] = round(s1 * row[f"{k}_macs_ratio"], 2)  # speedup / MACs reduction
        s32 = lat32["base"] / lat32[k] if lat32 else None
        row[f"{k}_speedup_b32"] = round(s32, 2) if s32 else None
        row[f"{k}_eff_b32"] = round(s32 * row[f"{k}_macs_ratio"], 2) if s32 else None
    row["base_ms_b1"], row["base_ms_b32"] = round(lat1["base"], 1), round(lat32["base"], 1) if lat32 else None
    return row


def geo(values: List[Any]) -> float:
    values = [v for v in values if v is not None]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def _pair(r: Dict[str, Any], key: str, width: int) -> str:
    a, b = r[f"ours_{key}"], r[f"tp_{key}"]
    return f"{'-' if a is None else f'{a:.2f}':>{width}}/{'-' if b is None else f'{b:.2f}':<{width}}"


def table_md(settings: Dict[str, Any], rows: List[Dict[str, Any]], command: str) -> str:
    """The result as a markdown table: MACs of both (the gap), absolute speedups over the dense model in the same
    form, and Torch-Pruning's latency over ours measured interleaved in the same run (> 1: ours faster)."""
    def cell(r: Dict[str, Any], key: str) -> str:
        a, b = r.get(f"ours_{key}"), r.get(f"tp_{key}")
        return "-" if a is None else f"{a:.2f} / {b:.2f}"

    lines = [f"`python {command}`", "", "Same shapes = the same computation: their TP ms / ours ms shows the timing "
             "noise of the run.", "", "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), "",
             "| model | same shapes | MACs ratio ours / TP (gap) | speedup b1 ours / TP | speedup b32 ours / TP | TP ms / ours ms "
             "b1, b32 | speedup÷MACs-red. b1 ours / TP | load avg (1 min) before, after |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gap = r.get("macs_gap")
        b32 = r.get("tp_ms_over_ours_b32")
        lines.append(f"| {r['model']} | {'yes' if r.get('same_shapes') else 'no'} | {r['ours_macs_ratio']:.3f} / {r['tp_macs_ratio']:.3f} "
                     f"({'-' if gap is None else f'{gap:+.1%}'}) | {cell(r, 'speedup_b1')} | "
                     f"{cell(r, 'speedup_b32')} | {r.get('tp_ms_over_ours_b1', '-')}, {'-' if b32 is None else b32} "
                     f"| {cell(r, 'eff_b1')} | {r.get('loadavg_before', ['-'])[0]}, "
                     f"{r.get('loadavg_after', ['-'])[0]} |")
    geo_of = {k: geo([r.get(k) for r in rows]) for k in ("ours_speedup_b1", "tp_speedup_b1", "ours_speedup_b32",
                                                          "tp_speedup_b32", "tp_ms_over_ours_b1",
                                                          "tp_ms_over_ours_b32", "ours_eff_b1", "tp_eff_b1")}
    lines.append(f"| **geo-mean** | | | {geo_of['ours_speedup_b1']:.2f} / {geo_of['tp_speedup_b1']:.2f} | "
                 f"{geo_of['ours_speedup_b32']:.2f} / {geo_of['tp_speedup_b32']:.2f} | "
                 f"{geo_of['tp_ms_over_ours_b1']:.3f}, {geo_of['tp_ms_over_ours_b32']:.3f} | "
                 f"{geo_of['ours_eff_b1']:.2f} / {geo_of['tp_eff_b1']:.2f} | |")
    return "\n".join(lines) + "\n"


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--round-to", default="auto", help="'auto' (measured for the --deploy runtime: eager PyTorch's "
                    "multiple, or ONNX Runtime's with --deploy ort), 'auto-ort', 'none' or an int")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--allocation", choices=["uniform", "uniform-matched", "latency", "fastest"], default="uniform",
                    help="our channel allocation: uniform --ratio, uniform ratio searched to Torch-Pruning's MACs, "
                         "latency-aware at Torch-Pruning's MACs, or fastest (Torch-Pruning's MACs split between "
                         "whole blocks and channels, the split timed fastest at batch 1, in eager or ORT)")
    ap.add_argument("--choose-at-batch", type=int, choices=[1, 32], default=1,
                    help="fastest allocation: the batch whose timing picks the split (1 at 224 px, 32 at 64 px, "
                         "as a user's --latency-batch would); both batches are timed with that one model")
    ap.add_argument("--alpha", type=float, default=1.0, help="latency allocation: ratio ~ (saving per MAC)^alpha")
    ap.add_argument("--deploy", choices=FORMS, default="eager",
                    help="inference form every model is timed in (the same for all three)")
    ap.add_argument("--latency-cache", default=str(ROOT / "runs" / "latency_cache"),
                    help="latency allocation: folder of per-device, per-architecture timings ('none': time anew)")
    ap.add_argument("--tp-round-to", default="none",
                    help="Torch-Pruning's round_to: 'none' (its default), an int, or 'same' (prunekit's multiple, "
                         "as a fair comparison gives it)")
    ap.add_argument("--match-tol", type=float, default=0.01,
                    help="uniform-matched: how close (MACs reduction, absolute) ours is searched to Torch-Pruning's")
    ap.add_argument("--out", default=str(ROOT / "results" / "structured_speed" / "structured_speed.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    round_to = None if args.round_to == "none" else (args.round_to if args.round_to.startswith("auto")
                                                      else int(args.round_to))
    if round_to == "auto" and args.deploy == "ort":
        round_to = "auto-ort"  # the multiple ONNX Runtime runs fastest with, not eager PyTorch's
    head = (f"{'model':<16} {'params o/tp':>11} {'MACs o/tp':>11} {'prune s o/tp':>13} {'speedup b1 o/tp':>16} "
            f"{'b32 o/tp':>11} {'eff b1 o/tp':>12} {'eff b32 o/tp':>12}")
    print(head)
    settings = {"ratio": args.ratio, "threads": args.threads, "round_to": args.round_to,
                "round_to_multiple": resolve_round_to(round_to), "deploy": args.deploy,
                "allocation": args.allocation, "alpha": args.alpha}
    if args.choose_at_batch != 1:
        settings["choose_at_batch"] = args.choose_at_batch
    tp_round_to = {"none": None, "same": settings["round_to_multiple"]}.get(args.tp_round_to) \
        or (int(args.tp_round_to) if args.tp_round_to.isdigit() else None)
    if tp_round_to:  # only when set, so the rows of older runs (Torch-Pruning unrounded) still resume
        settings["tp_round_to"] = tp_round_to
    if args.match_tol != 0.01:
        settings["match_tol"] = args.match_tol
    out = Path(args.out)
    done: Dict[str, Any] = {}
    if out.is_file():  # resume: keep the rows of an earlier run with the same settings
        old = json.loads(out.read_text())
        if all(old.get(k) == v for k, v in settings.items()):
            done = {r["model"]: r for r in old["rows"]}
    rows = []
    for name in args.models:
        r = done.get(name) or bench(name, args.ratio, args.repeats, round_to, args.deploy, args.allocation,
                                    args.alpha, args.latency_cache, args.choose_at_batch, tp_round_to, args.match_tol)
        r.setdefault("ours_total_prune_s", r["ours_prune_s"] + r.get("ours_alloc_s", 0.0))  # rows of older runs
        r.setdefault("tp_total_prune_s", r["tp_prune_s"])
        rows.append(r)
        print(f"{name:<16} {_pair(r, 'params_ratio', 5)} {_pair(r, 'macs_ratio', 5)} {_pair(r, 'total_prune_s', 6)} "
              f"{_pair(r, 'speedup_b1', 7)} {_pair(r, 'speedup_b32', 5)} {_pair(r, 'eff_b1', 5)} "
              f"{_pair(r, 'eff_b32', 5)}{'' if name not in done else '  (earlier run)'}", flush=True)
        summary = {k: round(geo([r[k] for r in rows]), 3)
                   for k in ("ours_eff_b1", "tp_eff_b1", "ours_eff_b32", "tp_eff_b32")}
        with atomic_path(out) as tmp:  # after every model, so a stopped run resumes
            tmp.write_text(json.dumps({**settings, "rows": rows, "geomean": summary}, indent=1))
        with atomic_path(out.with_suffix(".md")) as tmp:
            tmp.write_text(table_md(settings, rows, " ".join(sys.argv)))
    print("geo-mean speedup/MACs-reduction:", summary)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
