"""GPU latency as a deployment sees it: CUDA events, cuDNN autotuning on, autocast dtype, channels-last inputs.

A GPU runs kernels asynchronously and picks convolution algorithms by timing them (``cudnn.benchmark``), so a
CPU wall clock around a forward pass measures launches, not work, and the first runs at a new shape include the
autotuning. Here each run is bracketed by two CUDA events on the stream (no host round trip inside the timed
region), warm-up continues until the median of successive windows of runs changes by less than ``tolerance``
(at most ``max_windows`` windows), and the latency is the median of ``repeats`` timed runs (IQR as the spread),
models timed round-robin so clock or thermal drift hits all of them alike. The dtype is applied as autocast
(``bf16`` / ``fp16``: tensor-core kernels; weights stay fp32, as a user running autocast has them); inputs are
channels-last when asked (cuDNN's fastest layout under autocast; the weights are converted alike).

The timer is injectable: ``timer(fn) -> ms`` runs ``fn`` once and says how long it took. :func:`event_timer` is the
CUDA one; tests pass a fake one that returns scripted times, so the warm-up rule, the statistics and the cache keys
are checked on a CPU.

    median, iqr = measure_cuda_latency(model, (3, 224, 224), batch_sizes=(1, 128), settings=CudaSettings("bf16"))
"""
from __future__ import annotations

import statistics
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from .latency import _iqr, round_robin
from .state import InputLike, borrowed, check_batch_sizes, dummy_inputs, input_spec

Timer = Callable[[Callable[[], Any]], float]  # runs the callable once, returns its time in ms
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class CudaSettings:
    """How a GPU latency is taken: autocast ``dtype`` (fp32 = no autocast), ``channels_last`` inputs and weights,
    ``window`` runs per warm-up window, windows until the median moves less than ``tolerance`` (at most
    ``max_windows``), then ``repeats`` timed runs."""

    dtype: str = "fp32"
    channels_last: bool = True
    window: int = 10
    tolerance: float = 0.02
    max_windows: int = 20
    repeats: int = 30

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"latency dtype {self.dtype!r} is unknown; use one of {', '.join(DTYPES)}")
        if self.window < 1 or self.max_windows < 2 or self.repeats < 1 or not 0 < self.tolerance < 1:
            raise ConfigError(f"CUDA timing settings {asdict(self)}: need window >= 1, max_windows >= 2, "
                              "repeats >= 1 and a tolerance in (0, 1)")

    def label(self) -> str:
        """What the latency cache calls these settings (dtype and layout change every kernel)."""
        return f"cuda-{self.dtype}-{'cl' if self.channels_last else 'nchw'}"


PROBE = {"window": 5, "max_windows": 10, "repeats": 15}  # an allocation times hundreds of models: lighter settings


def parse_runtime(runtime: str) -> Tuple[str, Optional[CudaSettings]]:
    """``"cuda"`` / ``"cuda-bf16"`` -> ("cuda", the settings allocators time candidates with: ``PROBE``);
    ``"eager"`` / ``"ort"`` -> (runtime, None)."""
    name, _, dtype = runtime.partition("-")
    if name == "cuda":
        return "cuda", CudaSettings(dtype or "fp32", **PROBE)
    return runtime, None


def runtime_spec(runtime: str, dtype: str = "fp32") -> str:
    """The runtime string the allocators take: ``cuda`` with its dtype (``cuda-bf16``), the CPU runtimes as they
    are (they time in fp32; another dtype there is refused rather than ignored)."""
    if runtime == "cuda":
        return f"cuda-{dtype}"
    if dtype != "fp32":
        raise ConfigError(f"--latency-dtype {dtype} is timed on the GPU only; add --latency-runtime cuda or drop it")
    return runtime


def check_runtime(runtime: str, dtype: str = "fp32") -> str:
    """:func:`runtime_spec`, refused up front (before any training or pruning) when it asks for a GPU that this
    machine does not have."""
    spec = runtime_spec(runtime, dtype)
    if runtime == "cuda":
        gpu_device("cuda")
    return spec


def event_timer(device: torch.device) -> Timer:
    """Time ``fn`` on ``device``'s current stream between two CUDA events (synchronizes on the end event only)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timer(fn: Callable[[], Any]) -> float:
        stream = torch.cuda.current_stream(device)
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        return float(start.elapsed_time(end))

    return timer


def wall_timer(fn: Callable[[], Any]) -> float:
    """Wall-clock ms of one call: the stand-in for :func:`event_timer` where no GPU is (CPU runs of this code)."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def warm_until_stable(run: Callable[[], float], settings: CudaSettings) -> List[float]:
    """Run ``run`` in windows of ``settings.window`` until two successive window medians differ by less than
    ``settings.tolerance`` of the earlier one, at most ``settings.max_windows`` windows. Returns the medians.

    cuDNN autotuning, lazy allocations and clock ramp-up make the first runs at a shape slow by 10-1000x; a fixed
    count either wastes time on small models or stops early on big ones."""
    medians: List[float] = []
    for _ in range(settings.max_windows):
        medians.append(statistics.median(run() for _ in range(settings.window)))
        if len(medians) >= 2 and abs(medians[-1] - medians[-2]) < settings.tolerance * medians[-2]:
            break
    return medians


@contextmanager
def cuda_context(device: torch.device, settings: CudaSettings) -> Iterator[None]:
    """Inference mode, autocast at ``settings.dtype`` and cuDNN autotuning on for the block (restored after)."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        with ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if DTYPES[settings.dtype] is not None:
                stack.enter_context(torch.autocast(device.type, dtype=DTYPES[settings.dtype]))
            yield
    finally:
        torch.backends.cudnn.benchmark = previous


def gpu_device(device: Any = None) -> torch.device:
    """``device`` as a CUDA device (default ``cuda``), refused with the fix where none is visible."""
    dev = torch.device(device if device is not None else "cuda")
    if dev.type != "cuda":
        return dev  # a CPU run of this code (tests, dry runs) with an injected timer
    if not torch.cuda.is_available():
        raise ConfigError("latency runtime 'cuda' needs a CUDA device and none is visible; use --latency-runtime "
                          "eager (or ort) on this machine")
    return dev


def measure_cuda_latency(model: nn.Module, input_shape: InputLike, batch_sizes: Sequence[int] = (1, 128),
                         settings: CudaSettings = CudaSettings(), device: Any = None,
                         timer: Optional[Timer] = None) -> Tuple[Dict[int, float], Dict[int, float]]:
    """``(median_ms, iqr_ms)`` keyed by batch size: :func:`measure_cuda_latency_together` for one model."""
    return measure_cuda_latency_together([model], input_shape, batch_sizes, settings, device, timer)[0]


def measure_cuda_latency_together(models: Sequence[nn.Module], input_shape: InputLike,
                                  batch_sizes: Sequence[int] = (1, 128), settings: CudaSettings = CudaSettings(),
                                  device: Any = None, timer: Optional[Timer] = None,
                                  summary: Callable[[List[float]], float] = statistics.median,
                                  ) -> List[Tuple[Dict[int, float], Dict[int, float]]]:
    """Each model's ``(median_ms, iqr_ms)`` per batch size, warmed up until stable, then timed round-robin
    (alternating order). Models are borrowed onto ``device`` (default ``cuda``) and restored after; in
    channels-last format when ``settings.channels_last`` (restored after as well).

    ``timer``: default CUDA events on a GPU, the wall clock elsewhere (so CPU runs of this code work)."""
    dev = gpu_device(device)
    sizes = check_batch_sizes(batch_sizes)
    spec = input_spec(input_shape)
    timer = timer or (event_timer(dev) if dev.type == "cuda" else wall_timer)
    out: List[Tuple[Dict[int, float], Dict[int, float]]] = [({}, {}) for _ in models]
    with ExitStack() as stack:
        devs = [stack.enter_context(borrowed(m, dev)) for m in models]
        if settings.channels_last:
            for m in models:
                stack.enter_context(_channels_last(m))
        stack.enter_context(cuda_context(dev, settings))
        for batch in sizes:
            xs = [_layout(dummy_inputs(m, batch, spec, d), settings) for m, d in zip(models, devs)]
            for m, x in zip(models, xs):
                warm_until_stable(lambda: timer(lambda: m(*x)), settings)  # noqa: B023 - used right here
            runs = [lambda m=m, x=x: timer(lambda: m(*x)) for m, x in zip(models, xs)]
            for i, got in enumerate(round_robin(runs, settings.repeats)):
                out[i][0][batch], out[i][1][batch] = summary(got), _iqr(got)
    return out


def _layout(xs: Tuple[torch.Tensor, ...], settings: CudaSettings) -> Tuple[torch.Tensor, ...]:
    if not settings.channels_last:
        return xs
    return tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in xs)


@contextmanager
def _channels_last(model: nn.Module) -> Iterator[None]:
    """4-d parameters in channels-last format for the block, back to contiguous after (same values)."""
    params = [p for p in model.parameters() if p.dim() == 4]
    was = [p.is_contiguous() for p in params]
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for p, contiguous in zip(params, was):
            if contiguous:
                p.data = p.data.contiguous()
