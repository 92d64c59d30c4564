"""Borrow a model for measuring and give it back exactly as it was (train/eval flags per module, device)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from ..errors import ConfigError


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """Validate a per-sample shape such as ``(3, 64, 64)``; the batch dimension is added by the caller."""
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"input_shape {input_shape!r} is not a tuple of ints; use e.g. (3, 64, 64)") from None
    if not shape or any(s <= 0 for s in shape):
        raise ConfigError(f"input_shape {shape} must be non-empty positive sizes without batch, e.g. (3, 64, 64)")
    return shape


def check_batch_sizes(batch_sizes: Sequence[int]) -> tuple[int, ...]:
    """Positive, de-duplicated, sorted batch sizes (the largest one is used for peak memory)."""
    sizes = tuple(sorted({int(b) for b in batch_sizes}))
    if not sizes or sizes[0] <= 0:
        raise ConfigError(f"batch_sizes {tuple(batch_sizes)} must be one or more positive ints, e.g. (1, 32)")
    return sizes


def model_device(model: nn.Module) -> torch.device:
    """Device of the first parameter or buffer; CPU for a module that holds no tensors."""
    for t in list(model.parameters(recurse=True)) + list(model.buffers(recurse=True)):
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """Floating dtype of the first floating parameter, so dummy inputs match a half/bfloat model."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def dummy_input(model: nn.Module, batch: int, input_shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A random batch; values do not matter for size or speed, only shape, dtype and device."""
    return torch.randn((batch, *input_shape), dtype=model_dtype(model), device=device)


@contextmanager
def borrowed(model: nn.Module, device: str | torch.device | None = None) -> Iterator[torch.device]:
    """Put ``model`` in eval mode (and on ``device``) for the block; restore each module's flag and the device after.

    Flags are restored per module because a model may be "train" overall with frozen, eval-mode parts.
    """
    flags = {m: m.training for m in model.modules()}
    original = model_device(model)
    target = original if device is None else torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(target)!r} asked for CUDA but none is available; use device='cpu'")
    try:
        model.eval()
        if target != original:
            model.to(target)
        yield target
    finally:
        if target != original:
            model.to(original)
        for m, was_training in flags.items():
            m.training = was_training
