"""``prunekit info``: what a checkpoint says about itself, and its measured size, parameters and MACs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from ..config import InfoOptions
from ..measure import measure_model
from ..report import flatten_measurement
from .common import load_given, model_input


def info_job(opts: InfoOptions) -> Dict[str, Any]:
    """A checkpoint's description (without bulky training state) and its size, parameters and MACs measured at the
    input it records (or ``--input-size``)."""
    loaded = load_given(opts)
    desc = {k: v for k, v in loaded.description.items() if k != "train"}
    spec = model_input(opts, desc)
    m = measure_model(loaded.model, input_shape=spec, file_path=Path(opts.checkpoint), latency=opts.latency)
    return {"checkpoint": opts.checkpoint, "description": desc, "input": spec.to_dict(),
            "measurement": flatten_measurement(m)}
