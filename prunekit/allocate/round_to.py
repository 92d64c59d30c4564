"""The channel multiple a runtime runs fastest with, measured once per device and runtime.

Kernels work in blocks of channels: oneDNN and ONNX Runtime's MLAS convolutions on AVX-512 use 16-channel blocks
(NCHWc16), AVX2 8. A narrow layer off the block wastes vector lanes: in ONNX Runtime here a 16-channel mobile block
at 56 x 56 ran 2.2x cheaper per channel than an 8- or 12-channel one. Rounding pruned widths to the block keeps
such layers whole and takes the MACs from wide layers instead; mobilenet_v2 pruned to the same MACs took 19% less
time in ONNX Runtime at multiples of 16 than at multiples of 4 (results/structured_speed/log.md). In eager PyTorch
at batch 1 the per-op overhead hides most of this. So ``round_to="auto"`` measures eager PyTorch (a matmul over widths
225-256) and ``"auto-ort"`` ONNX Runtime (three pointwise + depthwise blocks at 56 x 56 over widths 4-96, about
10 s), scoring each candidate multiple by how much cheaper per channel its widths run than their neighbours.
On a GPU the block is the tensor-core tile: ``"auto-cuda"`` (fp32, TF32 tensor cores where enabled),
``"auto-cuda-bf16"`` and ``"auto-cuda-fp16"`` (autocast) time a 3x3 + 1x1 convolution pair at 28 x 28, batch 64,
channels-last, over widths 96-288 with CUDA events (``prunekit.measure.latency_cuda``) and pick among multiples up
to 128; ``resolve_round_to("auto", device="cuda", dtype="bf16")`` means the same. The result is kept in the latency
cache (``$PRUNEKIT_CACHE/latency``, keyed by the GPU, driver and cuDNN for CUDA), so every process on one machine
rounds alike and the sweep runs once per device.
"""
from __future__ import annotations

import functools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..export import export_onnx
from ..measure.latency_cache import LatencyCache, device_fingerprint
from ..measure.latency_cuda import CudaSettings, measure_cuda_latency, parse_runtime

AUTO = {"auto": "eager", "auto-ort": "ort", "auto-cuda": "cuda-fp32", "auto-cuda-bf16": "cuda-bf16",
        "auto-cuda-fp16": "cuda-fp16"}  # round_to value -> runtime measured
EAGER_WIDTHS = range(225, 257)  # a matmul's output width: eager PyTorch's cost per channel near 256
# a mobile block's width at 56 x 56, where ONNX Runtime's channel blocking shows; up to 96 so that 32 has three
# multiples: with 4-48 a run beside another job once picked 32 over 16 on one width (here: 16, by 0.96 vs 0.85)
ORT_WIDTHS = range(4, 97)
CANDIDATES = (4, 8, 16, 32)
# a 3x3 + 1x1 convolution pair's width on the GPU: three multiples of 64 (128, 192, 256) and two of 128 in range
CUDA_WIDTHS = range(96, 289)
CUDA_CANDIDATES = (8, 16, 32, 64, 128)  # tensor-core tiles: 8 (fp16/bf16 MMA k-step) up to 128 (a CTA tile's side)


def resolve_round_to(round_to: Union[None, int, str], device: Union[None, str, torch.device] = None,
                     dtype: str = "fp32") -> Union[None, int]:
    """``None`` or an int as given; ``"auto"`` / ``"auto-ort"`` / ``"auto-cuda[-bf16|-fp16]"`` -> the multiple
    measured for that runtime. ``"auto"`` with a CUDA ``device`` means the GPU's multiple at ``dtype``."""
    if round_to is None or isinstance(round_to, int):
        return round_to
    if round_to == "auto" and device is not None and torch.device(device).type == "cuda":
        return auto_multiple(f"cuda-{dtype}")
    if round_to in AUTO:
        return auto_multiple(AUTO[round_to])
    raise ConfigError(f"round_to={round_to!r} must be None, a positive int, 'auto' (eager PyTorch), 'auto-ort' "
                      "(ONNX Runtime) or 'auto-cuda' / 'auto-cuda-bf16' / 'auto-cuda-fp16' (this GPU)")


@functools.lru_cache(maxsize=8)
def auto_multiple(runtime: str = "eager", device: str = "cpu") -> int:
    """The multiple of ``runtime`` on this device, from the cache or measured now (a few seconds) and stored;
    a ``cuda-*`` runtime is measured on the current GPU whatever ``device`` says."""
    if runtime not in AUTO.values():
        raise ConfigError(f"runtime={runtime!r}: the channel multiple is measured for {sorted(AUTO.values())}")
    _, cuda = parse_runtime(runtime)
    store = LatencyCache.resolve("auto")
    key = {"what": "auto_multiple", "runtime": runtime,
           "device": device_fingerprint("cuda" if cuda is not None else device)}
    entry = store.load(key)
    if "multiple" not in entry:
        entry = {"multiple": _measure(runtime)}
        store.store(key, entry)
    return int(entry["multiple"])


def _measure(runtime: str) -> int:
    _, cuda = parse_runtime(runtime)
    if cuda is not None:
        return cuda_multiple(cuda_timer(cuda))
    return best_multiple(_eager_costs() if runtime == "eager" else _ort_costs())


def cuda_multiple(time_width: Callable[[int], float], widths: Sequence[int] = CUDA_WIDTHS) -> int:
    """The GPU's multiple from ``time_width(c) -> ms`` over ``widths`` (a fake one in tests)."""
    return best_multiple({c: time_width(c) / c for c in widths}, CUDA_CANDIDATES)


def cuda_timer(settings: CudaSettings, batch: int = 64, size: int = 28) -> Callable[[int], float]:
    """ms of a 3x3 + 1x1 convolution pair (c -> c -> c channels, ``size`` px, no bias) at ``batch``, timed by
    :func:`prunekit.measure.latency_cuda.measure_cuda_latency` in ``settings`` (autocast dtype, channels-last)."""
    quick = CudaSettings(settings.dtype, settings.channels_last, window=5, max_windows=10, repeats=10)

    def time_width(c: int) -> float:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.Conv2d(c, c, 1, bias=False))
        median, _ = measure_cuda_latency(net, (c, size, size), (batch,), quick)
        return median[batch]

    return time_width


def best_multiple(per_channel: Dict[int, float], candidates: Sequence[int] = CANDIDATES) -> int:
    """The candidate whose widths run cheapest per channel relative to their neighbours (>= 5% better than a
    smaller candidate to be preferred); 8 when nothing stands out (a harmless default on every current CPU and
    the smallest tensor-core step on a GPU).

    Each width's cost is divided by the median of the widths within 4 of it first: per-channel cost falls with
    width anyway (fixed costs spread over more channels), and without this the largest candidate would win on
    the trend alone."""
    local = {c: v / statistics.median([w for k, w in per_channel.items() if 0 < abs(k - c) <= 4])
             for c, v in per_channel.items()}
    best_m, best_gain = 1, 0.0
    for m in candidates:
        on = [v for c, v in local.items() if c % m == 0]
        off = [v for c, v in local.items() if c % m != 0]
        if not on or not off:
            continue
        gain = statistics.mean(off) / statistics.mean(on) - 1.0
        if gain > best_gain + 0.05:
            best_m, best_gain = m, gain
    return best_m if best_m > 1 else 8


def _best_of(run: Callable[[], object], rounds: int = 5, inner: int = 20) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(inner):
            run()
        best = min(best, time.perf_counter() - t0)
    return best


def _eager_costs() -> Dict[int, float]:
    """Seconds per output channel of a (64 x 256) @ (256 x c) product, c over ``EAGER_WIDTHS``."""
    torch.manual_seed(0)
    x = torch.randn(64, 256)
    out = {}
    for c in EAGER_WIDTHS:
        w = torch.randn(c, 256)
        out[c] = _best_of(lambda: x @ w.t()) / c
    return out


def _ort_costs() -> Dict[int, float]:
    """Seconds per channel of three pointwise + depthwise blocks (c channels, 56 x 56) in ONNX Runtime, 1 thread,
    c over ``ORT_WIDTHS``: narrow, high-resolution layers are where a width off the kernel's channel block costs
    most (measured here, AVX-512: 16 channels ran 2.2x cheaper per channel than 8 or 12)."""
    import onnxruntime as ort  # imported when measured: it is slow to load and rarely needed

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    torch.manual_seed(0)
    out = {}
    with tempfile.TemporaryDirectory(prefix="prunekit-multiple-") as tmp:
        for c in ORT_WIDTHS:
            net = nn.Sequential(*[nn.Sequential(nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU6(),
                                                nn.Conv2d(c, c, 3, padding=1, groups=c), nn.BatchNorm2d(c),
                                                nn.ReLU6()) for _ in range(3)]).eval()
            path = Path(tmp) / f"w{c}.onnx"
            export_onnx(net, path, (c, 56, 56), dynamic_batch=False, verify=False)
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            feed = {name: np.random.default_rng(0).standard_normal((1, c, 56, 56), dtype=np.float32)}
            session.run(None, feed)
            out[c] = _best_of(lambda: session.run(None, feed), rounds=5, inner=10) / c
    return out
