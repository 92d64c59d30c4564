"""What a plan would do, before anything is done: per-layer widths, parameters and MACs before and after, what is
left whole and why. ``prunekit prune --dry-run`` and ``prunekit.plan_preview`` print it; nothing is changed.

    plan, graph = make_plan(model, x, ratio=0.5, return_graph=True)
    print(preview_plan(model, x, plan, graph)["macs"])       # {"before": ..., "after": ...}
"""
from __future__ import annotations

import copy
import math
import time
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..apply.structured import apply_plan
from ..graph import meta_twin
from ..measure import InputSpec, count_macs, count_params


def _pruned_twin(model: nn.Module, plan: Any, graph: Any) -> nn.Module:
    """``model`` with ``plan`` applied, on a meta-device twin (shapes only) or, where the model's code needs real
    tensors, on a copy; ``model`` itself is untouched."""
    try:
        twin = meta_twin(model)
        with torch.no_grad():
            apply_plan(twin, plan, graph=graph)
        return twin
    except Exception:  # data-dependent code (a .item(), a nonzero): a real copy
        twin = copy.deepcopy(model)
        with torch.no_grad():
            apply_plan(twin, plan, graph=graph)
        return twin


def layer_widths(model: nn.Module) -> Dict[str, int]:
    """Output width (channels, features) of every layer with a weight matrix or kernel."""
    return {name: int(m.weight.shape[0]) for name, m in model.named_modules()
            if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() >= 2}


def preview_plan(model: nn.Module, example_inputs: Any, plan: Any, graph: Any) -> Dict[str, Any]:
    """Widths, parameters and MACs of ``model`` and of what ``plan`` makes of it; skipped groups with their reason;
    removed blocks. Plain data (JSON-able)."""
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    shape = InputSpec.from_example(inputs)
    twin = _pruned_twin(model, plan, graph)
    before, after = layer_widths(model), layer_widths(twin)
    layers = [{"layer": name, "before": width, "after": after.get(name, 0)} for name, width in before.items()]
    return {"layers": layers, "params": {"before": count_params(model), "after": count_params(twin)},
            "macs": {"before": count_macs(model, shape)[0], "after": count_macs(twin, shape)[0]},
            "skipped": dict(plan.skipped), "blocks_removed": list(plan.blocks), "ignored": list(plan.ignore)}


def step_seconds(model: nn.Module, batch: Any, repeats: int = 2) -> float:
    """Seconds of one training step (forward, backward, SGD update) on ``batch`` = (x, y), measured on a copy after
    one warm-up step: what an epoch estimate multiplies."""
    work = copy.deepcopy(model).train()
    opt = torch.optim.SGD(work.parameters(), lr=1e-3)
    x, y = batch
    times: List[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(work(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times[-1]


def _sig(seconds: float) -> float:
    """Three significant digits: a short run on a fast machine is 0.0123 s, not a rounded-away 0.0."""
    return float(f"{seconds:.3g}")


def training_estimate(phases: List[Dict[str, Any]], seconds_per_batch: Optional[float],
                      batches_per_epoch: int) -> Dict[str, Any]:
    """``phases`` ([{"phase", "epochs"}]) with their estimated seconds: epochs x batches x one measured step
    (training steps only; evaluation comes on top). None when no step could be timed."""
    rows = []
    for p in phases:
        secs = None if seconds_per_batch is None else _sig(p["epochs"] * batches_per_epoch * seconds_per_batch)
        rows.append({**p, "batches_per_epoch": batches_per_epoch, "seconds": secs})
    known = [r["seconds"] for r in rows if r["seconds"] is not None]
    total = _sig(math.fsum(known)) if known and len(known) == len(rows) else None
    return {"phases": rows, "seconds_per_batch": None if seconds_per_batch is None else _sig(seconds_per_batch),
            "total_seconds": total}
