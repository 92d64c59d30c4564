"""``prunekit info``: what a checkpoint says about itself, and its measured size, parameters and MACs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from ..config import InfoOptions
from ..measure import measure_model
from ..report import flatten_measurement
from ..storage import checkpoint as ckpt


def info_job(opts: InfoOptions) -> Dict[str, Any]:
    """A checkpoint's description (without bulky training state) and its measured size, parameters and MACs."""
    loaded = ckpt.load_checkpoint(opts.checkpoint)
    desc = {k: v for k, v in loaded.description.items() if k != "train"}
    size = (desc.get("data") or {}).get("input_size", 64)
    m = measure_model(loaded.model, input_shape=(3, size, size), file_path=Path(opts.checkpoint),
                      latency=opts.latency)
    return {"checkpoint": opts.checkpoint, "description": desc, "measurement": flatten_measurement(m)}
