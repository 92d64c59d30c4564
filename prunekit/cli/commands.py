"""The command table: name, options model, the library job it calls, and how its result is printed."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Type

from pydantic import BaseModel

from . import render, schemas


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    options: Type[BaseModel]
    job: Callable[[Any], Dict[str, Any]]
    render: Callable[[Dict[str, Any]], str]


def _train(opts):
    from ..pipeline import train_job

    return train_job(opts)


def _eval(opts):
    from ..pipeline import eval_job

    return eval_job(opts)


def _prune(opts):
    from ..pipeline import prune_job

    return prune_job(opts)


def _demo(opts):
    from ..demo import run_demo

    return run_demo(opts)


def _size(opts):
    from ..pipeline import size_job

    return size_job(opts)


def _export(opts):
    from ..pipeline import export_job

    return export_job(opts)


def _info(opts):
    from ..pipeline import info_job

    return info_job(opts)


COMMANDS = [
    Command("train", "train a model from scratch (or local weights) on a class-per-folder dataset",
            schemas.TrainOptions, _train, render.train),
    Command("eval", "evaluate a prunekit checkpoint: accuracy, per-class accuracy, confusion matrix",
            schemas.EvalOptions, _eval, render.evaluation),
    Command("prune", "prune a model (unstructured masks or structured channel removal), fine-tune, report",
            schemas.PruneOptions, _prune, render.prune),
    Command("info", "print a checkpoint's description and its measured size, parameters and MACs",
            schemas.InfoOptions, _info, render.info),
    Command("size", "dense size, compressed sparse size and the lossless entropy bound of a checkpoint",
            schemas.SizeOptions, _size, render.size),
    Command("export", "export a checkpoint to ONNX, verified with onnxruntime",
            schemas.ExportOptions, _export, render.info),
    Command("demo", "train, prune and fine-tune a compact CNN on the embedded UC Merced subset; before/after report",
            schemas.DemoOptions, _demo, render.prune),
]
