"""``prunekit compare``: criteria compared on equal terms (protocol: :mod:`prunekit.compare`)."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict

from ..compare import cells_of, check, run_compare, write_report
from ..compare.cells import is_checkpoint
from ..config import CompareOptions
from ..device import pick_device
from ..errors import ConfigError
from ..models import check_model_name
from ..models.input_size import fit_input_size
from ..report import run_settings
from ..storage import checkpoint as ckpt
from ..train.logs import use_tensorboard
from .common import data_for_checkpoint, load_data


def compare_job(opts: CompareOptions) -> Dict[str, Any]:
    """``prunekit compare``: cells under ``<out>/cells``, base models under ``<out>/bases``, table, plot, JSON record
    and HTML page in ``<out>``."""
    check(opts)
    use_tensorboard(opts.tensorboard)  # --tensorboard without the package: refused before any training
    out = Path(opts.out or Path("runs") / "compare")
    settings = {**opts.model_dump(), "out": out, "results": out / "cells", "work": out / "bases", "docs": out,
                "name": opts.name or "criteria", "device": str(pick_device(opts.device))}
    if is_checkpoint(opts.model):  # a trained model: its split, input size and normalization; nothing to train
        if not Path(opts.model).is_file():
            raise ConfigError(f"--model {opts.model}: no such checkpoint; give a prunekit .safetensors file or a "
                              "model name such as vgg_small")
        data = data_for_checkpoint(opts, ckpt.load_checkpoint(opts.model, "cpu"), opts.model)
        settings.update(image_size=int(data.images.shape[-1]), base_epochs=0, base_seed=None)
    else:
        check_model_name(opts.model)  # before the data and any base training
        opts = fit_input_size(opts)  # the size the architecture takes (--image-size, else its own)
        settings["image_size"] = opts.image_size
        data = load_data(opts, opts.seed)
    shown = run_settings("compare", opts)
    opts = SimpleNamespace(**settings)
    total = len(cells_of(opts))
    ran = run_compare(opts, data, log=lambda line: print(line, file=sys.stderr, flush=True))  # stdout: the result
    report = write_report(opts, settings=shown)
    return {"out": str(out), "cells": total, "ran": len(ran), "table": report["table"],
            "markdown_path": report.get("markdown_path"), "plot": report.get("plot"),
            "html_path": report.get("html_path"), "json_path": report.get("json_path")}
