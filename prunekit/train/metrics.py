"""Classification metrics from a confusion matrix: overall accuracy, per-class accuracy."""
from __future__ import annotations

from typing import Any, Dict, Sequence

import torch


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
