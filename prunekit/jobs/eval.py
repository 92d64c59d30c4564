"""``prunekit eval``: a checkpoint's accuracy (overall, per class, confusion matrix) on one split of its data."""
from __future__ import annotations

from typing import Any, Dict

from ..config import EvalOptions
from ..device import pick_device
from ..report.eval_page import write_eval_report
from ..train import evaluate
from .common import checkpoint_with_data


def eval_job(opts: EvalOptions) -> Dict[str, Any]:
    """Evaluate ``opts.checkpoint`` on ``opts.split`` of the data it was trained on (its split, size, classes); with
    ``--out``, what is printed is also written there (eval.json, eval.md, eval.html)."""
    device = pick_device(opts.device)
    loaded, ds = checkpoint_with_data(opts, device)
    metrics = evaluate(loaded.model, ds, opts.split, batch_size=opts.batch_size, device=device)
    result = {"checkpoint": opts.checkpoint, "split": opts.split, "classes": list(ds.classes), **metrics}
    if opts.out is not None:
        result["report"] = {k: str(v) for k, v in write_eval_report(opts.out, result).items()}
    return result
