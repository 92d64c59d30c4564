"""The plan's dry run: apply it to a meta-device twin and leave whole any group whose removal breaks the forward.

``make_plan`` decides from scores alone; an unusual model (a reshape with a hard-coded width, a split by a fixed
size) can still fail once channels go. The twin costs no memory and no compute, so every structured path checks its
plan here before touching real weights.

    verify_plan(model, plan, graph, (x,))   # drops (and records in plan.skipped) the groups that break it
"""
from __future__ import annotations

import copy
import warnings
from typing import Any, List, Optional, Sequence

import torch
from torch import nn

from ..errors import PrunekitError
from ..graph import DependencyGraph, meta_twin
from ..graph.trace import flatten_outputs
from ..plan import Plan
from .structured import apply_plan


def _dry_run(model: nn.Module, plan: Plan, graph: DependencyGraph, inputs: Sequence[Any],
             want: List[torch.Size]) -> Optional[str]:
    """None if the plan applies and the forward keeps the output shapes, else the error text."""
    twin = meta_twin(model).eval()
    meta_in = tuple(torch.empty_like(x, device="meta") if isinstance(x, torch.Tensor) else x for x in inputs)
    try:
        apply_plan(twin, plan, graph=graph)
        with torch.no_grad():
            got = [t.shape for t in flatten_outputs(twin(*meta_in))]
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
    """Leave whole the groups whose removal breaks the forward (found by bisection on the meta device)."""
    was = model.training
    model.eval()
    want = graph.output_shapes  # shapes of the traced (eval-mode) forward
    if not want or graph.traced_in_training:
        try:
            twin = meta_twin(model)
            with torch.no_grad():
                want = [t.shape for t in flatten_outputs(twin(*[torch.empty_like(x, device="meta")
                                                                if isinstance(x, torch.Tensor) else x
                                                                for x in inputs]))]
        except Exception as e:  # model cannot run on meta: nothing to check against
            model.train(was)
            _unverified(plan, e)
            return
    try:
        for attempt in range(64):
            err = _dry_run(model, plan, graph, inputs, want)
            if err is None:
                return
            if attempt == 0 and _dry_run(model, _without_groups(plan), graph, inputs, want) is not None:
                _unverified(plan, err)  # the unpruned model cannot run on meta either (.item(), data-dependent code)
                return
            lo, hi = 0, len(plan.groups)  # smallest prefix of groups that fails
            while hi - lo > 1:
                mid = (lo + hi) // 2
                trial = copy.copy(plan)
                trial.groups = plan.groups[:mid]
                if _dry_run(model, trial, graph, inputs, want) is None:
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


def _unverified(plan: Plan, why: Any) -> None:
    """Say (warning + ``plan.settings["verified"] = False``) that the dry run could not check this plan."""
    plan.settings["verified"] = False
    warnings.warn(f"the plan could not be checked on the meta device ({str(why).splitlines()[0][:160] if str(why) else type(why).__name__}); "
                  "the pruned model is not dry-run: run it once on a real input before relying on it", stacklevel=3)
