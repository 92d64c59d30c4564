"""``prunekit demo``: the whole story on the embedded UC Merced subset in a few minutes on a laptop CPU.

Trains a compact VGG-style CNN from scratch, removes half of its channels with the structured engine (L1 filter
norm), fine-tunes, and writes the before/after table (accuracy, parameters, nonzeros, MACs, file size, latency) as
``report.html``, ``report.md``, ``report.json`` and ``report.png``, and the per-epoch curves of both trainings as
``history.csv`` (and ``tb/`` when tensorboard is installed).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from ..config import DemoOptions, PruneOptions
from .prune import prune_job


def run_demo(opts: DemoOptions) -> Dict[str, Any]:
    """The prune job with the demo's fixed recipe (vgg_small, embedded data, L1, uniform ratio)."""
    prune_opts = PruneOptions(model="vgg_small", data=None, image_size=64, method="structured", ratio=opts.ratio,
                              criterion="l1", scope="uniform", epochs=opts.epochs, finetune_epochs=opts.finetune_epochs,
                              seed=opts.seed, device=opts.device, out=opts.out or Path("runs/demo"),
                              progress=opts.progress, json_output=opts.json_output, tensorboard=opts.tensorboard)
    return prune_job(prune_opts)
