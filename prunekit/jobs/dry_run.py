"""``prunekit prune --dry-run``: what the run would do, decided before anything is trained or written: the plan
(or the masks), and the training with an estimated time (epochs x batches x one measured training step)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from torch import nn

from ..config import PruneOptions
from ..data import calibration_batches
from ..data.loader import make_loader
from ..report.preview import step_seconds, training_estimate


def training_phases(opts: PruneOptions) -> List[Dict[str, Any]]:
    """The training the run would do, in order, each with its epochs."""
    trained = opts.starts_trained()
    phases: List[Dict[str, Any]] = []
    if not trained and opts.epochs:
        what = "train from scratch" + (f", pruning on the {opts.schedule} schedule" if opts.schedule != "oneshot"
                                       else "")
        phases.append({"phase": what, "epochs": opts.epochs})
    if opts.method == "structured" and opts.criterion == "attention" and opts.attention_epochs:
        phases.append({"phase": "train the attention modules", "epochs": opts.attention_epochs})
    if opts.finetune_epochs and (trained or opts.schedule == "oneshot"):
        what = f"fine-tune, pruning on the {opts.schedule} schedule" if opts.schedule != "oneshot" else "fine-tune"
        phases.append({"phase": what, "epochs": opts.finetune_epochs})
    return phases


def dry_run(opts: PruneOptions, model: nn.Module, ds, reach: Optional[Dict[str, Any]],
            preview: Dict[str, Any]) -> Dict[str, Any]:
    """The result of ``--dry-run``: ``preview`` (plan or masks), the reach of ``--reduce`` and the training
    estimate. One training step of ``model`` is timed on a copy; nothing else runs."""
    device = next(model.parameters()).device
    phases = training_phases(opts)
    seconds: Optional[float] = None
    batches = len(make_loader(ds, "train", batch_size=opts.batch_size, device=device))
    if phases:
        batch = calibration_batches(ds, 1, batch_size=opts.batch_size, device=device)[0]
        seconds = step_seconds(model, batch)
    return {"dry_run": True, "model": opts.model, "mode": opts.mode(), "reduce_target": reach, **preview,
            "training": training_estimate(phases, seconds, batches), "written": []}
