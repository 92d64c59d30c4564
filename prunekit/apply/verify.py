"""The plan's dry run: apply it to a twin of the model and leave whole any group whose removal breaks the forward.

``make_plan`` decides from scores alone; an unusual model (a reshape with a hard-coded width, a split by a fixed
size) can still fail once channels go. The twin lives on the meta device (no memory, no compute); a model whose
forward needs values (a ``.item()``, data-dependent code) is dry-run on real copies instead, and a warning says so
when it runs on neither. Every structured path checks its plan here before touching real weights.

    verify_plan(model, plan, graph, (x,))   # drops (and records in plan.skipped) the groups that break it
"""
from __future__ import annotations

import copy
import warnings
from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import PrunekitError
from ..graph import DependencyGraph, meta_twin
from ..graph.trace import flatten_outputs
from ..plan import Plan
from .structured import apply_plan


def _twin(model: nn.Module, inputs: Sequence[Any], real: bool) -> Tuple[nn.Module, Tuple[Any, ...]]:
    """A copy to dry-run a plan on, with its inputs: shapes only on the meta device, or (``real``, for a forward
    that needs values: a ``.item()``, data-dependent code) a deep copy on the model's own device."""
    if real:
        return copy.deepcopy(model).eval(), tuple(inputs)
    return meta_twin(model).eval(), tuple(torch.empty_like(x, device="meta") if isinstance(x, torch.Tensor) else x
                                           for x in inputs)


def _dry_run(model: nn.Module, plan: Plan, graph: DependencyGraph, inputs: Sequence[Any],
             want: List[torch.Size], real: bool = False) -> Optional[str]:
    """None if the plan applies and the forward keeps the output shapes, else the error text."""
    try:
        twin, twin_in = _twin(model, inputs, real)
        apply_plan(twin, plan, graph=graph)
        with torch.no_grad():
            got = [t.shape for t in flatten_outputs(twin(*twin_in))]
    except PrunekitError:
        raise
    except Exception as e:  # any failure here means this plan cannot run
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return None if got == want else f"output shapes {got} != {want}"


def _without_groups(plan: Plan) -> Plan:
    bare = copy.copy(plan)
    bare.groups, bare.blocks = [], []
    return bare


def verify_plan(model: nn.Module, plan: Plan, graph: DependencyGraph, inputs: Sequence[Any]) -> None:
    """Leave whole the groups whose removal breaks the forward (found by bisection on the meta device, or on real
    copies for a model whose forward needs values; a warning when it runs on neither)."""
    was = model.training
    model.eval()
    want = graph.output_shapes  # shapes of the traced (eval-mode) forward
    real = False  # dry runs on the meta device until the unpruned model turns out not to run there
    try:
        if not want or graph.traced_in_training:
            want, real = _output_shapes(model, inputs)
            if want is None:
                return
        for attempt in range(64):
            err = _dry_run(model, plan, graph, inputs, want, real)
            if err is None:
                return
            if attempt == 0 and not real and _dry_run(model, _without_groups(plan), graph, inputs, want) is not None:
                real = True  # the unpruned model cannot run on meta (a .item(), data-dependent code): real copies
                bare = _dry_run(model, _without_groups(plan), graph, inputs, want, real)
                if bare is not None:
                    _not_verified(bare)
                    return
                continue
            lo, hi = 0, len(plan.groups)  # smallest prefix of groups that fails
            while hi - lo > 1:
                mid = (lo + hi) // 2
                trial = copy.copy(plan)
                trial.groups = plan.groups[:mid]
                if _dry_run(model, trial, graph, inputs, want, real) is None:
                    lo = mid
                else:
                    hi = mid
            if not plan.groups:
                if plan.blocks:
                    plan.skipped["blocks"] = err
                    plan.blocks = []
                    continue
                raise PrunekitError(f"pruned model does not run: {err}")
            bad = plan.groups.pop(hi - 1)
            plan.skipped[bad.key] = err
    finally:
        model.train(was)


def _output_shapes(model: nn.Module, inputs: Sequence[Any]) -> Tuple[Optional[List[torch.Size]], bool]:
    """(output shapes of the unpruned eval forward, whether it needed a real copy); (None, True) with a warning
    when it runs neither on meta nor on a real copy."""
    for real in (False, True):
        try:
            twin, twin_in = _twin(model, inputs, real)
            with torch.no_grad():
                return [t.shape for t in flatten_outputs(twin(*twin_in))], real
        except Exception as e:  # e.g. a .item() on meta: try a real copy next
            err = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    _not_verified(err)
    return None, True


def _not_verified(err: str) -> None:
    warnings.warn(f"the pruning plan was not verified: the unpruned model does not run on a copy ({err}); a "
                  "group whose removal breaks the forward would go unnoticed")
