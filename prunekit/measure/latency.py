"""Wall-clock latency of warm forward passes: median (robust to the odd scheduler hiccup) and IQR (its spread)."""
from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .state import borrowed, check_batch_sizes, check_input_shape, dummy_input


def _sync(device: torch.device) -> None:
    # CUDA launches are asynchronous: without a sync the timer would stop before the GPU finished.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _iqr(samples: list[float]) -> float:
    if len(samples) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q3 - q1


def _timed_run(model: nn.Module, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    model(x)
    _sync(x.device)
    return (time.perf_counter() - t0) * 1000.0


def _warm_up(model: nn.Module, x: torch.Tensor, warmup: int, deadline: float | None) -> None:
    """At least ``warmup`` runs, then on until two runs in a row agree within 20% (at most 5x ``warmup`` runs).

    A fresh process needs several forwards at each new shape (oneDNN kernel creation, thread pool start): on a
    resnet18 the first five runs can take 30x the steady time, so a fixed 3-run warm-up would inflate the median.
    """
    previous: float | None = None
    for i in range(5 * warmup):
        current = _timed_run(model, x)
        settled = previous is not None and abs(current - previous) <= 0.2 * min(current, previous)
        if (i + 1 >= warmup and settled) or (deadline is not None and time.perf_counter() > deadline):
            return
        previous = current


def _time_batch(
    model: nn.Module, x: torch.Tensor, warmup: int, repeats: int, max_seconds: float | None
) -> list[float]:
    """Milliseconds of each timed run. With ``max_seconds``, stops early once the budget is spent (>= 1 run)."""
    start = time.perf_counter()
    _warm_up(model, x, warmup, None if max_seconds is None else start + max_seconds / 2)
    samples: list[float] = []
    for _ in range(repeats):
        samples.append(_timed_run(model, x))
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    return samples


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 32),
    warmup: int = 3,
    repeats: int = 10,
    device: str | torch.device = "cpu",
    max_seconds: float | None = None,
) -> tuple[dict[int, float], dict[int, float]]:
    """``(median_ms, iqr_ms)``, each keyed by batch size, for eval-mode inference-mode forward passes.

    ``warmup`` is a minimum: warm-up continues until run times settle (see ``_warm_up``).

    ``max_seconds`` caps the time spent *per batch size* (warm-up included) so a big model on a slow CPU cannot
    stall a run; at least one timed repeat is always made. The model's mode and device are restored afterwards.

    Example::

        median, spread = measure_latency(model, (3, 64, 64), batch_sizes=(1, 32))
    """
    shape = check_input_shape(input_shape)
    sizes = check_batch_sizes(batch_sizes)
    if warmup < 0 or repeats < 1:
        raise ConfigError(f"warmup={warmup}, repeats={repeats}: need warmup >= 0 and repeats >= 1")
    if max_seconds is not None and max_seconds <= 0:
        raise ConfigError(f"max_seconds={max_seconds} must be positive, or None for no time cap")
    median: dict[int, float] = {}
    spread: dict[int, float] = {}
    with borrowed(model, device) as dev, torch.inference_mode():
        for batch in sizes:
            x = dummy_input(model, batch, shape, dev)
            samples = _time_batch(model, x, warmup, repeats, max_seconds)
            median[batch] = statistics.median(samples)
            spread[batch] = _iqr(samples)
    return median, spread
