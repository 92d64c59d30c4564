"""Classification metrics from a confusion matrix (overall and per-class accuracy), and a model's width per epoch."""
from __future__ import annotations

from typing import Any, Dict, Sequence

import torch
from torch import nn


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows are true classes, columns predicted classes."""
    idx = target.to(torch.int64) * num_classes + pred.to(torch.int64)
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def summarize(cm: torch.Tensor, classes: Sequence[str] | None = None, loss: float | None = None) -> Dict[str, Any]:
    """Overall accuracy, per-class accuracy (recall) and the matrix itself, JSON-able."""
    cm = cm.to(torch.int64).cpu()
    total = int(cm.sum())
    per_class_n = cm.sum(dim=1)
    per_class = (cm.diag().double() / per_class_n.clamp(min=1).double()).tolist()
    names = list(classes) if classes is not None else [str(i) for i in range(cm.shape[0])]
    out: Dict[str, Any] = {
        "accuracy": float(cm.diag().sum()) / total if total else float("nan"),
        "samples": total,
        "per_class": {n: round(a, 4) for n, a, k in zip(names, per_class, per_class_n.tolist()) if k > 0},
        "confusion": cm.tolist(),
    }
    if loss is not None:
        out["loss"] = loss
    return out


@torch.no_grad()
def model_width(model: nn.Module) -> Dict[str, Any]:
    """``params`` (all parameters: falls when channels go) and ``sparsity`` (zero fraction of the weight tensors,
    the ones with 2+ dims: masks and zeroed filters) of ``model`` now."""
    params = sum(p.numel() for p in model.parameters())
    weights = [p for p in model.parameters() if p.ndim > 1]
    total = sum(p.numel() for p in weights)
    zeros = sum(int((p == 0).sum()) for p in weights)
    return {"params": params, "sparsity": round(zeros / total, 6) if total else 0.0}
