"""Where does eager PyTorch lose the speed-up pruning promises? Per-op-class time of dense vs pruned models.

Same models and pruning as ``structured_speed.py``'s main run (random init, uniform ``--ratio`` of channels,
``--round-to auto``), CPU, 1 intra-op thread, batch 1 at 224 px and batch 32 at 64 px. Per model and batch,
``torch.profiler`` gives each aten op's self time, summed into classes (conv, linear/matmul, norm, activation,
elementwise incl. add/cat, pooling, other); a separate unprofiled timing gives the wall time, and
``overhead`` = wall - sum of op self times (Python, module calls, dispatch above the ops; the profiler's own
bookkeeping inflates the op times a little, so this is a lower bound and can come out negative). For every class:
``excess`` = pruned time - MACs ratio x dense time, the time the class would not spend had it shrunk like the
MACs; the excesses add up to the speed-up lost against the MAC count. Writes
``results/structured_speed/eager_profile[_<deploy>].json`` and prints a markdown table.

    python benchmarks/eager_profile.py [--models resnet18] [--deploy fold_bn]
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from prunekit.allocate.round_to import resolve_round_to  # noqa: E402
from prunekit.apply.oneshot import prune_structured  # noqa: E402
from prunekit.deploy import FORMS, prepare  # noqa: E402
from prunekit.files import atomic_path  # noqa: E402
from prunekit.measure import count_macs  # noqa: E402
from structured_speed import MODELS, build  # noqa: E402

CLASSES = {  # aten op name fragments -> class; first match wins, so the order matters
    "conv": ("conv",),
    "linear/matmul": ("addmm", "matmul", "::mm", "bmm", "linear"),
    "norm": ("batch_norm", "layer_norm", "group_norm"),
    "activation": ("relu", "clamp", "hardtanh", "silu", "sigmoid", "gelu", "hardswish", "hardsigmoid", "tanh"),
    "pooling": ("pool", "::mean"),
    "elementwise": ("add", "mul", "::cat", "div", "sub", "copy_", "contiguous", "clone", "permute"),
}
ORDER = list(CLASSES) + ["other", "overhead"]


def op_class(name: str) -> str:
    for cls, fragments in CLASSES.items():
        if any(f in name for f in fragments):
            return cls
    return "other"


def wall_ms(models: Dict[str, nn.Module], x: torch.Tensor, repeats: int) -> Dict[str, float]:
    """Median wall time per model, unprofiled, the models timed alternately so load changes hit both alike."""
    times: Dict[str, List[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for r in range(repeats):
            for k in (list(models) if r % 2 == 0 else list(models)[::-1]):
                t0 = time.perf_counter()
                models[k](x)
                times[k].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def class_ms(model: nn.Module, x: torch.Tensor, repeats: int) -> Dict[str, float]:
    """Self CPU time per op class, ms per forward."""
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            model(x)
    out = {c: 0.0 for c in ORDER}
    for event in prof.key_averages():
        if event.key.startswith("aten::") or event.key.startswith("mkldnn::"):
            out[op_class(event.key)] += event.self_cpu_time_total / 1000 / repeats
    return out


def breakdown(models: Dict[str, nn.Module], x: torch.Tensor, repeats: int) -> Dict[str, Dict[str, float]]:
    """Wall time and per-class op time of each model; ``overhead`` is the wall time no op accounts for."""
    with torch.inference_mode():
        for m in models.values():
            m(x)
            m(x)  # warm: oneDNN primitives are created at the first calls of each shape
    wall = wall_ms(models, x, repeats)
    out = {}
    for k, m in models.items():
        ops = class_ms(m, x, max(2, repeats // 2))
        ops["overhead"] = wall[k] - sum(ops.values())
        out[k] = {"wall": wall[k], **ops}
    return out


def profile_model(name: str, ratio: float, round_to: str, deploy: str, repeats: int) -> Dict[str, object]:
    shape = (3, 224, 224)
    x1, x32 = torch.randn(1, *shape), torch.randn(32, 3, 64, 64)
    dense = build(name)
    pruned, _ = prune_structured(copy.deepcopy(dense), x1, ratio=ratio, round_to=resolve_round_to(round_to))
    macs_ratio = count_macs(pruned.eval(), shape)[0] / count_macs(dense, shape)[0]
    row: Dict[str, object] = {"model": name, "macs_ratio": macs_ratio}
    for tag, x in (("b1", x1), ("b32", x32)):
        parts = breakdown({"dense": prepare(dense, deploy, x), "pruned": prepare(pruned, deploy, x)}, x, repeats)
        row[tag] = parts
        row[f"{tag}_speedup"] = parts["dense"]["wall"] / parts["pruned"]["wall"]
        row[f"{tag}_eff"] = row[f"{tag}_speedup"] * row["macs_ratio"]
        row[f"{tag}_excess"] = {c: parts["pruned"][c] - row["macs_ratio"] * parts["dense"][c] for c in ORDER}
    return row


def table(rows: List[Dict[str, object]], tag: str) -> str:
    """Per class, summed over the models: dense and pruned time, their ratio, and the class's share of the time
    lost against the MAC count (sum of excesses / sum of lost time; negative: the class shrank more than MACs)."""
    lost = sum(r[tag]["pruned"]["wall"] - r["macs_ratio"] * r[tag]["dense"]["wall"] for r in rows)
    lines = [f"| {tag}: op class | dense ms | pruned ms | pruned / dense | share of lost time |",
             "|---|---|---|---|---|"]
    for c in ORDER + ["wall"]:
        d = sum(r[tag]["dense"][c] for r in rows)
        p = sum(r[tag]["pruned"][c] for r in rows)
        share = f"{100 * sum(r[f'{tag}_excess'][c] for r in rows) / lost:.0f}%" if c != "wall" else "100%"
        lines.append(f"| {c} | {d:.1f} | {p:.1f} | {p / d if d else float('nan'):.2f} | {share} |")
    macs = sum(r["macs_ratio"] * r[tag]["dense"]["wall"] for r in rows) / sum(r[tag]["dense"]["wall"] for r in rows)
    lines.append(f"| (MACs ratio, weighted like the wall time) | | | {macs:.2f} | |")
    return "\n".join(lines)


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--round-to", default="auto")
    ap.add_argument("--deploy", choices=[f for f in FORMS if f != "ort"], default="eager",
                    help="the form both models are profiled in (ONNX Runtime has no torch.profiler view)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    suffix = "" if args.deploy == "eager" else f"_{args.deploy}"
    out = Path(args.out or ROOT / "results" / "structured_speed" / f"eager_profile{suffix}.json")
    rows = []
    for name in args.models:
        rows.append(profile_model(name, args.ratio, args.round_to, args.deploy, args.repeats))
        r = rows[-1]
        print(f"{name}: MACs x{r['macs_ratio']:.2f}, speedup/MACs-red. b1 {r['b1_eff']:.2f}, b32 {r['b32_eff']:.2f}",
              flush=True)
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps({"ratio": args.ratio, "round_to": args.round_to, "deploy": args.deploy,
                                       "threads": 1, "rows": rows}, indent=1))
    for tag in ("b1", "b32"):
        print(table(rows, tag), "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
