"""The command table: name, options model, the library job it calls, and how its result is printed."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any, Callable, Dict, Type

from pydantic import BaseModel

from .. import config
from . import render


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    options: Type[BaseModel]
    target: str  # "module:function" of the job, imported only when the command runs (keeps --help fast)
    render: Callable[[Dict[str, Any]], str]

    def job(self, opts: BaseModel) -> Dict[str, Any]:
        """Import the job's module now (not at --help time) and run it on the parsed options."""
        module, func = self.target.split(":")
        return getattr(import_module(module), func)(opts)


COMMANDS = [
    Command("train", "train a model from scratch (or local weights) on a class-per-folder dataset",
            config.TrainOptions, "prunekit.jobs.train:train_job", render.train),
    Command("eval", "evaluate a prunekit checkpoint: accuracy, per-class accuracy, confusion matrix",
            config.EvalOptions, "prunekit.jobs.eval:eval_job", render.evaluation),
    Command("prune", "prune a model (unstructured masks or structured channel removal), fine-tune, report",
            config.PruneOptions, "prunekit.jobs.prune:prune_job", render.prune),
    Command("sensitivity", "per-layer sensitivity of a trained checkpoint (accuracy drop with one layer pruned), "
            "and with --max-drop the per-layer ratios that remove the most MACs within that accuracy budget",
            config.SensitivityOptions, "prunekit.jobs.sensitivity:sensitivity_job", render.sensitivity),
    Command("compare", "compare channel criteria on a dataset: the same base model, targets and fine-tuning budget "
            "for each, several seeds; table and accuracy-vs-MACs plot (resumable: one file per cell)",
            config.CompareOptions, "prunekit.jobs.compare:compare_job", render.compare),
    Command("info", "print a checkpoint's description and its measured size, parameters and MACs",
            config.InfoOptions, "prunekit.jobs.info:info_job", render.checkpoint_info),
    Command("size", "dense size, compressed sparse size and the lossless entropy bound of a checkpoint",
            config.SizeOptions, "prunekit.jobs.size:size_job", render.size),
    Command("export", "export a checkpoint to ONNX, verified with onnxruntime",
            config.ExportOptions, "prunekit.jobs.export:export_job", render.export),
    Command("demo", "train, prune and fine-tune a compact CNN on the embedded UC Merced subset; before/after report",
            config.DemoOptions, "prunekit.jobs.demo:run_demo", render.prune),
]
