"""``prunekit sensitivity`` and the scan behind ``prunekit prune --max-drop``: how much each layer can lose.

The scan is resumable (every finished cell is kept in ``<out>/sensitivity.partial.json``), and a finished scan can
be reused (``--sensitivity-file``) after a check that it was made on this model with the same criterion and split.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from torch import nn

from ..allocate import AllocationRequest, Sensitivity, layer_sensitivity
from ..allocate.allocators import budget_choice
from ..allocate.budget import budget_record
from ..config import PruneOptions, SensitivityOptions
from ..device import pick_device, seed_everything
from ..errors import ConfigError
from ..files import atomic_path
from ..graph import build_graph
from ..report import plot_sensitivity
from ..train import TrainConfig, data_scorer, fit
from .common import checkpoint_with_data, write_json


def scan(opts: Any, model: nn.Module, ds: Any, example: Any, criterion: str,
         plan_kwargs: Dict[str, Any]) -> tuple[Sensitivity, Callable, Optional[Callable]]:
    """``(sensitivity, score, recalibrate)``: the scan on ``opts.sensitivity_split`` (or the one in
    ``opts.sensitivity_file``), finished cells kept in ``opts.out`` so a killed scan resumes."""
    if criterion == "attention":
        raise ConfigError("the sensitivity scan prunes one layer at a time with a plain criterion; use e.g. "
                          "--criterion l2 (attention trains modules for the whole network)")
    device = next(model.parameters()).device
    score, recal = data_scorer(ds, opts.sensitivity_split, opts.recal_batches, device=device)
    if opts.sensitivity_file:
        return load_scan(opts.sensitivity_file, model, example, criterion, opts.sensitivity_split), score, recal
    partial = Path(opts.out) / "sensitivity.partial.json"
    sens = layer_sensitivity(model, example, score, ratios=opts.sensitivity_ratios, criterion=criterion,
                             recalibrate=recal, progress=opts.progress,
                             resume=_partial(partial), on_cell=lambda part: _save_partial(partial, part),
                             **plan_kwargs)
    partial.unlink(missing_ok=True)
    return sens, score, recal


def budget_request(opts: PruneOptions, model: nn.Module, ds: Any, example: Any, plan_kwargs: Dict[str, Any],
                   train_cfg: TrainConfig) -> AllocationRequest:
    """The ``budget`` allocator's request for ``prune --max-drop``: the scan and its score."""
    sens, score, recal = scan(opts, model, ds, example, opts.criterion, plan_kwargs)
    return _budget_request(opts, model, ds, example, plan_kwargs, sens, score, recal, train_cfg)


def _budget_request(opts: Any, model: nn.Module, ds: Any, example: Any, plan_kwargs: Dict[str, Any],
                    sens: Sensitivity, score: Callable, recal: Optional[Callable],
                    train_cfg: TrainConfig) -> AllocationRequest:
    return AllocationRequest(model, example, criterion=opts.criterion, plan_kwargs=plan_kwargs,
                             options=_budget_options(opts, model, ds, sens, score, recal, train_cfg))


def _budget_options(opts: Any, model: nn.Module, ds: Any, sens: Sensitivity, score: Callable,
                    recal: Optional[Callable], train_cfg: TrainConfig) -> Dict[str, Any]:
    """The budget search's inputs; with ``--budget-epochs`` each candidate first recovers for that many epochs of
    ``train_cfg``'s recipe."""
    finetune = None
    if opts.budget_epochs:
        cfg = train_cfg.recovery(opts.budget_epochs)
        device = next(model.parameters()).device

        def finetune(m: nn.Module) -> nn.Module:
            return fit(m, ds, cfg, device=device, progress=False).model.eval()

    return dict(sensitivity=sens, score=score, recalibrate=recal, finetune=finetune, max_drop=opts.max_drop,
                split=opts.sensitivity_split, epochs=opts.budget_epochs)


def _partial(path: Path) -> Sensitivity | None:
    """The scan a stopped run left (every finished cell), or None; a damaged file is ignored."""
    try:
        return Sensitivity.from_json(path.read_text()) if path.is_file() else None
    except (ValueError, TypeError):
        return None


def _save_partial(path: Path, sens: Sensitivity) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(sens.to_json())


def load_scan(path: str, model: nn.Module, example: Any, criterion: str, split: str) -> Sensitivity:
    """A scan saved by ``prunekit sensitivity`` (its sensitivity.json), checked against this model and settings."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--sensitivity-file {path} does not exist; give the sensitivity.json that prunekit "
                          "sensitivity wrote")
    try:
        data = json.loads(file.read_text())
        sens = Sensitivity(**data["sensitivity"]) if "sensitivity" in data else Sensitivity(**data)
    except (ValueError, TypeError, KeyError):
        raise ConfigError(f"--sensitivity-file {path} is not a sensitivity scan; give the sensitivity.json that "
                          "prunekit sensitivity wrote") from None
    scanned = sens.settings.get("criterion", criterion)
    if scanned != criterion or data.get("split", split) != split:
        raise ConfigError(f"--sensitivity-file {path} was scanned with --criterion {scanned} on the "
                          f"{data.get('split', split)} split; use the same --criterion / --sensitivity-split or scan "
                          "again")
    known = build_graph(model, tuple(example) if isinstance(example, (tuple, list)) else (example,)).prunable_modules()
    missing = [n for n in sens.layers if n not in known]
    if missing:
        raise ConfigError(f"--sensitivity-file {path} names layer {missing[0]!r}, which this model has no prunable "
                          "channels in; it was scanned on another model")
    return sens


def sensitivity_job(opts: SensitivityOptions) -> Dict[str, Any]:
    """Load a checkpoint, scan every prunable layer, write JSON + heat map, and optionally the budget choice."""
    seed_everything(opts.seed)
    device = pick_device(opts.device)
    opts = opts.model_copy(update={"out": opts.out or Path("runs") / "sensitivity"})
    out: Path = opts.out
    loaded, ds = checkpoint_with_data(opts, device)
    model = loaded.model.eval()
    example = ds.images[:2].float().to(device)
    plan_kwargs = {"round_to": opts.round_to_value()}
    sens, score, recal = scan(opts, model, ds, example, opts.criterion, plan_kwargs)
    out.mkdir(parents=True, exist_ok=True)
    drops = [[100 * sens.drop(n, r) for r in sens.ratios] for n in sens.layers]
    plot = plot_sensitivity(sens.layers, sens.ratios, drops, out / "sensitivity.png",
                            title=f"{Path(opts.checkpoint).name}: {opts.sensitivity_split} accuracy drop, one layer "
                                  "pruned")
    result: Dict[str, Any] = {"checkpoint": opts.checkpoint, "out": str(out), "plot": str(plot),
                              "split": opts.sensitivity_split, "sensitivity": dataclasses.asdict(sens),
                              "table": sens.table(scale=100.0)}
    if opts.max_drop is not None:  # here an empty choice is a finding to report, not an error
        choice = budget_choice(_budget_request(opts, model, ds, example, plan_kwargs, sens, score, recal,
                                               TrainConfig(seed=opts.seed)))
        result["budget"] = budget_record(choice, opts.max_drop, opts.sensitivity_split, opts.budget_epochs)
    write_json(out / "sensitivity.json", result)
    return result
