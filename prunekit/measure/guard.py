"""The speed guard: is the pruned model faster than the dense one where it will run? If not, say so and how to fix it.

Fewer MACs do not always mean less time: on a GPU a pruned model whose widths fall off the tensor-core tiles can run
slower than the dense one (efficientnet_b0 at bf16, batch 128: 1.7x slower on an H200 with 3.4x fewer MACs), and
at batch 1 an eager forward waits on kernel launches whatever the widths. The prune report therefore compares dense
and pruned at the batch sizes and dtype asked for and, where the pruned one is not at least ``MIN_SPEEDUP`` faster,
warns (one line on the CLI's stderr) naming the cells and the fixes that apply: rounding widths to the device's
multiple, timing the allocation on the device, or a deploy form without per-op launches.

    result = speed_guard(dense, pruned, (3, 224, 224), runtime="cuda-bf16", batch_sizes=(1, 128), hints=hints)
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn

from ..errors import PruningWarning
from .latency_cuda import CudaSettings, Timer, gpu_device, measure_cuda_latency_together, parse_runtime
from .state import InputLike, input_spec

MIN_SPEEDUP = 1.02  # below this the pruned model counts as not faster (timing noise is about 1-2%)
SMALL_BATCH = 8  # at or below this a forward is launch-bound on a GPU (per-op overhead on a CPU)
Deploy = Callable[[nn.Module, torch.Tensor], nn.Module]  # (model, example batch) -> the deployed form


@dataclass(frozen=True)
class SpeedCell:
    """Dense and pruned latency at one batch size, dtype and deploy form."""

    batch: int
    dtype: str
    form: str
    dense_ms: float
    pruned_ms: float

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.pruned_ms if self.pruned_ms > 0 else float("inf")

    def row(self) -> Dict[str, Any]:
        return {**asdict(self), "speedup": round(self.speedup, 3)}


def slow_cells(cells: Sequence[SpeedCell], min_speedup: float = MIN_SPEEDUP) -> List[SpeedCell]:
    """The cells where the pruned model is not at least ``min_speedup`` times faster than the dense one."""
    return [c for c in cells if c.speedup < min_speedup]


def fixes(slow: Sequence[SpeedCell], runtime: str, hints: Mapping[str, Any]) -> List[str]:
    """The flags that address ``slow`` cells, given what was used (``hints``: round_to, allocation, deploy).

    Rounding when widths are not on the device's measured multiple; a timed allocation when the cut was uniform;
    a launch-free deploy form when a slow cell is at a small batch and the form is eager."""
    name, cuda = parse_runtime(runtime)
    dtype = cuda.dtype if cuda is not None else "fp32"
    out = []
    auto = {"cuda": "auto-cuda" + ("" if dtype == "fp32" else f"-{dtype}"), "ort": "auto-ort"}.get(name, "auto")
    if hints.get("round_to") in (None, "none") or (cuda is not None and not str(hints["round_to"]).startswith(auto)):
        where = "the GPU's tensor-core multiple" if cuda is not None else "the runtime's channel block"
        out.append(f"--round-to {auto} (widths on {where})")
    if hints.get("allocation", "uniform") == "uniform":
        flag = f"--latency-runtime cuda --latency-dtype {dtype}" if cuda is not None else f"--latency-runtime {name}"
        out.append(f"--allocation latency {flag} (per-layer cuts timed on this device)")
    if any(c.batch <= SMALL_BATCH for c in slow) and hints.get("deploy", "eager") in ("eager", "fold_bn"):
        form = "cuda_graph" if cuda is not None else "compile"
        out.append(f"--deploy {form} (at small batches eager time is per-op overhead, not MACs)")
    return out or ["fewer MACs do not buy time here: prune less, or prune the layers that dominate the time"]


def verdict(cells: Sequence[SpeedCell], runtime: str, hints: Mapping[str, Any],
            min_speedup: float = MIN_SPEEDUP) -> Optional[str]:
    """One line naming where the pruned model is not faster and the fixes; None when it is faster everywhere."""
    slow = slow_cells(cells, min_speedup)
    if not slow:
        return None
    where = "; ".join(f"batch {c.batch} {c.dtype} {c.form}: {c.pruned_ms:.3g} ms vs dense {c.dense_ms:.3g} ms "
                      f"({c.speedup:.2f}x)" for c in slow)
    return f"the pruned model is not faster than the dense one at {where}; try {', '.join(fixes(slow, runtime, hints))}"


def cells_from_report(before: Mapping[str, Any], after: Mapping[str, Any], form: str = "eager") -> List[SpeedCell]:
    """Cells from two flat report dicts (``latency_ms_b{N}`` keys, fp32), for runtimes the report already timed."""
    cells = []
    for key, dense in before.items():
        if key.startswith("latency_ms_b") and after.get(key) is not None and dense is not None:
            cells.append(SpeedCell(int(key.removeprefix("latency_ms_b")), "fp32", form, float(dense),
                                   float(after[key])))
    return sorted(cells, key=lambda c: c.batch)


def cuda_cells(dense: nn.Module, pruned: nn.Module, input_shape: InputLike, batch_sizes: Sequence[int],
               settings: CudaSettings, form: str = "eager", deploy: Optional[Deploy] = None,
               device: Any = None, timer: Optional[Timer] = None) -> List[SpeedCell]:
    """Dense and pruned timed together on the GPU (``measure_cuda_latency_together``) at each batch size; with
    ``deploy``, each model is timed in that form (built per batch size on a copy, since a captured graph or a
    compiled graph is tied to its shape; the form converts its own inputs, so no channels-last pass is added)."""
    dev = gpu_device(device)
    cells = []
    for batch in batch_sizes:
        models, timing = [dense, pruned], settings
        if deploy is not None:
            example = input_spec(input_shape).make(batch, dev, torch.float32)[0]
            models = [deploy(copy.deepcopy(m).to(dev), example) for m in models]
            timing = CudaSettings(**{**asdict(settings), "channels_last": False})
        (d, _), (p, _) = measure_cuda_latency_together(models, input_shape, (batch,), timing, dev, timer)
        cells.append(SpeedCell(batch, settings.dtype, form, d[batch], p[batch]))
    return cells


def speed_guard(dense: nn.Module, pruned: nn.Module, input_shape: InputLike, runtime: str,
                batch_sizes: Sequence[int], hints: Mapping[str, Any], before: Optional[Mapping[str, Any]] = None,
                after: Optional[Mapping[str, Any]] = None, deploy: Optional[Deploy] = None,
                timer: Optional[Timer] = None, device: Any = None) -> Dict[str, Any]:
    """Compare dense and pruned where the model will run; warn (:class:`PruningWarning`, one line on the CLI's
    stderr) with :func:`verdict` when the pruned one is not faster somewhere. Returns the record a report keeps
    (cells, the line or None).

    ``runtime`` ``cuda[-bf16|-fp16]``: timed here on the GPU at ``batch_sizes`` (in ``deploy``'s form when given);
    any other runtime: the cells are the report's own latencies (``before`` / ``after``), nothing is timed again.
    ``timer`` / ``device`` replace the CUDA events and the GPU (tests on a CPU)."""
    _, cuda = parse_runtime(runtime)
    form = str(hints.get("deploy", "eager"))
    if cuda is not None:
        full = CudaSettings(cuda.dtype)  # the report's numbers: the full warm-up and 30 runs, not probe settings
        cells = cuda_cells(dense, pruned, input_shape, sorted(set(batch_sizes)), full, form, deploy, device, timer)
    else:
        cells = cells_from_report(before or {}, after or {}, form)
    line = verdict(cells, runtime, hints)
    if line:
        warnings.warn(line, PruningWarning, stacklevel=2)
    return {"runtime": runtime, "min_speedup": MIN_SPEEDUP, "cells": [c.row() for c in cells], "warning": line}
