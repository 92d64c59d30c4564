"""Dependency graph: which parameter slices must be removed together.

    graph = build_graph(model, torch.randn(1, 3, 224, 224))
    print(graph)               # one line per group: key, channel count, number of coupled slices

See trace.py for how the model is traced (a runtime TorchFunctionMode trace, not torch.fx) and groups.py for
what a Group holds.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from ..errors import PrunekitError
from .groups import DependencyGraph, Group, Member, build_groups, within
from .run import run_trace

__all__ = ["build_graph", "DependencyGraph", "Group", "Member", "single_thread", "within"]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the many tiny tensor ops of tracing/planning on one thread.

    Intra-op threads only add synchronisation cost to ops this small; on a busy machine they can make
    planning 100x slower. The previous thread count is restored on exit.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def build_graph(model: nn.Module, example_inputs: Any, ignore: Iterable[str] = ()) -> DependencyGraph:
    """Trace ``model`` on ``example_inputs`` (eval mode, no grad) and group its coupled channels.

    ``ignore`` lists module names whose parameters must stay whole (their channels are frozen).
    Modules that the eval-mode pass skips (e.g. auxiliary classifiers) are traced in training mode too,
    with buffers restored afterwards, so their inputs stay consistent with the pruned stream.
    """
    ignore = list(ignore)
    was_training = model.training
    with single_thread():
        return _build(model, example_inputs, ignore, was_training)


def meta_twin(model: nn.Module, _memo: dict | None = None) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the meta device (no data is copied).

    Modules are copied shallowly (deepcopy of a large model costs seconds); only the containers a trace or
    apply_plan writes to (parameters, buffers, children, hook tables) are new.
    """
    memo = {} if _memo is None else _memo
    if id(model) in memo:
        return memo[id(model)]
    twin = copy.copy(model)
    memo[id(model)] = twin
    d = twin.__dict__
    for key, val in list(d.items()):
        if key.startswith(("_forward", "_backward", "_state_dict", "_load_state_dict")) and isinstance(val, dict):
            d[key] = type(val)(val)
    d["_parameters"] = {k: _meta_tensor(v, memo) for k, v in model._parameters.items()}
    d["_buffers"] = {k: _meta_tensor(v, memo) for k, v in model._buffers.items()}
    d["_modules"] = {k: (meta_twin(v, memo) if v is not None else None) for k, v in model._modules.items()}
    return twin


def _meta_tensor(t: Any, memo: dict) -> Any:
    if t is None:
        return None
    if id(t) not in memo:
        e = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(e, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else e
    return memo[id(t)]


def _to_meta(example_inputs: Any) -> Any:
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    return tuple(torch.empty_like(x, device="meta") if isinstance(x, torch.Tensor) else x for x in inputs)


def _trace(model: nn.Module, example_inputs: Any, ignore: list):
    """Trace a meta-device twin first (no arithmetic at all: fast at any input size); models whose forward
    needs real values (``.item()``, data-dependent branches) are traced for real."""
    try:
        twin = meta_twin(model)
        twin.train(model.training)
        return run_trace(twin, _to_meta(example_inputs), ignore)
    except PrunekitError:
        raise
    except Exception:
        return run_trace(model, example_inputs, ignore)


def _build(model: nn.Module, example_inputs: Any, ignore: list, was_training: bool) -> DependencyGraph:
    try:
        model.eval()
        rec = _trace(model, example_inputs, ignore)
        skipped = _unvisited_with_params(model, rec.visited)
        if skipped:
            saved = {k: v.clone() for k, v in model.state_dict(keep_vars=False).items() if not v.is_floating_point()
                     or k.endswith(("running_mean", "running_var"))}
            model.train()
            x = _batch_of_two(example_inputs)
            try:
                rec = _trace(model, x, ignore)
            finally:
                with torch.no_grad():
                    state = model.state_dict()
                    for k, v in saved.items():
                        state[k].copy_(v)
    finally:
        model.train(was_training)
    graph = build_groups(rec)
    graph.traced_in_training = bool(skipped)
    return graph


def _unvisited_with_params(model: nn.Module, visited: set) -> list:
    out = []
    for name, mod in model.named_modules():
        if name and name not in visited and any(True for _ in mod.parameters(recurse=False)):
            out.append(name)
    return out


def _batch_of_two(example_inputs: Any) -> Any:
    """Training-mode BatchNorm needs more than one value per channel."""
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    return tuple(torch.cat([x, x]) if isinstance(x, torch.Tensor) and x.shape[0] == 1 else x for x in inputs)
