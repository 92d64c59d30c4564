"""The CLI's side of the balancing act: ``prunekit sensitivity`` and ``prunekit prune --max-drop``."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Tuple

from torch import nn

from ..errors import ConfigError
from .budget import BudgetChoice, budget_search
from .sensitivity import Sensitivity, layer_sensitivity


def scan_and_budget(opts: Any, model: nn.Module, ds: Any, example: Any, criterion: str,
                    plan_kwargs: Dict[str, Any], train_cfg: Any = None) -> Tuple[Sensitivity, BudgetChoice | None]:
    """Sensitivity scan on ``opts.sensitivity_split`` (finished cells kept in ``opts.out``), then, when
    ``opts.max_drop`` is set, the budget search (each candidate given ``opts.budget_epochs`` of recovery from
    ``train_cfg``'s recipe when > 0)."""
    from ..train import TrainConfig, fit
    from . import data_scorer

    if criterion == "attention":
        raise ConfigError("the sensitivity scan prunes one layer at a time with a plain criterion; use e.g. "
                          "--criterion l2 (attention trains modules for the whole network)")
    device = next(model.parameters()).device
    score, recal = data_scorer(ds, opts.sensitivity_split, opts.recal_batches, device=device)
    if opts.sensitivity_file:
        sens = load_scan(opts.sensitivity_file, model, example, criterion, opts.sensitivity_split)
    else:
        partial = Path(opts.out) / "sensitivity.partial.json"
        sens = layer_sensitivity(model, example, score, ratios=opts.sensitivity_ratios, criterion=criterion,
                                 recalibrate=recal, progress=opts.progress,
                                 resume=_partial(partial), on_cell=lambda part: _save_partial(partial, part),
                                 **plan_kwargs)
        partial.unlink(missing_ok=True)
    choice = None
    if opts.max_drop is not None:
        finetune = None
        if opts.budget_epochs:
            cfg = (train_cfg or TrainConfig(seed=opts.seed)).recovery(opts.budget_epochs)

            def finetune(m: nn.Module) -> nn.Module:
                return fit(m, ds, cfg, device=device, progress=False).model.eval()

        choice = budget_search(model, example, sens, score, max_drop=opts.max_drop / 100.0,
                               recalibrate=recal, criterion=criterion,
                               finetune=finetune, **plan_kwargs)
    return sens, choice


def _partial(path: Path) -> Sensitivity | None:
    """The scan a stopped run left (every finished cell), or None; a damaged file is ignored."""
    try:
        return Sensitivity.from_json(path.read_text()) if path.is_file() else None
    except (ValueError, TypeError):
        return None


def _save_partial(path: Path, sens: Sensitivity) -> None:
    from ..runtime import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(sens.to_json())


def load_scan(path: str, model: nn.Module, example: Any, criterion: str, split: str) -> Sensitivity:
    """A scan saved by ``prunekit sensitivity`` (its sensitivity.json), checked against this model and settings."""
    import json

    from ..graph import build_graph

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


def budget_record(choice: BudgetChoice, max_drop: float, split: str, epochs: int) -> Dict[str, Any]:
    """What a checkpoint and a report keep of the budget search (points, not fractions)."""
    return {"max_drop_points": max_drop, "split": split, "drop_points": round(100 * choice.drop, 3),
            "score": choice.score, "baseline": choice.baseline, "threshold_points": round(100 * choice.threshold, 3),
            "macs_reduction": choice.macs_reduction, "params_reduction": choice.params_reduction,
            "overrides": choice.overrides, "trials": len(choice.trials),
            "candidates": [{k: round(v, 4) for k, v in t.items()} for t in choice.trials],
            "recovery_epochs": epochs}


def sensitivity_job(opts: Any) -> Dict[str, Any]:
    """Load a checkpoint, scan every prunable layer, write JSON + heat map, and optionally the budget choice."""
    from ..pipeline import checkpoint_with_data, write_json
    from ..report import plot_sensitivity
    from ..runtime import pick_device, seed_everything

    seed_everything(opts.seed)
    device = pick_device(opts.device)
    opts = opts.model_copy(update={"out": opts.out or Path("runs") / "sensitivity"})
    out: Path = opts.out
    loaded, ds = checkpoint_with_data(opts, device)
    model = loaded.model.eval()
    example = ds.images[:2].float().to(device)
    sens, choice = scan_and_budget(opts, model, ds, example, opts.criterion,
                                   {"round_to": opts.round_to_value()})
    out.mkdir(parents=True, exist_ok=True)
    drops = [[100 * sens.drop(n, r) for r in sens.ratios] for n in sens.layers]
    plot = plot_sensitivity(sens.layers, sens.ratios, drops, out / "sensitivity.png",
                            title=f"{Path(opts.checkpoint).name}: {opts.sensitivity_split} accuracy drop, one layer "
                                  "pruned")
    result: Dict[str, Any] = {"checkpoint": opts.checkpoint, "out": str(out), "plot": str(plot),
                              "split": opts.sensitivity_split, "sensitivity": dataclasses.asdict(sens),
                              "table": sens.table(scale=100.0)}
    if choice is not None:
        result["budget"] = budget_record(choice, opts.max_drop, opts.sensitivity_split, opts.budget_epochs)
    write_json(out / "sensitivity.json", result)
    return result
