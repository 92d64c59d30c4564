"""The front door: three sentences that cover what most users want.

    small = prunekit.prune(model, x, criterion="fpgm", reduce="macs=2x")    # a smaller dense model
    masks = prunekit.sparsify(model, ratio=0.9, scope="global")              # weights zeroed, masks returned
    print(prunekit.plan_preview(model, x, reduce="macs=2x")["macs"])         # the plan, nothing pruned
    table = prunekit.compare("data/ucmerced", criteria=["fpgm", "l1"], reduce=["macs=2x"], seeds=[0, 1, 2])

Each is a thin composition of the pipeline (allocate -> plan -> check -> apply, or sparse masks, or the compare
job); the pieces stay importable for anything finer.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence, Union

from torch import nn

from .allocate import Target, TargetPlan, plan_for_target, resolve_round_to
from .allocate.reduce import check_reachable
from .apply.oneshot import remove_planned
from .config import CompareOptions
from .errors import ConfigError
from .jobs.compare import compare_job
from .report.preview import preview_plan
from .sparse import Masks, magnitude_prune, nm_prune, parse_nm

PLAN_ATTR = "prunekit_plan"
SCOPES = ("uniform", "global")  # one word per idea: "uniform" everywhere (prune, sparsify, the CLI, recipes)


def prune(model: nn.Module, example_inputs: Any, *, criterion: str = "l1", ratio: Optional[float] = None,
          reduce: Union[None, str, Dict[str, float]] = None, closest: bool = False, allocation: str = "uniform",
          scope: str = "uniform", round_to: Union[None, int, str] = None, data: Any = None,
          ignore: Iterable[str] = (), latency_batch: int = 1, inplace: bool = False, exact: bool = True,
          **plan_options: Any) -> nn.Module:
    """Remove whole channels (filters, neurons, heads) and return a smaller dense model of the same classes.

    Args:
        model: any PyTorch model (built-ins, torchvision, timm, Hugging Face transformers, your own ``nn.Module``);
            left untouched unless ``inplace``.
        example_inputs: a tensor (or tuple of tensors) the model takes, e.g. ``torch.randn(1, 3, 224, 224)`` or
            token ids ``torch.randint(0, vocab, (1, 128))``; MACs targets are counted on it.
        criterion: which channels go: ``l1`` (default, as on the CLI), ``l2``, ``fpgm``, ``bn_scale``, ``random``;
            ``taylor``, ``mean_activation``, ``apoz`` and the ``pfam`` forms also need ``data`` (batches of
            ``(x, y)``).
        ratio: fraction of channels removed per layer (uniform scope) or overall (global); default 0.5.
        reduce: a target instead of a ratio: ``"macs=2x"``, ``"params=0.4"``, or ``{"macs": 0.5}``; or
            ``"latency=2x"``: whole blocks, channels or both, whichever halves the latency measured here (at
            ``latency_batch``) while keeping the most MACs (``allocation`` is then unused). A MACs / params target
            no plan reaches is refused (ConfigError) before anything is pruned, unless ``closest``.
        closest: with ``reduce``: prune as close to an unreachable target as possible (a warning says how close).
        allocation: ``"uniform"`` (one ratio reaching ``reduce``), ``"latency"`` (per-layer ratios from timed
            probes on this machine) or ``"fastest"`` (``reduce`` split between whole blocks and channels, whichever
            split runs fastest here at ``latency_batch``).
        scope: ``"uniform"`` (the same ratio in every layer) or ``"global"`` (one threshold across layers).
        round_to: keep channel counts multiples of an int, or ``"auto"`` / ``"auto-ort"`` (measured here).
        latency_batch: the batch size measured latency targets and ``"fastest"`` time candidates at.
        ignore: module names kept whole (e.g. the classifier of a model whose head you need unchanged).
        exact: check, before the real weights change, that where removal is exact the pruned model equals the
            original with the removed slices zeroed (``prunekit.apply.exact``); False skips that pair of forwards.
        plan_options: anything else ``prunekit.plan.make_plan`` takes (``overrides``, ``min_channels``,
            ``prune_heads=True`` for whole attention heads, ``prune_hidden=False`` to keep a transformer's hidden
            size, ...).

    Returns:
        The pruned model; ``model.prunekit_plan`` holds the Plan (plain data: what was removed, and in
        ``skipped`` what was left whole and why). A ``prunekit.errors.PruningWarning`` says when groups were left
        whole or heads removed whole; ``NothingPrunedError`` when nothing asked for could be removed.
        ``prunekit.save`` records the pruned shapes, so ``prunekit.load`` rebuilds the model without pickle.
        :func:`plan_preview` takes the same arguments and shows the plan without pruning.

    Example:
        >>> small = prunekit.prune(torchvision.models.resnet18(), torch.randn(1, 3, 224, 224), reduce="macs=2x")
    """
    work = model if inplace else copy.deepcopy(model)
    found = _planned(work, example_inputs, criterion=criterion, ratio=ratio, reduce=reduce, closest=closest,
                     allocation=allocation, scope=scope, round_to=round_to, data=data, ignore=ignore,
                     latency_batch=latency_batch, exact=exact, **plan_options)
    remove_planned(work, found.plan, found.graph)
    setattr(work, PLAN_ATTR, found.plan)
    return work


def plan_preview(model: nn.Module, example_inputs: Any, **options: Any) -> Dict[str, Any]:
    """What :func:`prune` with the same arguments would do, without doing it: per-layer widths before and after,
    parameters and MACs before and after, the groups left whole and why, the blocks removed, and the Plan itself.
    ``model`` is not changed (counts are taken on a meta-device twin).

    Example:
        >>> p = prunekit.plan_preview(torchvision.models.resnet18(), torch.randn(1, 3, 224, 224), reduce="macs=2x")
        >>> p["macs"], [l for l in p["layers"] if l["after"] != l["before"]][:3]
    """
    options.pop("inplace", None)  # how prune applies the plan, not the plan
    found = _planned(model, example_inputs, **{"exact": False, **options})
    return {**preview_plan(model, example_inputs, found.plan, found.graph), "plan": found.plan}


def _planned(model: nn.Module, example_inputs: Any, *, criterion: str = "l1", ratio: Optional[float] = None,
             reduce: Union[None, str, Dict[str, float]] = None, closest: bool = False, allocation: str = "uniform",
             scope: str = "uniform", round_to: Union[None, int, str] = None, data: Any = None,
             ignore: Iterable[str] = (), latency_batch: int = 1, exact: bool = True,
             **plan_options: Any) -> TargetPlan:
    """The checked plan :func:`prune` applies and :func:`plan_preview` shows: the options checked, a MACs / params
    target checked for reach before any search, then ``plan_for_target``."""
    if allocation not in ("uniform", "latency", "fastest"):
        raise ConfigError(f"allocation={allocation!r}: use 'uniform', 'latency' or 'fastest'")
    _check_scope(scope)
    if closest and reduce is None:
        raise ConfigError("closest=True says what to do when a reduce target cannot be reached: give reduce")
    if criterion.startswith("attention"):
        raise ConfigError(f"criterion={criterion!r} trains attention modules first: use "
                          "prunekit.attention.attention_prune(model, dataset, x, ...) or the CLI's --criterion attention")
    target = Target.of(ratio=ratio, reduce=reduce, allocation=allocation)
    plan_kwargs = {"scope": scope, "data": data, "round_to": resolve_round_to(round_to), "ignore": list(ignore),
                   **plan_options}
    if target.kind == "reduce":  # before any search: an unreachable target is refused unless closest
        check_reachable(model, example_inputs, target.reduce, closest=closest, **plan_kwargs)
    return plan_for_target(model, example_inputs, target, criterion, options={"batch": latency_batch}, exact=exact,
                           **plan_kwargs)


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise ConfigError(f"scope={scope!r}: use 'uniform' (the same ratio in every layer) or 'global'"
                          + (" ('layer' was renamed 'uniform')" if scope == "layer" else ""))


def sparsify(model: nn.Module, ratio: float = 0.9, *, scope: str = "global", allocation: Optional[str] = None,
             nm: Optional[str] = None, skip: Optional[Sequence[str]] = None) -> Masks:
    """Zero the smallest weights of ``model`` in place and return the masks (plain data, one bool per weight).

    Args:
        ratio: fraction of the targeted weights (conv and linear; first and last layer kept) removed.
        scope: ``"global"`` (one threshold over all layers) or ``"uniform"`` (the same fraction in each).
        allocation: ``"lamp"`` or ``"erk"`` to share a global budget so that no layer is emptied.
        nm: ``"2:4"`` for N:M semi-structured sparsity instead (``ratio`` and ``scope`` are then unused).
        skip: module names never masked.

    Returns:
        The Masks; keep them through fine-tuning with ``fit(..., callbacks=[prunekit.train.MaskCallback(masks)])``
        and save a compressed checkpoint with ``prunekit.save(model, path, codec={"values": "fp16"}, extras=...)``.

    Example:
        >>> masks = prunekit.sparsify(model, ratio=0.9, scope="global", allocation="lamp")
        >>> print(masks.sparsity())
    """
    if nm is not None:
        n, m = parse_nm(nm)
        return nm_prune(model, n=n, m=m, skip=skip)
    _check_scope(scope)
    return magnitude_prune(model, ratio=ratio, scope="layer" if scope == "uniform" else scope,  # sparse's own word
                           allocation=allocation, skip=skip)


def compare(data: Union[None, str, Path] = None, *, model: str = "vgg_small", criteria: Sequence[str] = ("fpgm", "l1"),
            reduce: Sequence[str] = ("macs=0.5",), seeds: Sequence[int] = (0, 1, 2), out: Union[str, Path] = "runs/compare",
            **options: Any) -> Dict[str, Any]:
    """Compare criteria on ``data`` (a class-per-folder dataset; None: the embedded UC Merced subset) on equal
    terms: the same base model, channel counts and fine-tuning budget for each, several seeds.

    Every cell is one JSON file under ``<out>/cells`` (a rerun skips finished cells); ``options`` are those of
    ``prunekit compare`` (``base_epochs``, ``finetune_epochs``, ``image_size``, ``scope``, ``device``, ...).

    Returns:
        ``{"table": ..., "markdown_path": ..., "plot": ..., "cells": N, "ran": n}``.

    Example:
        >>> prunekit.compare("data/ucmerced", criteria=["fpgm", "l1", "random"], reduce=["macs=2x"], seeds=[0, 1])
    """
    opts = CompareOptions(data=data, model=model, criteria=list(criteria), reduce=list(reduce), seeds=list(seeds),
                          out=Path(out), **options)
    return compare_job(opts)
