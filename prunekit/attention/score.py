"""Average each attention gate over training data: the per-channel importance the ``attention`` criterion reads.

    stats = attention_scores(model, dataset)          # or any iterable of (x, y) batches
    stats.mean["features.1"]                          # tensor [channels], mean gate over the images
    stats.per_class["features.1"]                     # tensor [classes, channels] (NaN row: class unseen)
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, NamedTuple, Optional

import torch
from torch import nn

from ..data import make_loader
from ..errors import ConfigError
from ..importance.attention import SCORES_ATTR
from .se import attention_modules


@dataclass
class AttentionStats:
    """Per host module: mean and std of each channel's gate over images, and the mean per class."""

    mean: Dict[str, torch.Tensor] = field(default_factory=dict)
    std: Dict[str, torch.Tensor] = field(default_factory=dict)
    per_class: Dict[str, torch.Tensor] = field(default_factory=dict)
    images: int = 0

    def spread(self) -> Dict[str, float]:
        """Per host: average over channels of std/mean, i.e. how much folding the mean gate approximates."""
        return {k: float((self.std[k] / self.mean[k].clamp(min=1e-12)).mean()) for k in self.mean}

    def silenced(self, below: float = 0.1) -> Dict[str, float]:
        """Hosts whose median channel gate is under ``below``: the attention turned most of the layer off, so the
        attended network has lost that layer's signal (seen with strong gate penalties, docs/journal/)."""
        return {k: float(m.median()) for k, m in self.mean.items() if float(m.median()) < below}

    def summary(self) -> Dict[str, Dict[str, float]]:
        """Per host: distribution of the channel scores (min, quartiles, max) and the fold spread, JSON-able."""
        out = {}
        spread = self.spread()
        for k, m in self.mean.items():
            q = torch.quantile(m.double(), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
            out[k] = {"min": float(q[0]), "q1": float(q[1]), "median": float(q[2]), "q3": float(q[3]),
                      "max": float(q[4]), "fold_spread": spread[k]}
        return out


def _batches(data: Any, batch_size: int) -> Iterable:
    if hasattr(data, "splits") and hasattr(data, "classes"):
        return make_loader(data, "train", batch_size=batch_size, train=False, augment=False)
    return data


@torch.no_grad()
def attention_scores(model: nn.Module, data: Any, max_batches: Optional[int] = None, batch_size: int = 128,
                     num_classes: Optional[int] = None) -> AttentionStats:
    """Run ``data`` (a SceneDataset: its train split, no augmentation; or (x, y) batches) in eval mode and average
    every gate. Stores the means on the model for the ``attention`` criterion and returns all statistics."""
    found = attention_modules(model)
    if not found:
        raise ConfigError("the model has no attention modules; call prunekit.attention.insert_attention first")
    if num_classes is None and hasattr(data, "classes"):
        num_classes = len(data.classes)
    sums: Dict[str, torch.Tensor] = {}
    sq: Dict[str, torch.Tensor] = {}
    cls: Dict[str, Dict[int, torch.Tensor]] = {}  # host -> label -> sum of gates
    labels: Dict[str, Optional[torch.Tensor]] = {"y": None}
    counts: Dict[int, int] = {}

    def observer(name: str):
        def fn(g: torch.Tensor) -> None:
            g = g.double().cpu()
            sums[name] = sums.get(name, 0) + g.sum(0)
            sq[name] = sq.get(name, 0) + g.square().sum(0)
            y = labels["y"]
            if y is not None:
                per = cls.setdefault(name, {})
                for label in y.unique().tolist():
                    per[label] = per.get(label, 0) + g[y == label].sum(0)
        return fn

    for name, se in found.items():
        se.observer = observer(name)
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    n = 0
    try:
        src = _batches(data, batch_size)
        for item in (src if max_batches is None else itertools.islice(src, max_batches)):
            x, y = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, None)
            labels["y"] = y.cpu().long() if isinstance(y, torch.Tensor) else None
            if labels["y"] is not None:
                for label, k in zip(*labels["y"].unique(return_counts=True)):
                    counts[int(label)] = counts.get(int(label), 0) + int(k)
            model(x.to(device))
            n += len(x)
    finally:
        model.train(was)
        for se in found.values():
            se.observer = None
    if n == 0:
        raise ConfigError("attention_scores got no data; pass the training dataset or (x, y) batches")
    stats = AttentionStats(images=n)
    for name in found:
        mean = sums[name] / n
        stats.mean[name] = mean.float()
        stats.std[name] = (sq[name] / n - mean.square()).clamp(min=0).sqrt().float()
        if name in cls:
            k = max(num_classes or 0, max(counts) + 1)
            table = torch.full((k, mean.numel()), float("nan"))  # NaN: class absent from the data
            for label, total in cls[name].items():
                table[label] = (total / counts[label]).float()
            stats.per_class[name] = table
    setattr(model, SCORES_ATTR, dict(stats.mean))
    return stats


class ScoreForm(NamedTuple):
    """How a form ranks channels: the stored score is the mean gate, times |host scale| when ``scaled``
    (:func:`scale_by_host`), and ``criterion`` plans with it (``attention_gm`` weighs FPGM's geometry by it)."""

    scaled: bool
    criterion: str


SCORE_FORMS = {"gate": ScoreForm(False, "attention"), "gate_x_scale": ScoreForm(True, "attention"),
               "gate_gm": ScoreForm(False, "attention_gm"), "gate_x_scale_gm": ScoreForm(True, "attention_gm")}


@torch.no_grad()
def scale_by_host(model: nn.Module, gates: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """mean gate x |host scale| per channel: the channel's output scale once the attention is folded in.

    The SE gate multiplies the host's output, so a channel with a gate of 1 but a BatchNorm gamma near 0 still
    contributes nothing; this form weighs the attention by that scale (|gamma| for a BatchNorm host, the filter's
    L2 norm for a conv/Linear host). Call it before the attention is folded (folding multiplies gamma by the gate).
    """
    out = {}
    for name, g in gates.items():
        host = model.get_submodule(name)
        w = getattr(host, "weight", None)
        if w is None:
            raise ConfigError(f"attention host {name!r} ({type(host).__name__}) has no weight to scale the gate by; "
                              "use score='gate'")
        scale = w.detach().abs() if w.dim() == 1 else w.detach().flatten(1).norm(dim=1)
        out[name] = (g.to(scale.device) * scale.float()).cpu()
    return out
