"""Static size of a model: parameter counts, what pruning zeroed, and compute per sample.

MACs/FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (aten-level, so any architecture that runs
works, no per-layer table). What it counts: matrix products (mm, addmm, bmm, baddbmm, so Linear and attention
projections), convolutions (any groups/stride/dilation), and scaled-dot-product attention. What it does NOT
count: bias additions, normalisation, activations, pooling, softmax, residual adds and other elementwise ops;
these are small next to the products in CNNs and ViTs, and leaving them out matches the usual published
"MACs" numbers (e.g. resnet18 at 224px = 1.81 G). FLOPs = 2 x MACs for every counted op (one multiply and one
add per MAC), so ``macs = flops // 2``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .state import InputLike, borrowed, dummy_inputs, input_spec


def count_params(model: nn.Module) -> int:
    """All parameter entries, shared tensors counted once (tied embeddings are one tensor on disk)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def count_nonzero(model: nn.Module) -> int:
    """Parameter entries that are not exactly zero: unstructured pruning zeroes weights in place, so this drops.

    Counts the stored parameters; a mask kept beside dense weights (``torch.nn.utils.prune``'s
    ``weight_orig`` + ``weight_mask``) is not seen until it is made permanent with ``prune.remove``.
    """
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += int(torch.count_nonzero(p.detach()).item())
    return total


def _cpu_flash_sdpa_flop(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    # torch's table covers the CUDA attention kernels but not the CPU flash kernel that F.scaled_dot_product_attention
    # picks on CPU; same maths, same count.
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _extra_formulas() -> dict[Any, Any]:
    ops: dict[Any, Any] = {}
    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None:
        ops[cpu_flash] = _cpu_flash_sdpa_flop
    return ops


def count_macs(model: nn.Module, input_shape: InputLike = (3, 64, 64)) -> tuple[int, int]:
    """``(macs, flops)`` of one forward pass at batch 1, on the model's own device, in eval mode.

    ``input_shape`` is a per-sample image shape ``(3, H, W)`` or an :class:`~prunekit.measure.state.InputSpec`
    (``InputSpec.from_example(input_ids)`` for a token model). A model on the meta device is counted from shapes
    alone.

    The fused multi-head-attention fast path of ``nn.MultiheadAttention`` is switched off while counting, because
    its single fused kernel is invisible to the counter (vit_b_16 would lose a third of its MACs); the maths is
    the same, so the count is that of the model as it runs.
    """
    spec = input_spec(input_shape)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    with borrowed(model) as device:
        x = dummy_inputs(model, 1, spec, device)
        try:
            torch.backends.mha.set_fastpath_enabled(False)
            try:
                flops = _count_flops(model, x, grad=False)
            except (RuntimeError, AssertionError) as e:
                # The counter's module tracker hooks autograd; some timm models (pit, cait) then need grad mode.
                if "gradient function" not in str(e):
                    raise
                flops = _count_flops(model, x, grad=True)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
    return flops // 2, flops


def _count_flops(model: nn.Module, x: tuple[torch.Tensor, ...], grad: bool) -> int:
    counter = FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    with torch.set_grad_enabled(grad), counter:
        model(*x)
    return int(counter.get_total_flops())
