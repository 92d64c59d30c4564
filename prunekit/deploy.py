"""The inference form a (pruned) model is run in: one call turns the training-shaped ``nn.Module`` into what a
deployment runs.

Pruning removes MACs; the time follows less well: ops whose cost is linear in the width (BatchNorm, activations,
pooling, depthwise convolutions) shrink slower than the MACs, and eager PyTorch runs each of them as its own pass
over memory. A form that folds or fuses them speeds the dense and the pruned model up alike
(results/structured_speed/log.md, "Eager PyTorch and the deploy forms"), so a speed claim should name its form. The forms, cheapest to set up first:

- ``eager``: the model as built (eval mode).
- ``fold_bn``: BatchNorm folded into the preceding convolution / linear (torch.fx ``fuse``): one op less per conv.
- ``channels_last``: ``fold_bn`` with weights and inputs in channels-last memory format (oneDNN's native layout on
  the CPU, no layout reorders around each convolution).
- ``compile``: ``channels_last``, then ``torch.compile`` (inductor, weights frozen as constants so convolutions use
  prepacked oneDNN weights, elementwise ops fused into C++ kernels; needs a C++ compiler). One compile per input
  shape, done at the first call.
- ``ort``: exported to ONNX and run by ONNX Runtime (``prunekit.export.OrtModule``), one input shape.
- ``cuda_graph`` (GPU): ``channels_last``, then each input shape's forward captured once as a CUDA graph and
  replayed: one launch instead of one per op. At small batches a GPU spends most of an eager forward waiting on
  kernel launches, so the pruned model's fewer MACs show up as time only in this form (or ``compile``). One
  capture per input shape and autocast dtype, done at the first call; the output tensor is the graph's static one,
  overwritten by the next call (copy it to keep it).

``compile`` works on a GPU as on the CPU (inductor generates Triton kernels there).

Every form is checked against the eager model on ``example_inputs`` (outputs within ``atol + rtol * max|ref|``),
so a form that computes something else fails here, not in a benchmark.

    fast = prepare(pruned, "compile", torch.randn(1, 3, 224, 224))
    logits = fast(x)
"""
from __future__ import annotations

import copy
import types
from typing import Any, Callable, Dict

import torch
from torch import nn

from .errors import ConfigError
from .export import OrtModule
from .measure import InputSpec

FORMS = ("eager", "fold_bn", "channels_last", "compile", "ort", "cuda_graph")
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtypes a form is checked under


class ChannelsLast(nn.Module):
    """Runs ``model`` (already converted) on channels-last inputs; converting inside keeps callers unchanged."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with each BatchNorm after a conv / linear folded into its weights."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(copy.deepcopy(model).eval())
    except Exception as exc:  # noqa: BLE001 - torch.fx raises many types; the user needs one clear message
        raise ConfigError(f"deploy form 'fold_bn' needs a torch.fx-traceable model; {type(model).__name__} is not "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                          "use form='eager' or 'ort', or make its forward free of data-dependent Python "
                          "control flow") from exc


def channels_last(model: nn.Module) -> nn.Module:
    """``fold_bn`` in channels-last memory format, inputs converted on the way in."""
    return ChannelsLast(fold_bn(model).to(memory_format=torch.channels_last))


def compiled(model: nn.Module) -> nn.Module:
    """``channels_last``, then ``torch.compile`` with inductor and frozen weights (compiles lazily, per input shape).

    Channels-last first: on a 1-thread AVX2 CPU it ran resnet18 13% and mobilenet_v2 0-25% faster than the
    compiled contiguous model (inductor's pooling and elementwise kernels vectorise over channels)."""
    wrapper = channels_last(model)
    # Dynamo caches compiled graphs per code object, at most 8 (recompile_limit), and every model folded by
    # torch.fx is a new class, so the 9th model prepared in one process would silently run eager. A private copy of
    # the wrapper's forward code gives each compiled model its own cache.
    code = ChannelsLast.forward.__code__.replace()
    forward = types.FunctionType(code, ChannelsLast.forward.__globals__, "forward")
    wrapper.forward = types.MethodType(forward, wrapper)  # type: ignore[method-assign]
    return torch.compile(wrapper, backend="inductor", dynamic=False, options={"freezing": True})


class CudaGraphed(nn.Module):
    """Replays one CUDA graph per (input shape, autocast dtype, inference mode), captured at the first call with that
    key.

    Capture follows torch's recipe: warm-up runs on a side stream (cuDNN autotuning happens there), then the
    forward on a static input is recorded. Autocast's weight cache is off during capture, so the weight casts are
    part of the graph rather than tensors freed when the caller's autocast block ends."""

    def __init__(self, model: nn.Module, warmup: int = 3):
        super().__init__()
        self.model = model
        self.warmup = warmup
        self._graphs: Dict[tuple, tuple] = {}

    def forward(self, x: torch.Tensor) -> Any:
        key = (tuple(x.shape), x.dtype, torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda"),
               torch.is_inference_mode_enabled())  # an inference-mode capture cannot be fed outside that mode
        if key not in self._graphs:
            self._graphs[key] = self._capture(x)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out

    def _capture(self, x: torch.Tensor) -> tuple:
        autocast = torch.is_autocast_enabled("cuda")
        dtype = torch.get_autocast_dtype("cuda")
        static_in = x.clone()
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.autocast("cuda", dtype=dtype, enabled=autocast, cache_enabled=False):
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self.model(static_in)
            torch.cuda.current_stream(x.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.model(static_in)
        return graph, static_in, static_out


def cuda_graphed(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``channels_last``, then replayed as CUDA graphs (:class:`CudaGraphed`); the model and input on a GPU."""
    if example.device.type != "cuda" or any(p.device.type != "cuda" for p in model.parameters()):
        raise ConfigError("deploy form 'cuda_graph' replays CUDA graphs: put the model and the example inputs on a "
                          "GPU (e.g. --device cuda), or use form='compile' / 'channels_last' on the CPU")
    return CudaGraphed(channels_last(model))


def _ort(model: nn.Module, example: torch.Tensor) -> nn.Module:
    return OrtModule(model.eval(), InputSpec.from_example(example))


BUILDERS: Dict[str, Callable[[nn.Module, torch.Tensor], nn.Module]] = {
    "eager": lambda model, example: model.eval(),
    "fold_bn": lambda model, example: fold_bn(model),
    "channels_last": lambda model, example: channels_last(model),
    "compile": lambda model, example: compiled(model),
    "ort": _ort,
    "cuda_graph": cuda_graphed,
}


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and out:
        return _first_tensor(out[0])
    if isinstance(out, dict) and out:
        return _first_tensor(next(iter(out.values())))
    raise ConfigError(f"the model returns {type(out).__name__}; deploy forms are checked on a tensor output")


def _tf32(example: torch.Tensor) -> bool:
    """fp32 convolutions on a GPU run in TF32 by default (10-bit mantissa): two algorithms for the same layer (NCHW
    vs channels-last, BN folded or not) then differ by about 1e-3 per layer, more than the fp32 tolerance."""
    return example.is_cuda and (torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)


def prepare(model: nn.Module, form: str, example_inputs: Any, atol: float = 1e-4, rtol: float = 1e-3,
            autocast: str = "fp32") -> nn.Module:
    """The module to run ``model`` in deploy ``form`` (one of ``FORMS``), checked on ``example_inputs``.

    ``model`` is not modified (``eager`` returns it in eval mode). ``example_inputs`` is a tensor (or a one-tensor
    tuple) of the shape the model will see; ``compile`` compiles for it here, ``ort`` exports for its per-sample
    shape, ``cuda_graph`` captures for it. ``autocast`` (``bf16`` / ``fp16``): the check runs the model and the
    form under that autocast on the example's device, at a half-precision tolerance (``rtol`` at least 5e-2:
    folding BatchNorm rounds the folded weights to the half type; 2e-2 for fp32 on a GPU with TF32 on). Raises ``ConfigError`` for an unknown form, a
    model the form cannot handle, or outputs that differ.
    """
    if autocast != "fp32" and autocast not in HALF:
        raise ConfigError(f"autocast={autocast!r}: use fp32, {' or '.join(HALF)}")
    if form not in BUILDERS:
        raise ConfigError(f"deploy form {form!r} is unknown; use one of {', '.join(FORMS)}")
    example = example_inputs[0] if isinstance(example_inputs, (tuple, list)) else example_inputs
    if not isinstance(example, torch.Tensor):
        raise ConfigError(f"example_inputs must be a tensor (or a tuple holding one), got {type(example).__name__}")
    model = model.eval()
    half = torch.autocast(example.device.type, dtype=HALF.get(autocast), enabled=autocast in HALF)
    rtol = max(rtol, 5e-2) if autocast in HALF else max(rtol, 2e-2) if _tf32(example) else rtol
    with torch.inference_mode(), half:
        reference = _first_tensor(model(example))
    deployed = BUILDERS[form](model, example)
    try:
        with torch.inference_mode(), half:
            got = _first_tensor(deployed(example))
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - compile / ORT failures surface at the first call
        raise ConfigError(f"deploy form {form!r} failed to run {type(model).__name__} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); use form='eager' or 'fold_bn'"
                          + ("; 'compile' needs a working C++ compiler (gcc) for inductor" if form == "compile"
                             else "")) from exc
    bound = atol + rtol * float(reference.abs().max()) if reference.numel() else atol
    diff = float((got.float() - reference.float()).abs().max()) if reference.numel() else 0.0
    if got.shape != reference.shape or not diff <= bound:
        raise ConfigError(f"deploy form {form!r} changes the outputs of {type(model).__name__} (max |diff| {diff:.3g}, "
                          f"allowed {bound:.3g}, shapes {tuple(got.shape)} vs {tuple(reference.shape)}); "
                          "use form='eager'")
    return deployed
