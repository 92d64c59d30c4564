"""Wall-clock latency of warm forward passes: median (robust to the odd scheduler hiccup) and IQR (its spread)."""
from __future__ import annotations

import statistics
import time
from contextlib import ExitStack
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .state import InputLike, borrowed, check_batch_sizes, dummy_inputs, input_spec


def _sync(device: torch.device) -> None:
    # CUDA launches are asynchronous: without a sync the timer would stop before the GPU finished.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _iqr(samples: list[float]) -> float:
    if len(samples) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q3 - q1


def round_robin(runs: Sequence[Callable[[], float]], repeats: int,
                stop: Callable[[], bool] = lambda: False) -> list[list[float]]:
    """Each of ``runs`` (a call returning its time) made ``repeats`` times, round-robin in alternating order, so a
    change in the machine's speed while timing hits all of them alike; ``stop`` ends it after a round."""
    samples: list[list[float]] = [[] for _ in runs]
    for r in range(repeats):
        for i in range(len(runs)) if r % 2 == 0 else reversed(range(len(runs))):
            samples[i].append(runs[i]())
        if stop():
            break
    return samples


def _timed_run(model: nn.Module, x: tuple[torch.Tensor, ...]) -> float:
    t0 = time.perf_counter()
    model(*x)
    _sync(x[0].device)
    return (time.perf_counter() - t0) * 1000.0


def _warm_up(model: nn.Module, x: tuple[torch.Tensor, ...], warmup: int, deadline: float | None) -> None:
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


def measure_latency(
    model: nn.Module,
    input_shape: InputLike,
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
    return measure_latency_together([model], input_shape, batch_sizes, warmup, repeats, device, max_seconds)[0]


def measure_latency_together(
    models: Sequence[nn.Module],
    input_shape: InputLike,
    batch_sizes: Sequence[int] = (1, 32),
    warmup: int = 3,
    repeats: int = 10,
    device: str | torch.device = "cpu",
    max_seconds: float | None = None,
    summary: Callable[[list[float]], float] = statistics.median,
) -> list[tuple[dict[int, float], dict[int, float]]]:
    """``measure_latency`` for several models timed round-robin: each round runs every model once, in alternating
    order, so a change in the machine's speed while timing (another job, frequency scaling) hits all of them alike.
    Comparing a model with its pruned version this way is fair; timing them minutes apart is not.

    ``summary`` turns each model's timed runs into its latency (default the median; ``min`` on a shared machine,
    where other jobs only ever add time, so the fastest run is the closest to the model's own cost).

    ``max_seconds`` caps each batch size's time for all models together (at least one round is always made).
    """
    spec = input_spec(input_shape)  # an image shape (3, H, W) or an InputSpec
    sizes = check_batch_sizes(batch_sizes)
    if warmup < 0 or repeats < 1:
        raise ConfigError(f"warmup={warmup}, repeats={repeats}: need warmup >= 0 and repeats >= 1")
    if max_seconds is not None and max_seconds <= 0:
        raise ConfigError(f"max_seconds={max_seconds} must be positive, or None for no time cap")
    out: list[tuple[dict[int, float], dict[int, float]]] = [({}, {}) for _ in models]
    with ExitStack() as stack, torch.inference_mode():
        devs = [stack.enter_context(borrowed(m, device)) for m in models]
        for batch in sizes:
            xs = [dummy_inputs(m, batch, spec, d) for m, d in zip(models, devs)]
            start = time.perf_counter()
            warm_deadline = None if max_seconds is None else start + max_seconds / 2
            for m, x in zip(models, xs):
                _warm_up(m, x, warmup, warm_deadline)
            runs = [lambda m=m, x=x: _timed_run(m, x) for m, x in zip(models, xs)]
            cap = float("inf") if max_seconds is None else max_seconds
            over = lambda: time.perf_counter() - start > cap  # noqa: B023,E731 - this batch's start, used right here
            for i, got in enumerate(round_robin(runs, repeats, stop=over)):
                out[i][0][batch] = summary(got)
                out[i][1][batch] = _iqr(got)
    return out
