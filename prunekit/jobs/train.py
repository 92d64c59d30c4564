"""``prunekit train``: a model trained from scratch (or from local weights), evaluated on the test split; its
per-epoch curves in ``history.csv`` (and ``tb/`` for TensorBoard) beside the checkpoint."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict

from ..config import TrainOptions
from ..data import data_section
from ..device import pick_device, seed_everything
from ..models import create_model
from ..models.input_size import fit_input_size
from ..storage import checkpoint as ckpt
from ..train import TrainConfig, evaluate, fit, run_log
from .common import brief, load_data, write_json


def train_job(opts: TrainOptions) -> Dict[str, Any]:
    """Train ``opts.model`` from scratch (or from local weights) and evaluate it on the test split."""
    out = opts.out or Path("runs") / f"train-{opts.model.replace('/', '-')}"
    log = run_log(out, opts.tensorboard)  # before any work: --tensorboard without the package is refused here
    seed_everything(opts.seed)
    device = pick_device(opts.device)
    opts = fit_input_size(opts)  # the size the architecture takes (--image-size, else its own), before decoding
    ds = load_data(opts, opts.seed)
    model = create_model(opts.model, len(ds.classes), weights=opts.weights)
    cfg = TrainConfig(**{k: getattr(opts, k) for k in TrainConfig.model_fields})
    t0 = time.perf_counter()
    with log:
        res = fit(model, ds, cfg, device=device, out_dir=out, progress=opts.progress,
                  description={"data": data_section(ds)}, phase="train", loggers=[log])
    seconds = time.perf_counter() - t0
    test = evaluate(res.model, ds, "test", device=device)
    ckpt.save(res.model, out / "model.safetensors", data=data_section(ds), metrics={"test": brief(test)},
              recipe=opts.model_dump(mode="json"))
    result = {"model": opts.model, "out": str(out), "checkpoint": str(out / "model.safetensors"),
              "dataset": ds.describe(), "epochs_run": res.epochs_run, "resumed_from_epoch": res.resumed_from,
              "best_val_accuracy": res.best_val, "test": test, "train_seconds": round(seconds, 1),
              "history": res.history, "curves": log.curves(), "logs": log.files()}
    write_json(out / "metrics.json", result)
    return result
