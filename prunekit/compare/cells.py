"""One cell of a criteria comparison: (criterion, target, seed) -> a JSON row, under the same budget for all.

Per seed, one unpruned model is trained for ``base_epochs`` (cached as a safetensors checkpoint in ``work``; with
``base_seed`` every seed prunes that one base). A cell copies it, finds the channel ratio that reaches the target
(uniform scope: one ratio searched once per target, so every criterion removes the same number of channels per
layer and only *which* differs; global scope: each criterion's scores set the per-layer counts), prunes with the
criterion (attention forms train SE modules first and fold them away), re-estimates BatchNorm statistics on
``recal_batches`` training batches (the same for all), measures accuracy before fine-tuning, fine-tunes
``finetune_epochs`` (cosine, peak ``finetune_lr``) and measures again. The ``unpruned`` cell is the base fine-tuned
for the same epochs: the same total budget.

``opts`` is any object with the attributes of :class:`prunekit.config.CompareOptions` (the benchmark script
passes its argparse namespace).
"""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any, Dict

import torch

from ..allocate.reduce import parse_reduce, search_ratio
from ..allocate.target import Target, plan_for_target
from ..apply.oneshot import remove_planned
from ..attention import attention_prune
from ..data import calibration_batches, data_section
from ..device import seed_everything
from ..importance.pfam import variant_from_spec
from ..measure import count_macs, count_params
from ..measure.latency import measure_latency_together
from ..models import create_model
from ..storage.checkpoint import load, save
from ..train import TrainConfig, evaluate, fit, run_log
from ..train.bn import recalibrate_bn

# criterion name -> its attention_prune arguments; the attention criteria of the comparison
ATTENTION_FORMS = {"attention": {"score": "gate"}, "attention_scale": {"score": "gate_x_scale"},
                   "attention_gm": {"score": "gate_gm"}, "attention_scale_gm": {"score": "gate_x_scale_gm"},
                   "attention_budget": {"score": "gate", "budget": True}}
FINETUNE_LR = 0.01  # cells at another fine-tuning lr carry it in their key and row


def data_name(opts: Any) -> str:
    """Short name of the data in cell keys and rows: the data folder's name, or "embedded" without one."""
    return "embedded" if opts.data is None else Path(opts.data).resolve().name


def is_checkpoint(model: str) -> bool:
    """``--model`` names a trained prunekit checkpoint (the base of every seed) rather than an architecture."""
    return Path(model).suffix == ".safetensors"


def model_tag(opts: Any) -> str:
    """The model as a file-name part (torchvision/resnet18 -> torchvision_resnet18; runs/base/model.safetensors ->
    runs_base_model)."""
    name = Path(opts.model).with_suffix("").as_posix() if is_checkpoint(opts.model) else opts.model
    return name.replace("/", "_").strip("._")


def key_of(opts: Any, criterion: str, target: str, seed: int) -> str:
    """The cell's file stem: every setting that changes its result, so a rerun finds and skips it."""
    crit = criterion.replace("@", "_").replace("=", "").replace(",", "_")
    scope = "-global" if opts.scope == "global" and criterion != "unpruned" else ""
    return (f"{model_tag(opts)}-{data_name(opts)}{opts.image_size}-{crit}-{target.replace('=', '')}-s{seed}"
            f"-b{opts.base_epochs}-f{opts.finetune_epochs}{'-kd' if opts.distill else ''}{scope}"
            f"{'' if opts.finetune_lr == FINETUNE_LR else f'-lr{opts.finetune_lr:g}'}"
            f"{'' if opts.base_seed is None else f'-bs{opts.base_seed}'}")


def base_model(opts: Any, data: Any, seed: int) -> torch.nn.Module:
    """The unpruned model of this seed, trained once and cached as a safetensors checkpoint (or the checkpoint
    ``--model`` names)."""
    if is_checkpoint(opts.model):
        return load(opts.model)
    stem = f"base-{model_tag(opts)}-{data_name(opts)}{opts.image_size}-s{seed}-b{opts.base_epochs}"
    path = Path(opts.work) / f"{stem}.safetensors"
    if path.is_file():
        return load(path)
    if opts.progress:
        print(f"training the unpruned base ({opts.model}, {opts.base_epochs} epochs, seed {seed}) -> {path}",
              file=sys.stderr, flush=True)
    seed_everything(seed)
    model = create_model(opts.model, len(data.classes))
    cfg = TrainConfig(epochs=opts.base_epochs, batch_size=opts.batch_size, seed=seed)
    with _cell_log(opts, path.stem) as log:
        model = fit(model, data, cfg, device=opts.device, out_dir=Path(opts.work) / f"train-{path.stem}",
                    progress=opts.progress, phase="train", loggers=[log]).model.cpu()
    save(model, path, data=data_section(data))  # its split too: prunekit prune --model reuses it
    return model


def prune(opts: Any, model: torch.nn.Module, data: Any, criterion: str, target: str, seed: int,
          x: torch.Tensor, ratios: Dict[str, Any]) -> Dict[str, Any]:
    """Prune ``model`` in place to ``target``; returns the plan, the make_plan arguments and extras to record.

    Uniform scope: one ratio per target for every criterion (searched once: counts do not depend on scores).
    Global scope: each criterion's own scores decide the per-layer counts, so the ratio is searched per criterion.
    """
    reduce = parse_reduce(target)
    if opts.scope == "uniform" and target not in ratios:
        ratios[target] = search_ratio(model, x, reduce).plan_kwargs()
    if criterion in ATTENTION_FORMS:
        cfg = TrainConfig(batch_size=opts.batch_size, lr=opts.attention_lr, warmup_epochs=0, seed=seed)
        how = dict(ratios[target]) if opts.scope == "uniform" else {"reduce": reduce, "scope": "global"}
        _, plan, report = attention_prune(model, data, x, attention_epochs=opts.attention_epochs,
                                          mode=opts.attention_mode, sparsity=opts.attention_sparsity,
                                          removal=opts.attention_removal,
                                          **ATTENTION_FORMS[criterion], train_cfg=cfg, device=opts.device,
                                          max_batches=None, seed=seed, **how)
        extra = {k: report[k] for k in ("removal", "score", "budget", "scores", "fold_logit_max_abs",
                                        "top1_agreement_after_removal", "ratio_search")}
        return {"plan": plan, "plan_kwargs": {k: v for k, v in how.items() if k != "reduce"}, "extra": extra}
    calib = calibration_batches(data, opts.calib_batches)
    name = variant_from_spec(criterion)
    counts = ratios.get(target, {})
    goal = Target.of(ratio=counts["ratio"], overrides=counts.get("overrides")) if opts.scope == "uniform" \
        else Target.of(reduce=reduce)
    found = plan_for_target(model, x, goal, name, exact=True, scope=opts.scope, data=calib, seed=seed)
    remove_planned(model, found.plan, found.graph)
    kw = found.plan_kwargs  # recorded as before: ratio, overrides when any, scope when global
    how = {"ratio": kw["ratio"], **({"overrides": kw["overrides"]} if kw.get("overrides") else {}),
           **({"scope": "global"} if opts.scope == "global" else {})}
    return {"plan": found.plan, "plan_kwargs": how, "extra": {}}


def _latency_with_dense(base: torch.nn.Module, model: torch.nn.Module, shape: tuple) -> Dict[str, float]:
    """Batch-1 CPU latency (median, IQR) of the cell's model and of its unpruned base, timed together (interleaved
    runs), so a slow-down of the machine while timing hits both alike; their IQRs show how steady it was."""
    (dense, dense_iqr), (ms, iqr) = measure_latency_together([base, model], shape, (1,), device="cpu",
                                                              max_seconds=30.0)
    # the cap is for huge models only: a capped timing can stop after one round, and one sample's IQR reads 0
    return {"latency_ms_b1": ms[1], "latency_spread_ms_b1": iqr[1], "dense_latency_ms_b1": dense[1],
            "dense_latency_spread_ms_b1": dense_iqr[1]}


def _cell_log(opts: Any, stem: str):
    """Per-epoch records of one cell's (or base's) training under ``<out>/logs/<stem>/`` (history.csv, tb/), so
    ``tensorboard --logdir <out>/logs`` shows the criteria's fine-tuning curves side by side."""
    return run_log(Path(opts.out) / "logs" / stem, getattr(opts, "tensorboard", None))


def run_cell(opts: Any, data: Any, criterion: str, target: str, seed: int, ratios: Dict[str, Any]) -> Dict[str, Any]:
    """Prune (unless ``criterion`` is "unpruned"), fine-tune and measure one cell; returns its JSON row."""
    x = torch.zeros(1, 3, opts.image_size, opts.image_size)
    base = base_model(opts, data, seed if opts.base_seed is None else opts.base_seed)
    shape = (3, opts.image_size, opts.image_size)
    base_params, base_macs = count_params(base), count_macs(base, shape)[0]
    model = copy.deepcopy(base)
    t0 = time.perf_counter()
    row: Dict[str, Any] = {"model": opts.model, "data": data_name(opts), "image_size": opts.image_size,
                           "criterion": criterion, "target": target, "seed": seed, "base_epochs": opts.base_epochs,
                           "finetune_epochs": opts.finetune_epochs, "finetune_lr": opts.finetune_lr,
                           "distill": opts.distill, "scope": opts.scope,
                           "base_seed": seed if opts.base_seed is None else opts.base_seed}
    if criterion != "unpruned":
        seed_everything(seed)
        decided = prune(opts, model, data, criterion, target, seed, x, ratios)
        plan = decided["plan"]
        row.update(plan_kwargs=decided["plan_kwargs"], extra=decided["extra"],
                   removed={g.module: g.remove for g in plan.groups},
                   kept={g.module: g.size - len(g.remove) for g in plan.groups},
                   sizes={g.module: g.size for g in plan.groups})
        model.to(opts.device)
        if opts.recal_batches:  # removed input channels shift every BN's statistics; the same batches for all
            recalibrate_bn(model, calibration_batches(data, opts.recal_batches, device=opts.device))
            model.eval()
        row["recal_batches"] = opts.recal_batches
        row["test_acc_before_ft"] = evaluate(model, data, "test")["accuracy"]
        if len(data.splits.get("val", [])):
            row["val_acc_before_ft"] = evaluate(model, data, "val")["accuracy"]
    row["prune_seconds"] = round(time.perf_counter() - t0, 2)
    cfg = TrainConfig(epochs=opts.finetune_epochs, batch_size=opts.batch_size, lr=opts.finetune_lr, warmup_epochs=0,
                      seed=seed)
    with _cell_log(opts, key_of(opts, criterion, target, seed)) as log:
        tuned = fit(model.to(opts.device), data, cfg, device=opts.device, progress=opts.progress,
                    teacher=base if opts.distill else None, phase="finetune", loggers=[log])
    model, row["history"] = tuned.model, tuned.history
    row["val_acc"] = evaluate(model, data, "val")["accuracy"] if len(data.splits.get("val", [])) else None
    row["test_acc"] = evaluate(model, data, "test")["accuracy"]
    model = model.cpu()
    row["params"], row["macs"] = count_params(model), count_macs(model, shape)[0]
    row["params_reduction"] = 1 - row["params"] / base_params
    row["macs_reduction"] = 1 - row["macs"] / base_macs
    row.update(_latency_with_dense(base, model, shape) if opts.latency else {"latency_ms_b1": None})
    row["device"] = torch.device(opts.device).type
    row["threads"] = torch.get_num_threads()
    return row
