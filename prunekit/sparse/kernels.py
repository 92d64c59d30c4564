"""Sparse inference where it pays: swap a layer for a torch sparse (CSR/BSR) kernel only if measured faster.

Sparse kernels beat dense BLAS only at high sparsity and for some shapes; on a CPU dense often wins (a dense
GEMM runs near peak, a sparse one is bound by index loads). So nothing is assumed: each candidate layer is timed,
dense against each sparse kind, on the input it really sees (captured from ``example_input``), and replaced
only when the sparse kernel is at least ``min_speedup`` times faster and gives the same output. The per-layer
decisions (kind, measured times, sparsity) are plain JSON, stored in the checkpoint and replayed on load by
:func:`apply_decisions` without re-timing.

    model, decisions = sparsify_for_inference(model, masks, torch.randn(1, 3, 224, 224))

Sparse layers hold only the sparse weight (CSR with int32 indices: 8 bytes per nonzero), so memory shrinks too;
their ``state_dict`` still holds a dense ``weight``, so checkpoints stay interchangeable. Inference only (no
autograd through the sparse weight), CPU.
"""
from __future__ import annotations

import statistics
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ModelError
from .masks import Masks

SPARSE_KINDS = ("csr", "bsr")
DECISIONS_VERSION = 1


def to_sparse_matrix(w2d: torch.Tensor, kind: str, blocksize: int = 4) -> torch.Tensor:
    """A 2-D dense matrix as CSR (int32 indices, the MKL-friendly layout) or BSR (square blocks)."""
    w2d = w2d.detach().contiguous()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse (CSR|BSR) tensor support is in beta")
        if kind == "csr":
            csr = w2d.to_sparse_csr()
            return torch.sparse_csr_tensor(csr.crow_indices().int(), csr.col_indices().int(), csr.values(),
                                           size=w2d.shape, check_invariants=False)  # built from dense: valid
        if kind == "bsr":
            if w2d.shape[0] % blocksize or w2d.shape[1] % blocksize:
                raise ConfigError(f"BSR blocksize {blocksize} does not divide the weight shape {tuple(w2d.shape)}")
            return w2d.to_sparse_bsr((blocksize, blocksize))
    raise ConfigError(f"sparse kind {kind!r} is not one of {SPARSE_KINDS}")


def sparse_bytes(w: torch.Tensor) -> int:
    """Bytes a sparse matrix holds (values + indices)."""
    if w.layout == torch.sparse_csr:
        parts = (w.values(), w.crow_indices(), w.col_indices())
    elif w.layout == torch.sparse_bsr:
        parts = (w.values(), w.crow_indices(), w.col_indices())
    else:
        parts = (w,)
    return sum(p.numel() * p.element_size() for p in parts)


class _SparseWeight(nn.Module):
    """Holds a sparse weight matrix; its state_dict shows the dense ``weight`` (and ``bias``) as before."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], kind: str, blocksize: int) -> None:
        super().__init__()
        self.kind, self.blocksize, self.weight_shape = kind, blocksize, tuple(weight.shape)
        self.register_buffer("weight_sparse", to_sparse_matrix(weight.reshape(weight.shape[0], -1), kind,
                                                               blocksize), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.register_buffer("_bias_col", None if bias is None else bias.detach().reshape(-1, 1).clone(),
                             persistent=False)

    def dense_weight(self) -> torch.Tensor:
        return self.weight_sparse.to_dense().reshape(self.weight_shape)

    def _matmul(self, cols: torch.Tensor) -> torch.Tensor:
        """weight @ cols (+ bias per row), cols: [in, N] -> [out, N]."""
        if self._bias_col is not None:
            return torch.addmm(self._bias_col, self.weight_sparse, cols)
        return torch.addmm(cols.new_zeros(1, 1), self.weight_sparse, cols)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.dense_weight()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        weight = state_dict.get(prefix + "weight")
        if weight is None:
            missing_keys.append(prefix + "weight")
            return
        self.weight_sparse = to_sparse_matrix(weight.reshape(weight.shape[0], -1), self.kind, self.blocksize)
        if self.bias is not None and prefix + "bias" in state_dict:
            self.bias = state_dict[prefix + "bias"].detach().clone()
            self._bias_col = self.bias.reshape(-1, 1)


class SparseLinear(_SparseWeight):
    def __init__(self, linear: nn.Linear, kind: str = "csr", blocksize: int = 4) -> None:
        super().__init__(linear.weight, linear.bias, kind, blocksize)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + b`` with the sparse weight, over any leading dims of ``x``."""
        y = self._matmul(x.reshape(-1, self.in_features).t())
        return y.t().reshape(*x.shape[:-1], self.out_features)


class SparseConv2d(_SparseWeight):
    """Convolution as im2col + sparse matmul (1x1 stride-1 convolutions skip the im2col)."""

    def __init__(self, conv: nn.Conv2d, kind: str = "csr", blocksize: int = 4) -> None:
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ConfigError(f"{conv} cannot run as a sparse matmul (grouped, string padding or non-zero padding "
                              f"mode); keep it dense")
        super().__init__(conv.weight, conv.bias, kind, blocksize)
        self.out_channels = conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution as a sparse weight times the unfolded input (im2col; a plain reshape for 1x1)."""
        b, c, h, w = x.shape
        kh, kw = self.kernel_size
        oh = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        pointwise = (kh, kw) == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)
        if pointwise:
            cols = x.reshape(b, c, h * w)
        else:
            cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # [b, c*kh*kw, L]
        cols = cols.transpose(0, 1).reshape(cols.shape[1], -1)  # [c*kh*kw, b*L]
        y = self._matmul(cols)  # [out, b*L]
        return y.reshape(self.out_channels, b, oh, ow).transpose(0, 1)


def sparse_module(module: nn.Module, kind: str, blocksize: int = 4) -> nn.Module:
    """A sparse-kernel copy (``kind`` "csr" or "bsr") of a Linear or Conv2d; raises ConfigError for other layers."""
    if isinstance(module, nn.Linear):
        return SparseLinear(module, kind, blocksize)
    if isinstance(module, nn.Conv2d):
        return SparseConv2d(module, kind, blocksize)
    raise ConfigError(f"no sparse kernel for {type(module).__name__}; only Linear and Conv2d")


# -- timing ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def time_candidates(fns: Dict[str, Callable[[], Any]], repeats: int = 15, min_seconds: float = 0.002,
                    stat: str = "min", clock: str = "auto") -> Dict[str, float]:
    """Milliseconds per call of each candidate, timed in interleaved rounds so machine load hits all alike.

    ``stat="min"`` (default) keeps the fastest round: on a shared machine interference only ever adds time, so
    the minimum is the least biased estimate of a kernel's own cost; ``"median"`` is also available.
    ``clock="auto"`` uses this thread's CPU time when torch runs single-threaded (then all the work happens on
    this thread, and time spent descheduled by other processes is not counted), wall time otherwise.
    """
    if stat not in ("min", "median"):
        raise ConfigError(f"stat={stat!r} must be 'min' or 'median'")
    if clock not in ("auto", "wall", "cpu"):
        raise ConfigError(f"clock={clock!r} must be 'auto', 'wall' or 'cpu'")
    if clock == "auto":
        clock = "cpu" if torch.get_num_threads() == 1 else "wall"
    now = time.thread_time if clock == "cpu" else time.perf_counter
    loops = {}
    for name, fn in fns.items():
        fn()  # warm up (allocations, MKL handles)
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < min_seconds or n == 0:
            fn()
            n += 1
        loops[name] = n
    samples: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            start = now()
            for _ in range(loops[name]):
                fn()
            samples[name].append((now() - start) * 1e3 / loops[name])
    pick = min if stat == "min" else statistics.median
    return {name: pick(s) for name, s in samples.items()}


def _capture_inputs(model: nn.Module, names: Sequence[str], example_input: Any) -> Dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    seen: Dict[str, torch.Tensor] = {}
    hooks = [modules[n].register_forward_pre_hook(
        lambda mod, args, n=n: seen.setdefault(n, args[0].detach())) for n in names]
    try:
        with torch.no_grad():
            model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _candidates(model: nn.Module, masks: Optional[Masks]) -> List[str]:
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1
                                              and module.padding_mode == "zeros"
                                              and not isinstance(module.padding, str)):
            if masks is None or f"{name}.weight" in masks:
                names.append(name)
    return names


@torch.no_grad()
def sparsify_for_inference(model: nn.Module, masks: Optional[Masks], example_input: Any,
                           kinds: Sequence[str] = ("csr",), min_speedup: float = 1.1, repeats: int = 15,
                           blocksize: int = 4) -> Tuple[nn.Module, Dict[str, Any]]:
    """Replace each masked Linear/Conv2d by a sparse kernel only where measured ``min_speedup`` x faster.

    ``masks=None`` considers every Linear/Conv2d. The model is changed in place (and returned) and put in eval
    mode. Returns ``(model, decisions)``; ``decisions`` is JSON for :func:`apply_decisions`.
    """
    for kind in kinds:
        if kind not in SPARSE_KINDS:
            raise ConfigError(f"kind {kind!r} is not one of {SPARSE_KINDS}")
    if min_speedup < 1.0:
        raise ConfigError(f"min_speedup={min_speedup} < 1 would pick a slower kernel; use >= 1.0")
    model.eval()
    names = _candidates(model, masks)
    inputs = _capture_inputs(model, names, example_input)
    layers: Dict[str, Dict[str, Any]] = {}
    for name in names:
        module, x = model.get_submodule(name), inputs.get(name)
        if x is None:
            continue  # not reached by the example input
        weight = module.weight.detach()
        reference = module(x)
        fns, sparse = {"dense": lambda m=module: m(x)}, {}
        for kind in kinds:
            try:
                sparse[kind] = sparse_module(module, kind, blocksize)
            except ConfigError:
                continue
            scale = reference.abs().max().clamp_min(1e-6)
            if not torch.allclose(sparse[kind](x), reference, rtol=1e-4, atol=1e-5 * float(scale)):
                del sparse[kind]  # kernel disagrees with dense: never use it
                continue
            fns[kind] = lambda m=sparse[kind]: m(x)
        times = time_candidates(fns, repeats)
        best = min(times, key=times.get)
        if best != "dense" and times["dense"] / times[best] < min_speedup:
            best = "dense"
        layers[name] = {"kind": best, "type": type(module).__name__, "times_ms": {k: round(v, 4) for k, v in
                                                                                 times.items()},
                        "speedup": round(times["dense"] / times[best], 3),
                        "sparsity": round(float((weight == 0).float().mean()), 4),
                        "input_shape": list(x.shape), "dense_bytes": weight.numel() * weight.element_size(),
                        "sparse_bytes": sparse_bytes(sparse[best].weight_sparse) if best != "dense" else None}
        if best != "dense":
            _set_module(model, name, sparse[best])
    decisions = {"version": DECISIONS_VERSION, "torch": torch.__version__, "threads": torch.get_num_threads(),
                 "clock": "thread cpu time" if torch.get_num_threads() == 1 else "wall time",
                 "min_speedup": min_speedup, "blocksize": blocksize, "layers": layers}
    return model, decisions


def apply_decisions(model: nn.Module, decisions: Dict[str, Any]) -> nn.Module:
    """Replay recorded decisions (e.g. from a checkpoint) without timing: swap the layers marked sparse."""
    if not isinstance(decisions, dict) or not isinstance(decisions.get("layers"), dict):
        raise ModelError("sparse-kernel decisions must be a dict with a 'layers' entry, as sparsify_for_inference "
                         "returns")
    blocksize = int(decisions.get("blocksize", 4))
    for name, choice in decisions["layers"].items():
        kind = choice.get("kind") if isinstance(choice, dict) else None
        if kind == "dense":
            continue
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ModelError(f"sparse-kernel decision names layer {name!r}, which this model lacks") from None
        if isinstance(module, _SparseWeight):
            continue
        _set_module(model, name, sparse_module(module, kind, blocksize))
    return model.eval()
