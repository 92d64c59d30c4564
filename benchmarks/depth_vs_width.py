"""Depth against width at the same MACs: which cut makes a model faster for the MACs it removes?

For each model (random init, batch 1, the model's input size): depth pruning removes ``--depth`` of the
identity-residual blocks (``make_plan(depth=..., depth_criterion=...)``, scored on random calibration inputs), then
width pruning (channels, uniform l2, widths kept multiples of ``--round-to`` 8, else 4, else exact, whichever
first lands within 0.01; the ``reduce`` allocator) is searched to remove the MACs depth removed (exact,
unrounded widths ran 3.5x slower than dense in ONNX Runtime on resnet26d in a first run: odd channel counts miss
its fast kernels, so the width arm is rounded as a user would deploy it). Both are timed against the dense model
in the same run, round-robin (``measure_latency_together``), in eager PyTorch and in ONNX Runtime
(``prunekit.export.OrtModule``), one intra-op thread. Reported per pruned model: blocks removed, MACs, params,
latency, and latency gain / MACs gain (1.0 = as much faster as its MAC count promises).

One JSON per model under results/depth_vs_width/ (a finished model is skipped, so the run resumes); ``--table``
prints the markdown table of every JSON there.

    nice python benchmarks/depth_vs_width.py [--models tv/resnet50 timm/resnet26d] [--depth 0.5] [--table]
"""
from __future__ import annotations

import argparse
import copy
import json
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
from prunekit.report.tables import markdown_table  # noqa: E402
from prunekit.export import OrtModule  # noqa: E402
from prunekit.measure import count_macs, count_params, measure_latency_together  # noqa: E402
from prunekit.files import atomic_path  # noqa: E402

MODELS = ["tv/resnet50", "tv/convnext_tiny", "tv/vit_b_16", "timm/resnet26d", "timm/convnext_nano",
          "timm/deit_small_patch16_224"]


def build(name: str) -> nn.Module:
    """A randomly initialised torchvision (``tv/``) or timm (``timm/``) model in eval mode."""
    torch.manual_seed(0)
    source, arch = name.split("/", 1)
    if source == "timm":
        import timm

        return timm.create_model(arch, pretrained=False).eval()
    import torchvision

    return getattr(torchvision.models, arch)().eval()


def input_size(model: nn.Module) -> tuple:
    """The model's own input size (timm's pretrained_cfg), else 224 px."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("input_size", (3, 224, 224)))


def latency(models: Dict[str, nn.Module], shape: tuple, repeats: int) -> Dict[str, float]:
    """Median batch-1 latency (ms) per model, timed round-robin in one go."""
    got = measure_latency_together(list(models.values()), shape, batch_sizes=(1,), warmup=2, repeats=repeats)
    return {k: round(lat[0][1], 2) for k, lat in zip(models, got)}


def width_at(base: nn.Module, x: torch.Tensor, cut: float, round_to: Optional[int]) -> Tuple[Any, Optional[int]]:
    """The ``reduce`` allocation of ``cut`` MACs with widths on ``round_to``, else on 4, else exact, whichever first
    lands within 0.01 of ``cut`` (vit_b_16's 64-wide heads on multiples of 8 stop at 0.466 for 0.497)."""
    tries = [m for m in (round_to, 4) if m] + [None]
    for multiple in tries:
        alloc = allocate("reduce", AllocationRequest(base, x, criterion="l2", reduce={"macs": cut},
                                                     plan_kwargs={"round_to": multiple}))
        if abs(alloc.record["reduce_achieved"] - cut) <= 0.01 or multiple is None:
            return alloc, multiple
        print(f"  width on multiples of {multiple} reaches {alloc.record['reduce_achieved']:.3f} of {cut:.3f}")
    raise AssertionError("unreachable")


def bench(name: str, depth: float, criterion: str, repeats: int, round_to: int) -> Dict[str, Any]:
    base = build(name)
    shape = input_size(base)
    x = torch.randn(2, *shape)
    t0 = time.perf_counter()
    deep, plan = prune_structured(copy.deepcopy(base), x, ratio=0.0, depth=depth, depth_criterion=criterion,
                                  data=[(x, None)])
    depth_s = time.perf_counter() - t0
    macs = {"dense": count_macs(base, shape)[0], "depth": count_macs(deep, shape)[0]}
    cut = 1 - macs["depth"] / macs["dense"]
    t0 = time.perf_counter()
    alloc, round_to = width_at(base, x, cut, round_to)
    wide, _ = prune_structured(copy.deepcopy(base), x, criterion="l2", round_to=round_to, **alloc.plan_kwargs)
    width_s = time.perf_counter() - t0
    models = {"dense": base, "depth": deep, "width": wide}
    macs["width"] = count_macs(wide, shape)[0]
    eager = latency(models, shape, repeats)
    ort = latency({k: OrtModule(m, shape, threads=1) for k, m in models.items()}, shape, repeats)
    row: Dict[str, Any] = {"model": name, "input": list(shape), "depth_fraction": depth, "depth_criterion": criterion,
                           "blocks": len(plan.settings["depth_scores"]), "blocks_removed": plan.blocks,
                           "depth_macs_cut": round(cut, 4), "width_macs_cut": round(alloc.record["reduce_achieved"], 4),
                           "width_ratio": alloc.plan_kwargs.get("ratio"), "round_to": round_to,
                           "seconds": {"depth_plan": round(depth_s, 1), "width_search": round(width_s, 1)},
                           "threads": torch.get_num_threads(), "repeats": repeats,
                           "note": "shared 2-core machine (other jobs running): latencies are noisy"}
    for k, m in models.items():
        row[k] = {"macs": macs[k], "params": count_params(m), "eager_ms": eager[k], "ort_ms": ort[k]}
    for k in ("depth", "width"):
        macs_gain = macs["dense"] / macs[k]
        row[k]["macs_gain"] = round(macs_gain, 3)
        for rt in ("eager", "ort"):
            gain = eager["dense"] / eager[k] if rt == "eager" else ort["dense"] / ort[k]
            row[k][f"{rt}_gain"] = round(gain, 3)
            row[k][f"{rt}_gain_per_macs_gain"] = round(gain / macs_gain, 3)
    return row


def table(rows: List[Dict[str, Any]]) -> str:
    """The markdown table docs/structured.md shows (gain = dense latency / pruned latency; "per MACs" divides it by
    dense MACs / pruned MACs)."""
    def trio(r: Dict[str, Any], key: str, fmt: str, scale: float = 1.0, dense: bool = True) -> str:
        parts = ([r["dense"]] if dense else []) + [r["depth"], r["width"]]
        return " / ".join(format(p[key] / scale, fmt) for p in parts)

    return markdown_table([{
        "model": r["model"], "blocks removed": f"{len(r['blocks_removed'])}/{r['blocks']}",
        "GMACs dense -> depth / width": f"{r['dense']['macs'] / 1e9:.2f} -> " + trio(r, "macs", ".2f", 1e9, False),
        "Mparams depth / width": trio(r, "params", ".1f", 1e6, False),
        "eager ms dense / depth / width": trio(r, "eager_ms", ".0f"),
        "ORT ms dense / depth / width": trio(r, "ort_ms", ".0f"),
        "eager gain per MACs gain, depth / width": trio(r, "eager_gain_per_macs_gain", ".2f", dense=False),
        "ORT gain per MACs gain, depth / width": trio(r, "ort_gain_per_macs_gain", ".2f", dense=False)}
        for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--depth", type=float, default=0.5)
    ap.add_argument("--round-to", type=int, default=8, help="width arm: channel counts kept multiples of this")
    ap.add_argument("--criterion", default="contribution")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "depth_vs_width")
    ap.add_argument("--table", action="store_true", help="print the table of the finished models and stop")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if not args.table:
        torch.set_num_threads(1)
        for name in args.models:
            path = out / f"{name.replace('/', '__')}.json"
            if path.exists():
                print(f"{name}: done before ({path.name}), skipped")
                continue
            t0 = time.perf_counter()
            row = bench(name, args.depth, args.criterion, args.repeats, args.round_to)
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(row, indent=1))
            print(f"{name}: {time.perf_counter() - t0:.0f} s")
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    print(table(rows))


if __name__ == "__main__":
    main()
