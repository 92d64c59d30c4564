"""How many weights each layer loses: exact counts from a target ratio, for uniform, global, LAMP and ERK.

Every strategy ends in the same place: a score per weight and a number ``k`` of weights to remove per layer
(or one ``k`` shared across layers for a global threshold). Counts are exact (``round(ratio * n)``), with ties
broken by position, so a requested 90% is 90% to the weight, on every machine.

* LAMP (Lee et al., 2021): score(u) = w_u^2 / sum of w_v^2 over weights v at least as large as u in the same
  layer; a single global threshold on these scores adapts the per-layer sparsity with no hyper-parameter.
* ERK (Evci et al., 2020): layer density proportional to sum(shape) / prod(shape), so small layers stay denser.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch

from ..errors import ConfigError, ModelError


def magnitude_scores(w: torch.Tensor) -> torch.Tensor:
    """|w| flattened, as float: the plain magnitude score of every weight."""
    return w.detach().abs().flatten().float()


def normalized_scores(w: torch.Tensor) -> torch.Tensor:
    """|w| over the layer's RMS, so layers with different weight scales compete fairly for a global threshold."""
    s = magnitude_scores(w)
    rms = s.pow(2).mean().sqrt()
    return s / rms if rms > 0 else s


def lamp_scores(w: torch.Tensor) -> torch.Tensor:
    """LAMP score of each weight (flattened): w^2 over the sum of w^2 of all weights not smaller than it."""
    sq = w.detach().flatten().double().pow(2)
    order = torch.sort(sq, stable=True).indices
    sorted_sq = sq[order]
    suffix = sorted_sq.flip(0).cumsum(0).flip(0)
    scores = torch.empty_like(sq)
    scores[order] = torch.where(suffix > 0, sorted_sq / suffix.clamp_min(1e-300), torch.zeros_like(suffix))
    return scores.float()


def smallest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask (flat) removing exactly the ``k`` lowest scores; ties go to the lower index first."""
    n = scores.numel()
    if k <= 0:
        return torch.ones(n, dtype=torch.bool)
    if k >= n:
        return torch.zeros(n, dtype=torch.bool)
    if torch.isnan(scores).any():
        raise ModelError("weights contain NaN; fix the model (or its checkpoint) before pruning")
    threshold = torch.kthvalue(scores, k).values
    pruned = scores < threshold
    need = k - int(pruned.sum())
    ties = (scores == threshold).nonzero().flatten()[:need]
    pruned[ties] = True
    return ~pruned


def exact_counts(ratios: Sequence[float], sizes: Sequence[int], total_prune: int) -> List[int]:
    """Per-layer prune counts near ``ratio * size`` that sum to exactly ``total_prune`` (largest remainder)."""
    raw = [r * n for r, n in zip(ratios, sizes)]
    counts = [min(n, int(x)) for x, n in zip(raw, sizes)]
    if not 0 <= total_prune <= sum(sizes):
        raise ConfigError(f"cannot prune {total_prune} of {sum(sizes)} weights")
    by_fraction = sorted(range(len(raw)), key=lambda i: (raw[i] - int(raw[i]), -i), reverse=True)
    while sum(counts) != total_prune:
        step = 1 if sum(counts) < total_prune else -1
        order = by_fraction if step > 0 else by_fraction[::-1]
        for i in order:
            if sum(counts) == total_prune:
                break
            if 0 <= counts[i] + step <= sizes[i]:
                counts[i] += step
    return counts


def erk_ratios(shapes: Sequence[Sequence[int]], ratio: float) -> List[float]:
    """Per-layer prune ratios from Erdos-Renyi-Kernel densities that together prune ``ratio`` of all weights.

    Layers whose ERK density would exceed 1 are kept dense and the rest re-solved (the RigL procedure).
    """
    sizes = [int(torch.Size(s).numel()) for s in shapes]
    raw = [sum(s) / n for s, n in zip(shapes, sizes)]
    keep_budget = (1.0 - ratio) * sum(sizes)
    dense: set = set()
    while True:
        free = [i for i in range(len(sizes)) if i not in dense]
        budget = keep_budget - sum(sizes[i] for i in dense)
        denom = sum(raw[i] * sizes[i] for i in free)
        if not free or denom <= 0:
            break
        eps = budget / denom
        over = [i for i in free if eps * raw[i] > 1.0]
        if not over:
            break
        dense.update(over)
    densities = [1.0 if i in dense else min(1.0, max(0.0, eps * raw[i])) for i in range(len(sizes))]
    return [1.0 - d for d in densities]


def check_ratio(ratio: float, what: str = "ratio") -> float:
    """Return ``ratio`` as a float if it is in [0, 1); raise ConfigError naming ``what`` otherwise."""
    if not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) < 1.0:
        raise ConfigError(f"{what}={ratio!r} must be a fraction in [0, 1), e.g. 0.9 to remove 90% of the weights")
    return float(ratio)


def global_masks(scores: Dict[str, torch.Tensor], k: int) -> Dict[str, torch.Tensor]:
    """Flat keep-masks removing the ``k`` lowest scores across all layers together (one global threshold)."""
    names = list(scores)
    if not names:
        return {}
    keep = smallest_k_mask(torch.cat([scores[n] for n in names]), k)
    return dict(zip(names, keep.split([scores[n].numel() for n in names])))
