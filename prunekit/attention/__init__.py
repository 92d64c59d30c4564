"""Attention-guided channel pruning (SE-style channel attention as the importance signal).

    model, plan, report = attention_prune(model, dataset, torch.randn(1, 3, 64, 64), ratio=0.5, attention_epochs=3)
    fit(model, dataset, TrainConfig(epochs=10))        # fine-tune the pruned plain model

Steps: insert SE modules after each prunable conv (function unchanged), train them (backbone frozen or joint,
optional L1 on the gates), average each gate over the training data, remove the modules (fold the mean gate into
the host's affine, or drop them), plan with the ``attention`` criterion and apply the plan.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ..allocate.target import Target, TargetPlan, plan_for_target
from ..apply.structured import apply_plan
from ..data import make_loader
from ..errors import ConfigError
from ..importance.attention import SCORES_ATTR
from ..plan import Plan
from ..train import RunLogger, TrainConfig
from .budget import budget_groups
from .score import SCORE_FORMS, AttentionStats, attention_scores, scale_by_host
from .se import ChannelAttention, attention_modules, insert_attention, remove_attention
from .train import train_attention

log = logging.getLogger(__name__)

__all__ = ["ChannelAttention", "AttentionStats", "insert_attention", "remove_attention", "attention_modules",
           "train_attention", "attention_scores", "scale_by_host", "attention_prune"]


def attention_prune(model: nn.Module, data: Any, example_inputs: Any, ratio: float = 0.5, attention_epochs: int = 3,
                    mode: str = "frozen", sparsity: float = 0.0, reduction: int = 8, removal: str = "fold",
                    train_cfg: Optional[TrainConfig] = None, device: Any = "auto", max_batches: Optional[int] = None,
                    progress: bool = False, reduce: Optional[Dict[str, float]] = None,
                    score: str = "gate_x_scale", budget: bool = False, loggers: Sequence[RunLogger] = (),
                    **plan_options: Any) -> Tuple[nn.Module, Plan, Dict[str, Any]]:
    """Whole attention-guided flow; returns (pruned plain model, plan, report). ``plan_options`` go to make_plan.

    ``data`` is a :class:`~prunekit.data.SceneDataset`: its train split trains the attention (``train_cfg`` sets
    lr and batch size; its epochs are ``attention_epochs``) and then scores it (``max_batches`` bounds scoring).

    ``score``: ``"gate_x_scale"`` (default, chosen on the validation split of UC Merced, docs/criteria.md) ranks
    channels by mean gate x |host scale| (BN gamma or filter norm), the channel's output scale after the attention
    (:func:`scale_by_host`); ``"gate"`` by the mean gate alone (the SE form of the paper's idea). The ``"_gm"``
    forms (``"gate_gm"``, ``"gate_x_scale_gm"``) plan with ``attention_gm``: that attention score times the
    channel's attention-weighted distance to the layer's other filters (FPGM's geometry, weighted by attention).

    ``reduce`` (e.g. {"params": 0.4}) replaces ``ratio``: the ratio is searched on the attention-scored model
    (:func:`prunekit.allocate.target.plan_for_target`, with ``plan_options`` such as ``scope="global"``).

    ``budget``: the gate penalty (``sparsity``, which must then be > 0) falls on only as many channels per layer
    as the plan removes, the lowest-gated ones of each batch (:mod:`prunekit.attention.budget`); uniform scope
    only, and with ``reduce`` the ratio is searched on the plain model before training.

    ``loggers`` (:mod:`prunekit.train.logs`) receive the attention training's epochs as phase ``"attention"``.

    The report holds the hosts, how each attention module was removed (fold/drop), the per-layer score
    distribution and how far folding moved the logits on one batch (``fold_logit_max_abs``).
    """
    if removal not in ("fold", "drop"):
        raise ConfigError(f"removal={removal!r} is unknown; use 'fold' or 'drop'")
    if score not in SCORE_FORMS:
        raise ConfigError(f"score={score!r} is unknown; use one of {', '.join(SCORE_FORMS)}")
    form = SCORE_FORMS[score]
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    search = budgets = None
    if budget:
        if sparsity <= 0:
            raise ConfigError("the attention budget steers the gate penalty: give it a sparsity > 0 "
                              "(--attention-sparsity 1e-2)")
        if reduce is not None:  # counts must be known before training; uniform counts ignore the scores
            search, counted = _search(model, inputs, reduce, "l2", plan_options)
            ratio, reduce = counted.plan_kwargs["ratio"], None
            plan_options = {**plan_options, "overrides": counted.plan_kwargs.get("overrides", {})}
        budgets = budget_groups(model, inputs, ratio=ratio, **plan_options)
    hosts = insert_attention(model, inputs, reduction=reduction)
    result = train_attention(model, data, epochs=attention_epochs, mode=mode, sparsity=sparsity, cfg=train_cfg,
                             device=device, progress=progress, budget=budgets, loggers=loggers)
    model = result.model
    stats = attention_scores(model, data, max_batches=max_batches)
    silenced = stats.silenced()
    if silenced and removal == "fold":  # dropping keeps the weights: the ranking stands, nothing is shrunk
        shown = ", ".join(f"{k} {v:.2f}" for k, v in list(silenced.items())[:3])
        log.warning("attention training turned most channels off in %d layer(s) (median gate %s); folding those gates "
                    "leaves near-zero scales that fine-tuning may not repair: use --attention-removal drop, or a "
                    "smaller --attention-sparsity", len(silenced), shown)
    if form.scaled:
        setattr(model, SCORES_ATTR, scale_by_host(model, stats.mean))  # before folding changes the scale
    probe = _probe_batch(data, inputs)
    with torch.no_grad():
        before = model.eval()(probe.to(next(model.parameters()).device))
    how = remove_attention(model, removal, gate_means=stats.mean)
    with torch.no_grad():
        after = model(probe.to(next(model.parameters()).device))
    on_device = tuple(x.to(next(model.parameters()).device) for x in inputs)
    if reduce is not None:
        search, found = _search(model, on_device, reduce, form.criterion, plan_options)
    else:
        found = plan_for_target(model, on_device, Target.of(ratio=ratio), form.criterion, **plan_options)
    plan = found.plan
    apply_plan(model, plan, graph=found.graph)
    if hasattr(model, SCORES_ATTR):
        delattr(model, SCORES_ATTR)  # stale once channels are gone
    report = {"hosts": hosts, "removal": how, "attention_epochs": attention_epochs, "mode": mode,
              "sparsity": sparsity, "reduction": reduction, "score": score,
              "budget": {h: budgets[h].counts()[h] for h in hosts if h in budgets} if budgets else None,
              "scores": stats.summary(),
              "silenced_layers": silenced, "fold_logit_max_abs": float((before - after).abs().max()),
              "top1_agreement_after_removal": float((before.argmax(1) == after.argmax(1)).float().mean()),
              "ratio_search": search, "history": result.history}
    return model.train(), plan, report


def _search(model: nn.Module, inputs: Tuple[Any, ...], reduce: Dict[str, float], criterion: str,
            plan_options: Dict[str, Any]) -> Tuple[Dict[str, Any], TargetPlan]:
    """The plan reaching ``reduce`` (ratio plus overrides, in its ``plan_kwargs``) and what to report of it."""
    found = plan_for_target(model, inputs, Target.of(reduce=reduce), criterion, **plan_options)
    search = {"reduce": reduce, "ratio": found.plan_kwargs["ratio"],
              "overrides": found.plan_kwargs.get("overrides", {}), "achieved": found.record["reduce_achieved"],
              "target": found.record["reduce_target"]}
    return search, found


def _probe_batch(data: Any, inputs: Tuple[Any, ...]) -> torch.Tensor:
    """A batch of real images (training split) to measure what removal changed; example inputs otherwise."""
    if hasattr(data, "splits") and hasattr(data, "classes"):
        for x, _ in make_loader(data, "train", batch_size=64, train=False, augment=False):
            return x
    return inputs[0]
