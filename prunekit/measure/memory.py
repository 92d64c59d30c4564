"""Peak extra memory of one forward pass: the activations a deployment must budget for, beyond the weights.

CUDA: ``torch.cuda.max_memory_allocated`` around the forward, minus what was allocated before it.

CPU: PyTorch has no CPU peak counter, so we record one forward under ``torch.profiler`` with
``profile_memory=True``. The profiler logs every allocator event (``[memory]`` records with a signed byte
count, kernel workspaces included) with a timestamp; sorting them by time and taking the maximum of the
running sum gives the high-water mark of live memory during the forward, relative to its start (the input is
already allocated; the output counts, since it is alive at the end). It reads the profiler's raw event list
(``profile.profiler.kineto_results``); if a future torch drops that, or the caller is already running a
profiler (ours would end their session), the function returns ``None`` rather than a guess.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .state import InputLike, borrowed, dummy_inputs, input_spec


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Hide the C++ profiler's start/stop banner lines (written straight to fd 2, not via Python)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _cpu_peak(model: nn.Module, x: tuple[torch.Tensor, ...]) -> int | None:
    from torch.profiler import ProfilerActivity, profile

    if torch._C._autograd._profiler_enabled():
        return None  # the caller is profiling: starting ours would end their session; no number, not a fake one
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    try:
        with _quiet_native_stderr():
            prof.start()
    except RuntimeError:
        return None
    try:
        model(*x)
    finally:
        with _quiet_native_stderr():
            prof.stop()
    try:
        events = prof.profiler.kineto_results.events()  # type: ignore[union-attr]
    except AttributeError:
        return None  # a torch without the raw event list
    allocs = sorted(  # stable sort: events with equal timestamps keep the order they were recorded in
        ((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]" and e.device_type().name == "CPU"),
        key=lambda event: event[0],
    )
    if not allocs:
        return None
    live = peak = 0
    for _, nbytes in allocs:
        live += nbytes
        peak = max(peak, live)
    return int(peak)


def _cuda_peak(model: nn.Module, x: tuple[torch.Tensor, ...]) -> int:
    device = x[0].device
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    model(*x)
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - before)


def peak_forward_memory(
    model: nn.Module, input_shape: InputLike, batch_size: int, device: str | torch.device = "cpu"
) -> int | None:
    """Bytes of peak extra memory during one eval-mode forward at ``batch_size``; ``None`` if it cannot be measured.

    Runs one untimed forward first so lazy one-off allocations (kernel caches, mkldnn primitives) do not count.
    """
    spec = input_spec(input_shape)
    with borrowed(model, device) as dev, torch.inference_mode():
        x = dummy_inputs(model, int(batch_size), spec, dev)
        model(*x)
        if dev.type == "cuda":
            return _cuda_peak(model, x)
        if dev.type == "cpu":
            return _cpu_peak(model, x)
        return None
