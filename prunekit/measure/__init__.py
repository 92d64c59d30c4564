"""The proof numbers: parameters, non-zeros, MACs/FLOPs, file size, latency and peak memory of a model.

Every function borrows the model (eval mode, optional device) and hands it back in its original train/eval
state and on its original device.

Example::

    from prunekit.measure import measure_model
    m = measure_model(model, input_shape=(3, 64, 64), batch_sizes=(1, 32), file_path="pruned.safetensors")
    print(m.macs, m.latency_ms[1])
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .counts import count_macs, count_nonzero, count_params
from .latency import measure_latency, measure_latency_together
from .memory import peak_forward_memory
from .record import Measurement
from .state import InputLike, InputSpec, borrowed, check_batch_sizes, input_spec

__all__ = [
    "InputSpec",
    "Measurement",
    "count_params",
    "count_nonzero",
    "count_macs",
    "measure_latency",
    "measure_latency_together",
    "peak_forward_memory",
    "measure_model",
    "measure_models",
]


def _file_size(file_path: str | os.PathLike | None) -> int | None:
    if file_path is None:
        return None
    path = Path(file_path)
    if not path.is_file():
        raise ConfigError(f"file_path {str(path)!r} is not a file; save the model first or pass file_path=None")
    return path.stat().st_size


def measure_model(
    model: nn.Module,
    input_shape: InputLike = (3, 64, 64),
    batch_sizes: Sequence[int] = (1, 32),
    file_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    latency: bool = True,
    max_seconds: float | None = None,
) -> Measurement:
    """Measure everything at once. ``latency=False`` skips the timed runs and peak memory (fast, deterministic).

    MACs are counted on ``device`` too, so a model too big for the CPU can be measured on the GPU.
    ``input_shape``: a per-sample image shape ``(3, H, W)`` or an ``InputSpec`` (token ids, several inputs).
    """
    return measure_models([model], input_shape, batch_sizes, [file_path], device, warmup, repeats, latency,
                          max_seconds)[0]


def measure_models(
    models: Sequence[nn.Module],
    input_shape: InputLike = (3, 64, 64),
    batch_sizes: Sequence[int] = (1, 32),
    file_paths: Sequence[str | os.PathLike | None] | None = None,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    latency: bool = True,
    max_seconds: float | None = None,
) -> list[Measurement]:
    """``measure_model`` for models that will be compared (a model and its pruned version): their latencies are
    timed round-robin in one session (``measure_latency_together``), so before/after speedups are not skewed by
    the machine's load changing between two separate measurements."""
    spec = input_spec(input_shape)
    sizes = check_batch_sizes(batch_sizes)
    paths = list(file_paths) if file_paths is not None else [None] * len(models)
    if len(paths) != len(models):
        raise ConfigError(f"{len(models)} models but {len(paths)} file paths; give one path (or None) per model")
    file_bytes = [_file_size(p) for p in paths]  # a wrong path fails before any timing
    timed = measure_latency_together(models, spec, sizes, warmup, repeats, device, max_seconds) if latency \
        else [({}, {}) for _ in models]
    out = []
    for model, nbytes, (median, spread) in zip(models, file_bytes, timed):
        with borrowed(model, device) as dev:
            macs, flops = count_macs(model, spec)
            peak = peak_forward_memory(model, spec, sizes[-1], dev) if latency else None
        out.append(Measurement(params=count_params(model), nonzero_params=count_nonzero(model), macs=macs,
                               flops=flops, file_bytes=nbytes, latency_ms=median,
                               latency_spread_ms=spread, threads=torch.get_num_threads(), device=str(dev),
                               input_shape=spec.shapes[0], peak_memory_bytes=peak))
    return out
