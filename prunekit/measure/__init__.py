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
from .latency import measure_latency
from .memory import peak_forward_memory
from .record import Measurement
from .state import borrowed, check_batch_sizes, check_input_shape

__all__ = [
    "Measurement",
    "count_params",
    "count_nonzero",
    "count_macs",
    "measure_latency",
    "peak_forward_memory",
    "measure_model",
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
    input_shape: Sequence[int] = (3, 64, 64),
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
    """
    shape = check_input_shape(input_shape)
    sizes = check_batch_sizes(batch_sizes)
    file_bytes = _file_size(file_path)
    with borrowed(model, device) as dev:
        macs, flops = count_macs(model, shape)
        median: dict[int, float] = {}
        spread: dict[int, float] = {}
        peak = None
        if latency:
            median, spread = measure_latency(model, shape, sizes, warmup, repeats, dev, max_seconds)
            peak = peak_forward_memory(model, shape, sizes[-1], dev)
    return Measurement(
        params=count_params(model),
        nonzero_params=count_nonzero(model),
        macs=macs,
        flops=flops,
        file_bytes=file_bytes,
        latency_ms=median,
        latency_spread_ms=spread,
        threads=torch.get_num_threads(),
        device=str(dev),
        input_shape=shape,
        peak_memory_bytes=peak,
    )
