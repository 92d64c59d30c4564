"""Borrow a model for measuring and give it back exactly as it was (train/eval flags per module, device); and what
a model is fed while measured: :class:`InputSpec`, per input a per-sample shape and a dtype.

A CNN takes one float image, a language model int64 token ids (``[batch, seq]``), some models several tensors.
Every measuring and exporting function takes either the old per-sample image shape ``(3, 64, 64)`` (one float
input, unchanged behaviour) or an ``InputSpec``:

    spec = InputSpec.from_example(input_ids)        # ((128,), ("int64",))
    count_macs(bert, spec); export_onnx(model, "m.onnx", spec)
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import ConfigError

# dtype names an input may have (as ``str(torch.float32)`` without the ``torch.``): what a file may ask for, too
INPUT_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
MAX_INPUTS = 16
MAX_INPUT_DIMS = 8


@dataclass(frozen=True)
class InputSpec:
    """The inputs of a model, without the batch dimension: ``shapes[i]`` and ``dtypes[i]`` of positional input i.

    Float inputs are made in the model's own float dtype (a half model gets half inputs); integer inputs are zeros,
    which every token-id, type-id and index input accepts (token id 0 always exists); bool inputs are all True.
    """

    shapes: Tuple[Tuple[int, ...], ...]
    dtypes: Tuple[str, ...]

    def __post_init__(self) -> None:
        shapes = tuple(_sample_shape(s) for s in self.shapes)
        dtypes = tuple(str(d).removeprefix("torch.") for d in self.dtypes)
        if not 1 <= len(shapes) <= MAX_INPUTS or len(dtypes) != len(shapes):
            raise ConfigError(f"an input spec needs 1..{MAX_INPUTS} inputs with one dtype each, got {len(shapes)} "
                              f"shapes and {len(dtypes)} dtypes")
        bad = [d for d in dtypes if d not in INPUT_DTYPES]
        if bad:
            raise ConfigError(f"input dtype {bad[0]!r} is not one prunekit feeds; use one of {', '.join(INPUT_DTYPES)}")
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "dtypes", dtypes)

    @classmethod
    def image(cls, shape: Sequence[int]) -> "InputSpec":
        """One float input of per-sample ``shape``, e.g. ``(3, 224, 224)``: what the old ``input_shape`` meant."""
        return cls((check_input_shape(shape),), ("float32",))

    @classmethod
    def from_example(cls, example: Any) -> "InputSpec":
        """The spec of ``example``: a tensor or a tuple/list of tensors, each with a leading batch dimension."""
        inputs = tuple(example) if isinstance(example, (tuple, list)) else (example,)
        for i, x in enumerate(inputs):
            if not isinstance(x, torch.Tensor) or x.dim() < 1:
                what = type(x).__name__ if not isinstance(x, torch.Tensor) else "a 0-d tensor"
                raise ConfigError(f"example input {i} is {what}; give tensors with a batch dimension, e.g. "
                                  "torch.randn(1, 3, 224, 224) or input_ids of shape [1, seq]")
        return cls(tuple(tuple(x.shape[1:]) for x in inputs), tuple(str(x.dtype) for x in inputs))

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "InputSpec":
        """Inverse of :meth:`to_dict` (``{"shapes": [[...]], "dtypes": [...]}``); ConfigError for anything else."""
        if not isinstance(d, dict) or not isinstance(d.get("shapes"), list) or not isinstance(d.get("dtypes"), list):
            raise ConfigError(f"an input record is {{'shapes': [[...]], 'dtypes': [...]}}, got {d!r:.80}")
        return cls(tuple(tuple(s) if isinstance(s, list) else s for s in d["shapes"]), tuple(d["dtypes"]))

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON: per-sample shapes (no batch dimension) and dtype names."""
        return {"shapes": [list(s) for s in self.shapes], "dtypes": list(self.dtypes)}

    @property
    def is_image(self) -> bool:
        """One floating input of shape (C, H, W)."""
        return len(self.shapes) == 1 and len(self.shapes[0]) == 3 and _is_float(self.dtypes[0])

    def label(self) -> str:
        """``3x224x224``, or ``128 int64`` for a non-float input; several inputs joined by ``, ``."""
        return ", ".join("x".join(str(d) for d in s) + ("" if _is_float(t) else f" {t}")
                         for s, t in zip(self.shapes, self.dtypes))

    def make(self, batch: int, device: Union[str, torch.device] = "cpu",
             float_dtype: torch.dtype | None = None) -> Tuple[torch.Tensor, ...]:
        """One batch of inputs: random floats (in ``float_dtype`` when given), zeros for ints, True for bools."""
        out = []
        for shape, name in zip(self.shapes, self.dtypes):
            size = (int(batch), *shape)
            if _is_float(name):
                out.append(torch.randn(size, dtype=float_dtype or getattr(torch, name), device=device))
            elif name == "bool":
                out.append(torch.ones(size, dtype=torch.bool, device=device))
            else:
                out.append(torch.zeros(size, dtype=getattr(torch, name), device=device))
        return tuple(out)


InputLike = Union[InputSpec, Sequence[int]]


def input_spec(inputs: InputLike) -> InputSpec:
    """``inputs`` as an :class:`InputSpec`: an InputSpec as is, a per-sample shape such as ``(3, 64, 64)`` as one float
    input of that shape."""
    return inputs if isinstance(inputs, InputSpec) else InputSpec.image(inputs)


def _is_float(name: str) -> bool:
    return name.startswith(("float", "bfloat"))


def _sample_shape(shape: Any) -> Tuple[int, ...]:
    try:
        dims = tuple(shape)
    except TypeError:
        raise ConfigError(f"input shape {shape!r} is not a sequence of sizes; use e.g. (3, 64, 64) or (128,)") \
            from None
    if len(dims) > MAX_INPUT_DIMS or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ConfigError(f"input shape {dims} must be at most {MAX_INPUT_DIMS} positive int sizes without the batch "
                          "dimension, e.g. (3, 64, 64) or (128,)")
    return dims


def parse_input_size(text: str, recorded: InputSpec | None = None) -> InputSpec:
    """The ``--input-size`` flag: per-sample shapes, dims joined by ``x``, inputs by ``,`` (``3x224x224``; ``128`` for
    128 token ids). The dtypes are the recorded ones (float without a record). A lone number for a recorded image
    input means that many pixels square at its channels (``224`` -> ``3x224x224``)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        shapes = [tuple(int(d) for d in p.lower().split("x")) for p in parts]
    except ValueError:
        raise ConfigError(f"--input-size {text!r}: give per-sample sizes joined by 'x', inputs by ',' (e.g. "
                          "3x224x224, 224 for a square image, or 128 for 128 token ids)") from None
    if recorded is not None and len(shapes) != len(recorded.shapes):
        raise ConfigError(f"--input-size {text!r} gives {len(shapes)} input(s) but the model takes "
                          f"{len(recorded.shapes)} ({recorded.label()}); give one shape per input, joined by ','")
    if recorded is not None and recorded.is_image and len(shapes[0]) == 1:
        shapes = [(recorded.shapes[0][0], shapes[0][0], shapes[0][0])]
    dtypes = recorded.dtypes if recorded is not None else ("float32",) * len(shapes)
    return InputSpec(tuple(shapes), dtypes)


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


def dummy_inputs(model: nn.Module, batch: int, inputs: InputLike, device: torch.device) -> Tuple[torch.Tensor, ...]:
    """The positional inputs of one batch for ``inputs`` (a spec or an image shape), floats in the model's dtype."""
    return input_spec(inputs).make(batch, device, model_dtype(model))


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
