"""Unstructured magnitude pruning: remove the smallest weights, per layer or with one global threshold.

    masks = magnitude_prune(model, ratio=0.9)                           # global threshold, 90% of weights gone
    masks = magnitude_prune(model, ratio=0.5, scope="layer")             # every layer exactly 50%
    masks = magnitude_prune(model, ratio=0.9, allocation="lamp")         # layer-adaptive (LAMP scores)
    masks = magnitude_prune(model, ratio=0.9, overrides={"layer4.*": 0.95}, skip=["layer1.0.conv1"])

``ratio`` is the fraction of the *targeted* weights removed (see :mod:`prunekit.sparse.selection`), exact to the
count. Overridden layers get their own ratio; with ``scope="global"`` the other layers absorb the rest so that
the targeted weights as a whole still lose ``ratio``.
"""
from __future__ import annotations

import warnings
from typing import Dict, Iterable, Optional, Sequence, Type

from torch import nn

from ..errors import ConfigError
from . import allocation as alloc
from .masks import Masks
from .selection import DEFAULT_TYPES, resolve_overrides, select_targets

SCOPES = ("global", "layer")
ALLOCATIONS = (None, "lamp", "erk")


def magnitude_prune(model: nn.Module, ratio: float = 0.9, scope: str = "global", normalize: bool = False,
                    allocation: Optional[str] = None, overrides: Optional[Dict[str, float]] = None,
                    skip_first: bool = True, skip_last: bool = True, skip: Optional[Iterable[str]] = None,
                    types: Sequence[Type[nn.Module]] = DEFAULT_TYPES, apply: bool = True) -> Masks:
    """Masks keeping the largest-magnitude weights; with ``apply`` (default) the pruned weights are zeroed now.

    Args:
        ratio: fraction of targeted weights to remove, in [0, 1).
        scope: ``"global"`` (one threshold across layers) or ``"layer"`` (each layer loses ``ratio``).
        normalize: global only: compare |w| divided by each layer's RMS, so no layer is wiped out for its scale.
        allocation: global only: ``"lamp"`` (LAMP scores, one threshold) or ``"erk"`` (ERK per-layer ratios).
        overrides: module/parameter name (or fnmatch pattern) -> ratio for that layer.
        skip_first, skip_last, skip, types: which layers are targets, see :func:`select_targets`.
    """
    ratio = alloc.check_ratio(ratio)
    if scope not in SCOPES:
        raise ConfigError(f"scope={scope!r} is not one of {SCOPES}")
    if allocation not in ALLOCATIONS:
        raise ConfigError(f"allocation={allocation!r} is not one of {ALLOCATIONS}")
    if scope == "layer" and (allocation or normalize):
        raise ConfigError("allocation/normalize choose how a global budget is shared between layers; "
                          "use them with scope='global', not scope='layer'")
    if normalize and allocation:
        raise ConfigError(f"normalize=True has no meaning with allocation={allocation!r} (it already adapts "
                          f"per layer); drop one of them")

    targets = select_targets(model, types, skip_first, skip_last, skip)
    fixed = resolve_overrides(targets, overrides)
    sizes = {t.param_name: t.param.numel() for t in targets}
    total_prune = round(ratio * sum(sizes.values()))
    fixed_counts = {n: round(r * sizes[n]) for n, r in fixed.items()}
    free = [t for t in targets if t.param_name not in fixed]
    budget = total_prune - sum(fixed_counts.values())
    free_size = sum(sizes[t.param_name] for t in free)
    if scope == "global" and not 0 <= budget <= free_size:
        raise ConfigError(f"overrides {overrides} make ratio={ratio} impossible: the other layers would have to "
                          f"lose {budget} of {free_size} weights; lower the overrides or change ratio")

    score_fn = alloc.lamp_scores if allocation == "lamp" else (
        alloc.normalized_scores if normalize else alloc.magnitude_scores)
    scores = {t.param_name: score_fn(t.param) for t in targets}
    flat: Dict[str, object] = {n: alloc.smallest_k_mask(scores[n], k) for n, k in fixed_counts.items()}

    if scope == "layer":
        for t in free:
            flat[t.param_name] = alloc.smallest_k_mask(scores[t.param_name], round(ratio * sizes[t.param_name]))
    elif allocation == "erk":
        free_ratio = budget / free_size if free_size else 0.0
        ratios = alloc.erk_ratios([tuple(t.param.shape) for t in free], free_ratio)
        counts = alloc.exact_counts(ratios, [sizes[t.param_name] for t in free], budget)
        for t, k in zip(free, counts):
            flat[t.param_name] = alloc.smallest_k_mask(scores[t.param_name], k)
    else:  # one global threshold on magnitude, normalized magnitude or LAMP scores
        flat.update(alloc.global_masks({t.param_name: scores[t.param_name] for t in free}, budget))

    masks = Masks({t.param_name: flat[t.param_name].view(t.param.shape) for t in targets})
    emptied = [n for n, m in masks.items() if m.numel() and not bool(m.any())]
    if emptied and ratio < 1.0:
        warnings.warn(f"magnitude pruning at ratio {ratio} removed every weight of {emptied[:3]}"
                      f"{' and more' if len(emptied) > 3 else ''}: no signal passes that layer any more; share the "
                      "budget with allocation='lamp' (CLI: --criterion lamp) or lower the ratio", stacklevel=2)
    if apply:
        masks.apply(model)
    return masks
