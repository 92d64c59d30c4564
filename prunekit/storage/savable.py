"""What a checkpoint can hold, checked before any work is done: a job that prunes for an hour and then cannot save
its result has wasted the hour. ``check_savable(model)`` raises the error ``save`` would raise, cheaply (no tensor
is copied), so a front door calls it first.

A checkpoint stores named tensors and a JSON description, never pickle: a module whose state holds anything else
(``get_extra_state`` objects, quantized or sparse tensors, weights on the meta device) cannot be written.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ..apply.structured_state import structure_of
from ..errors import CheckpointError
from .schema import check_arch, check_structure

# what safetensors stores (and load can hand back bit-exact)
SAVABLE_DTYPES = {torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
                  torch.int8, torch.uint8, torch.bool, getattr(torch, "float8_e4m3fn", torch.float32),
                  getattr(torch, "float8_e5m2", torch.float32)}


def module_qualname(model: nn.Module) -> str:
    """``package.module.Class`` of ``model``: what a checkpoint records of a model prunekit did not build."""
    return f"{type(model).__module__}.{type(model).__qualname__}"


def check_savable(model: nn.Module) -> None:
    """Raise the :class:`CheckpointError` ``prunekit.save(model, ...)`` would raise, without writing anything.

    Refused: a non-module, a prunekit architecture record a checkpoint may not carry (``check_arch``), a shape
    attribute whose value a checkpoint cannot record (``check_structure``), and any state-dict entry that is not a
    plain dense tensor of a dtype safetensors stores.
    """
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"prunekit.save needs an nn.Module, got {type(model).__name__}")
    arch = getattr(model, "prunekit_arch", None)
    if arch is not None:
        check_arch(arch, "checkpoint")  # refuse to write a file that load() would refuse
    name = module_qualname(model)
    for key, value in model.state_dict(keep_vars=True).items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{name}: state {key!r} is a {type(value).__name__}, not a tensor; a checkpoint "
                                  "holds tensors only (no pickle): keep that state in a buffer, or drop the "
                                  "module's get_extra_state")
        problem = _tensor_problem(value)
        if problem:
            raise CheckpointError(f"{name}: tensor {key!r} {problem}, which a checkpoint cannot store; "
                                  "convert the model back to dense float weights before saving")
    check_structure(structure_of(model), f"checkpoint of {name}")


def _tensor_problem(t: torch.Tensor) -> str:
    if t.is_quantized:
        return f"is quantized ({t.dtype})"
    if t.layout != torch.strided:
        return f"is a {t.layout} tensor"
    if t.device.type == "meta":
        return "has no data (it is on the meta device)"
    if t.dtype not in SAVABLE_DTYPES:
        return f"has dtype {t.dtype}"
    return ""


def tied_names(model: nn.Module) -> Dict[str, str]:
    """``{alias: source}`` for parameters and buffers that are one tensor under two names (GPT-2's ``lm_head.weight``
    is ``transformer.wte.weight``); the source is the name ``named_parameters()`` keeps."""
    tied: Dict[str, str] = {}
    for named in (model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False)):
        first: Dict[int, str] = {}
        for name, t in named:
            if t is None:
                continue
            if id(t) in first:
                tied[name] = first[id(t)]
            else:
                first[id(t)] = name
    return tied
