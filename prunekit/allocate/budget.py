"""Prune as much as possible while the score stays within a budget: per-layer ratios from a sensitivity scan.

    sens = layer_sensitivity(model, x, score_fn, recalibrate=recal)
    choice = budget_search(model, x, sens, score_fn, max_drop=0.01, recalibrate=recal)
    model, plan = prune_structured(model, x, **choice.plan_kwargs())

The scan's (layer, ratio) cells are put on a ladder, cheapest first (the drop at that ratio or below, ties
broken by MACs saved); the first k cells make a plan (each layer at the largest ratio taken), so robust layers lose
channels before sensitive ones. Drops measured one layer at a time do not add up exactly, so each candidate plan
is applied to a copy and scored as a whole; bisection on k keeps the plan with the largest MACs reduction whose
measured drop is within ``max_drop`` (about log2(cells) + 1 candidates).

Without ``finetune`` the guarantee is on the score right after pruning (with ``recalibrate``), which is strict:
fine-tuning gives much of a cut back. With ``finetune`` (a few recovery epochs per candidate) the budget holds for
the score after that recovery, measured from the unpruned model given the same recovery.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from torch import nn

from ..errors import ConfigError
from ..measure import InputSpec, count_macs, count_params
from .sensitivity import ScoreFn, Sensitivity, overrides_pruner


@dataclass
class BudgetChoice:
    """The chosen per-layer ratios (``make_plan`` overrides) and what they measured."""

    overrides: Dict[str, float]
    threshold: float
    score: float
    drop: float
    macs_reduction: float
    params_reduction: float
    baseline: float = 0.0  # what ``drop`` is measured from: the unpruned score (after ``finetune`` when given)
    trials: List[Dict[str, float]] = field(default_factory=list)

    def plan_kwargs(self) -> Dict[str, Any]:
        """``make_plan`` / ``prune_structured`` arguments that reproduce the plan: ratio 0 except the overrides."""
        return {"ratio": 0.0, "overrides": dict(self.overrides)}


def ladder(sens: Sensitivity) -> List[Tuple[float, str, float]]:
    """Every (layer, ratio) cell as (cost, layer, ratio), cheapest first: cost = the largest drop at that ratio or
    below in that layer (so no ratio comes before a smaller one of its layer that costs more), ties broken by more
    MACs saved. Taking the first k
    cells (each layer at the largest ratio taken) gives plans that grow one cell at a time."""
    cells = []
    for name in sens.layers:
        worst = 0.0
        for j, r in enumerate(sens.ratios):
            worst = max(worst, sens.drop(name, r))
            cells.append((worst, -sens.macs_saved[name][j], name, r))
    cells.sort()
    return [(cost, name, r) for cost, _, name, r in cells]


def budget_search(model: nn.Module, example_inputs: Any, sens: Sensitivity, score_fn: ScoreFn, max_drop: float,
                  recalibrate: Optional[Callable[[nn.Module], Any]] = None, criterion: str = "l2",
                  finetune: Optional[Callable[[nn.Module], nn.Module]] = None,
                  **make_plan_kwargs: Any) -> BudgetChoice:
    """The plan with the most MACs removed whose measured score drop is <= ``max_drop`` (see module doc).

    Scores are those of ``sens`` (same ``score_fn``, same units: a drop of 0.01 is one accuracy point when the
    score is an accuracy in [0, 1]). ``finetune(model) -> model`` (a short recovery, e.g. two epochs) runs on
    every candidate before it is scored, and on a copy of the unpruned model for the baseline. Returns an empty
    choice (no overrides) when no layer fits the budget.
    """
    if not max_drop >= 0:
        raise ConfigError(f"max_drop={max_drop} must be >= 0 (in the score's units, e.g. 0.01 = one accuracy point)")
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    shape = InputSpec.from_example(inputs)  # what the model takes (token ids stay ints), per sample
    dense_macs, dense_params = count_macs(model, shape)[0], count_params(model)
    _, pruned = overrides_pruner(model, inputs, criterion, make_plan_kwargs)  # traced and scored once
    cells = ladder(sens)
    trials: List[Dict[str, float]] = []
    baseline = sens.baseline if finetune is None else float(score_fn(finetune(copy.deepcopy(model))))
    fits: List[BudgetChoice] = [BudgetChoice({}, 0.0, baseline, 0.0, 0.0, 0.0, baseline)]

    def measure(k: int) -> float:
        overrides: Dict[str, float] = {}
        for _, name, r in cells[:k]:
            overrides[name] = max(r, overrides.get(name, 0.0))
        twin = pruned(overrides)
        if recalibrate is not None:
            recalibrate(twin)
        if finetune is not None:
            twin = finetune(twin)
        score = float(score_fn(twin))
        choice = BudgetChoice(overrides, cells[k - 1][0], score, baseline - score,
                              1.0 - count_macs(twin, shape)[0] / dense_macs, 1.0 - count_params(twin) / dense_params,
                              baseline)
        trials.append({"cells": k, "threshold": choice.threshold, "drop": choice.drop,
                       "macs_reduction": choice.macs_reduction})
        if choice.drop <= max_drop:
            fits.append(choice)
        return choice.drop

    lo, hi = 0, len(cells) + 1  # the first lo cells fit the budget (0: nothing pruned); the first hi cells do not
    while hi - lo > 1:
        k = len(cells) if hi == len(cells) + 1 else (lo + hi) // 2  # everything first, then bisection
        if measure(k) <= max_drop:
            lo = k
        else:
            hi = k
    best = max(fits, key=lambda c: c.macs_reduction)
    best.trials = trials
    return best


def budget_record(choice: BudgetChoice, max_drop: float, split: str, epochs: int) -> Dict[str, Any]:
    """What a checkpoint and a report keep of the budget search (points, not fractions)."""
    return {"max_drop_points": max_drop, "split": split, "drop_points": round(100 * choice.drop, 3),
            "score": choice.score, "baseline": choice.baseline, "threshold_points": round(100 * choice.threshold, 3),
            "macs_reduction": choice.macs_reduction, "params_reduction": choice.params_reduction,
            "overrides": choice.overrides, "trials": len(choice.trials),
            "candidates": [{k: round(v, 4) for k, v in t.items()} for t in choice.trials],
            "recovery_epochs": epochs}
