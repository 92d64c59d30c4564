"""The command table: name, options model, the library job it calls, and how its result is printed.

Everything but the names and help lines is a "module:name" string imported only when that command runs (or its
``--help`` is asked), so ``prunekit --help`` imports neither torch nor the options models."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any, Callable, Dict, Type

if TYPE_CHECKING:
    from pydantic import BaseModel


def _load(path: str) -> Any:
    module, name = path.split(":")
    return getattr(import_module(module), name)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    options_path: str  # "module:Class" of the options model
    target: str  # "module:function" of the job
    render_name: str  # function of prunekit.cli.render that prints the result

    @property
    def options(self) -> Type["BaseModel"]:
        """The options model (imported now: it validates with the library's parsers, which import torch)."""
        return _load(self.options_path)

    @property
    def render(self) -> Callable[[Dict[str, Any]], str]:
        return _load(f"prunekit.cli.render:{self.render_name}")

    def job(self, opts: "BaseModel") -> Dict[str, Any]:
        """Import the job's module now (not at --help time) and run it on the parsed options."""
        return _load(self.target)(opts)


def _options(name: str) -> str:
    return f"prunekit.config:{name}"


COMMANDS = [
    Command("train", "train a model from scratch (or local weights) on a class-per-folder dataset",
            _options("TrainOptions"), "prunekit.jobs.train:train_job", "train"),
    Command("eval", "evaluate a prunekit checkpoint: accuracy, per-class accuracy, confusion matrix",
            _options("EvalOptions"), "prunekit.jobs.eval:eval_job", "evaluation"),
    Command("prune", "prune a model (unstructured masks or structured channel removal), fine-tune, report; "
            "--dry-run shows the plan and the training it would run",
            _options("PruneOptions"), "prunekit.jobs.prune:prune_job", "prune"),
    Command("sensitivity", "per-layer sensitivity of a trained checkpoint (accuracy drop with one layer pruned), "
            "and with --max-drop the per-layer ratios that remove the most MACs within that accuracy budget",
            _options("SensitivityOptions"), "prunekit.jobs.sensitivity:sensitivity_job", "sensitivity"),
    Command("compare", "compare channel criteria on a dataset: the same base model, targets and fine-tuning budget "
            "for each, several seeds; table and accuracy-vs-MACs plot (resumable: one file per cell)",
            _options("CompareOptions"), "prunekit.jobs.compare:compare_job", "compare"),
    Command("info", "print a checkpoint's description and its measured size, parameters and MACs",
            _options("InfoOptions"), "prunekit.jobs.info:info_job", "checkpoint_info"),
    Command("size", "dense size, compressed sparse size and the lossless entropy bound of a checkpoint",
            _options("SizeOptions"), "prunekit.jobs.size:size_job", "size"),
    Command("export", "export a checkpoint to ONNX, verified with onnxruntime",
            _options("ExportOptions"), "prunekit.jobs.export:export_job", "export"),
    Command("demo", "train, prune and fine-tune a compact CNN on the embedded UC Merced subset; before/after report",
            _options("DemoOptions"), "prunekit.jobs.demo:run_demo", "prune"),
]
