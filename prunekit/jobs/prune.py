"""``prunekit prune``: train or load, measure, prune (one shot, or on a schedule while training), fine-tune, measure,
save, report."""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from torch import nn

from ..allocate import Target, TargetPlan, parse_reduce, plan_for_target
from ..allocate.reduce import check_reachable
from ..apply.oneshot import remove_planned
from ..attention import attention_prune
from ..config import PruneOptions
from ..data import calibration_batches, data_section
from ..device import pick_device, seed_everything
from ..deploy import prepare
from ..measure import measure_latency_together, measure_models
from ..measure.guard import speed_guard
from ..measure.latency_cuda import check_runtime, runtime_spec
from ..models import create_model
from ..models.input_size import fit_input_size
from ..report import flatten_measurement, run_settings, write_report
from ..report.preview import preview_plan
from ..schedules.config import ScheduleConfig
from ..slimming import BNSparsity
from ..sparse import magnitude_prune, nm_prune, parse_nm
from ..sparse.kernels import sparsify_for_inference
from ..storage import checkpoint as ckpt
from ..train import MaskCallback, RunLogger, TrainConfig, evaluate, fit, run_log
from .common import data_for_checkpoint, load_data, write_json
from .dry_run import dry_run
from .sensitivity import budget_request


def _measure_pair(before: nn.Module, after: nn.Module, ds, files: Tuple[Path, Path], latency: bool,
                  accuracies: Tuple[Optional[float], float], form: str = "eager"
                  ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Both models measured in one go, latencies timed round-robin, so the speedup is not the machine's drift;
    with a deploy ``form`` other than eager, sizes are counted on the models and latency timed on their deployed
    forms (both alike)."""
    shape = tuple(ds.images.shape[1:])
    ms = measure_models([before, after], input_shape=shape, file_paths=files, latency=latency and form == "eager")
    if latency and form != "eager":
        example = ds.images[:1].float().to(next(before.parameters()).device)
        deployed = [prepare(copy.deepcopy(m), form, example) for m in (before, after)]
        timed = measure_latency_together(deployed, shape, (1, 32), device=example.device)
        ms = [dataclasses.replace(m, latency_ms=t[0], latency_spread_ms=t[1]) for m, t in zip(ms, timed)]
    return ({"accuracy": accuracies[0], **flatten_measurement(ms[0])},
            {"accuracy": accuracies[1], **flatten_measurement(ms[1])})


def _given_checkpoint(opts: PruneOptions, device) -> Optional[Any]:
    """The prunekit checkpoint given as ``--model``, loaded; None for a model name (with or without --weights)."""
    if opts.starts_trained() and opts.weights is None:
        return ckpt.load_checkpoint(Path(opts.model), device)
    return None


def _initial_model(opts: PruneOptions, ds, device, loaded: Optional[Any]) -> nn.Module:
    """The model as given: a loaded checkpoint, a name with its ``--weights``, or a name freshly initialised."""
    if loaded is not None:  # its data was loaded by data_for_checkpoint
        return loaded.model
    return create_model(opts.model, len(ds.classes), weights=opts.weights).to(device)


def needs_training(opts: PruneOptions) -> bool:
    """A name without weights, trained here for ``--epochs`` (> 0) before a one-shot cut."""
    return not opts.starts_trained() and bool(opts.epochs)


def _starting_model(opts: PruneOptions, ds, device, model: nn.Module, log: RunLogger
                    ) -> Tuple[nn.Module, Dict[str, Any]]:
    """The model pruned: as given, or trained here from scratch first (``--epochs``)."""
    if opts.starts_trained():
        return model, {"source": opts.weights or str(Path(opts.model))}
    if not needs_training(opts):
        return model, {"source": "random init"}
    cfg = _train_config(opts)
    callbacks = []
    if opts.slimming:
        callbacks.append(BNSparsity(opts.slimming))
    res = fit(model, ds, cfg, device=device, out_dir=opts.out / "base", progress=opts.progress,
              callbacks=callbacks, description={"data": data_section(ds)}, phase="train", loggers=[log])
    return res.model, {"source": f"trained {res.epochs_run} epochs here", "history": res.history}


def _train_config(opts: PruneOptions) -> TrainConfig:
    """Training from scratch inside ``prune``: the ``--epochs`` budget with the training flags."""
    return TrainConfig(epochs=opts.epochs or 0, batch_size=opts.batch_size, optimizer=opts.optimizer, lr=opts.lr,
                       seed=opts.seed)


def _finetune_config(opts: PruneOptions) -> TrainConfig:
    """Fine-tuning after pruning: no warm-up, a fifth of the training lr unless ``--finetune-lr`` is given."""
    return _train_config(opts).recovery(opts.finetune_epochs, opts.finetune_lr)


def _prune_structured(opts: PruneOptions, model: nn.Module, ds, log: RunLogger) -> Tuple[nn.Module, Dict[str, Any]]:
    """Allocate (one registered allocator: ratio, reduce, latency, latency_target, depth or budget), then remove by
    criterion."""
    device = next(model.parameters()).device
    example = ds.images[:2].float().to(device)
    scope = opts.scope
    done: Dict[str, Any] = {"method": "structured", "criterion": opts.criterion, "scope": opts.scope}
    if opts.round_to is not None:
        done["round_to"] = {"asked": opts.round_to, "multiple": opts.round_to_value()}
    if opts.criterion == "attention":
        return _attention_prune(opts, model, ds, example, scope, done, log)
    found = structured_plan(opts, model, ds, example, exact=True)
    if opts.reduce:
        done["reduce"] = opts.reduce
    done.update(found.record)
    plan = found.plan
    remove_planned(model, plan, found.graph)
    done.update(ratio=found.plan_kwargs["ratio"], plan=json.loads(plan.to_json()))
    if plan.blocks:
        done.update(blocks_removed=plan.blocks, depth_criterion=plan.settings.get("depth_criterion"))
    return model, done


def structured_plan(opts: PruneOptions, model: nn.Module, ds, example: Any, exact: bool,
                    criterion: Optional[str] = None) -> TargetPlan:
    """The checked plan of the run's target (ratio, reduce, latency, latency_target, depth, fastest or budget), by
    ``plan_for_target``; ``criterion`` overrides the run's (a preview of the attention flow)."""
    plan_kwargs = {**_plan_shape(opts), "data": calibration_batches(ds, opts.calib_batches, device=example.device)}
    target = run_target(opts)
    if target.kind == "budget":
        options = budget_request(opts, model, ds, example, plan_kwargs, _train_config(opts)).options
    else:
        options = {"runtime": runtime_spec(opts.latency_runtime, opts.latency_dtype), "cache": opts.latency_cache,
                   "batch": opts.latency_batch, "depth_criterion": opts.depth_criterion}
    return plan_for_target(model, example, target, criterion or opts.criterion, options=options, exact=exact,
                           **plan_kwargs)


def run_target(opts: PruneOptions) -> Target:
    """The run's target: the accuracy budget (--max-drop), the --reduce target split by --allocation, or the
    ratio; its ``kind`` names the registered allocator that reaches it."""
    if opts.max_drop is not None:
        return Target.of(allocation="budget")
    return Target.of(ratio=None if opts.reduce else opts.ratio_value(), reduce=opts.reduce or None,
                     allocation=opts.allocation if opts.reduce else "uniform")


def check_target(opts: PruneOptions, model: nn.Module, example: Any) -> Optional[Dict[str, Any]]:
    """A MACs / params target no plan reaches is refused now, before any training, unless ``--closest``
    (``allocate.reduce.check_reachable``); timed and budget allocations decide their own reach."""
    if run_target(opts).kind != "reduce":
        return None
    return check_reachable(model, example, parse_reduce(opts.reduce), closest=opts.closest, **_plan_shape(opts))


def _plan_shape(opts: PruneOptions) -> Dict[str, Any]:
    """The ``make_plan`` arguments the flags fix whatever the allocator: scope, rounding, ignored modules, and the
    blocks that go beside the channels (they count toward --reduce)."""
    kwargs: Dict[str, Any] = {"scope": opts.scope, "round_to": opts.round_to_value(), "ignore": list(opts.ignore)}
    if opts.wants_depth():
        kwargs.update(depth=opts.depth, depth_blocks=opts.depth_blocks, depth_criterion=opts.depth_criterion)
    return kwargs


def _attention_prune(opts: PruneOptions, model: nn.Module, ds, example, scope: str, done: Dict[str, Any],
                     log: RunLogger):
    """SE attention inserted, trained, read, removed (folded or dropped); the channels it turns down go."""
    cfg = TrainConfig(batch_size=opts.batch_size, optimizer=opts.optimizer, lr=opts.finetune_lr, seed=opts.seed)
    model, plan, report = attention_prune(
        model, ds, example, ratio=opts.ratio_value(), reduce=parse_reduce(opts.reduce) if opts.reduce else None,
        attention_epochs=opts.attention_epochs, mode=opts.attention_mode, sparsity=opts.attention_sparsity,
        reduction=opts.attention_reduction, removal=opts.attention_removal, score=opts.attention_score,
        budget=opts.attention_budget, train_cfg=cfg, device=next(model.parameters()).device, progress=opts.progress, scope=scope,
        round_to=opts.round_to_value(), loggers=[log])
    done.update(ratio=None if opts.reduce else opts.ratio_value(), reduce=opts.reduce, attention=report,
                plan=json.loads(plan.to_json()))
    return model, done


def _prune(opts: PruneOptions, model: nn.Module, ds, log: RunLogger
           ) -> Tuple[nn.Module, list, Dict[str, Any], Optional[Any]]:
    """One-shot pruning. Returns (model, fine-tuning callbacks, what was done, masks or None)."""
    if opts.method == "structured":
        model, done = _prune_structured(opts, model, ds, log)
        return model, [], done, None
    masks = unstructured_masks(opts, model)
    masks.apply(model)
    return model, [MaskCallback(masks)], {"method": "unstructured", "ratio": None if opts.nm else opts.ratio_value(),
                                          "scope": opts.scope, "nm": opts.nm,
                                          "sparsity": dataclasses.asdict(masks.sparsity())}, masks


def unstructured_masks(opts: PruneOptions, model: nn.Module):
    """The masks of ``--nm`` or of ``--ratio`` by magnitude (l1, or lamp / erk sharing a global budget); the model's
    weights are zeroed where they go."""
    skip = list(opts.ignore) or None
    if opts.nm:
        n, m = parse_nm(opts.nm)
        return nm_prune(model, n=n, m=m, skip=skip)
    allocation = opts.criterion if opts.criterion in ("lamp", "erk") else None
    scope = "layer" if opts.scope == "uniform" else "global"  # prunekit.sparse's word for the same ratio per layer
    return magnitude_prune(model, ratio=opts.ratio_value(), scope=scope, allocation=allocation, skip=skip)


def _scheduled(opts: PruneOptions, model: nn.Module, ds, trained: bool, device, log: RunLogger
               ) -> Tuple[nn.Module, Dict, Any]:
    """Prune while training: during fine-tuning of a trained model, or during training from scratch."""
    recipe = ScheduleConfig.from_options(opts, scope=opts.scope, ratio=opts.ratio_value())
    structured = {"round_to": opts.round_to_value(), "calib_batches": opts.calib_batches}
    schedule = recipe.build(**(structured if opts.method == "structured" else {}))
    cfg = _finetune_config(opts) if trained else _train_config(opts)
    res = fit(model, ds, cfg, device=device, callbacks=[schedule], out_dir=opts.out / "schedule",
              progress=opts.progress, description={"data": data_section(ds)},
              teacher=model if opts.distill else None, phase="schedule", loggers=[log])  # fit copies the teacher
    done = {"method": opts.method, "schedule": recipe.model_dump(mode="json"), "epochs": cfg.epochs,
            "history": getattr(schedule, "history", None)}
    return res.model, done, getattr(schedule, "masks", None)


def prune_job(opts: PruneOptions) -> Dict[str, Any]:
    """Train or load, measure, prune (one shot, or on a schedule while training), fine-tune, measure, save, report.

    The flags were checked by PruneOptions' validators; what needs the model (can ``--reduce`` be reached?) is
    checked here before any training. ``--dry-run`` stops there with the plan and the training it would run."""
    check_runtime(opts.latency_runtime, opts.latency_dtype)  # a GPU runtime without a GPU fails before the work
    seed_everything(opts.seed)
    device = pick_device(opts.device)
    opts = opts.model_copy(update={"out": opts.out or Path("runs") / f"prune-{opts.method}"})
    out: Path = opts.out
    loaded = _given_checkpoint(opts, device)  # before the data: a checkpoint decides how it is split and sized
    if loaded is None:
        opts = fit_input_size(opts)  # the size the architecture takes (--image-size, else its own), before decoding
    ds = data_for_checkpoint(opts, loaded, opts.model) if loaded is not None else load_data(opts, opts.seed)
    model = _initial_model(opts, ds, device, loaded)
    reach = check_target(opts, model, ds.images[:2].float().to(device))  # before any training
    if opts.dry_run:
        return dry_run(opts, model, ds, reach, _preview(opts, model, ds))
    log = run_log(out, opts.tensorboard)  # history.csv (+ tb/): every training phase below, one row per epoch
    from_scratch_schedule = opts.schedule != "oneshot" and not opts.starts_trained()
    if from_scratch_schedule:  # e.g. PFAM: soft pruning inside the original training run, no pretrained model
        start: Dict[str, Any] = {"source": "random init; pruned while training from scratch"}
        before_acc = None
    else:
        model, start = _starting_model(opts, ds, device, model, log)
        before_acc = evaluate(model, ds, "test", device=device)["accuracy"]
    base_file = out / "before.safetensors"
    ckpt.save(model, base_file, data=data_section(ds))
    t0 = time.perf_counter()
    if opts.schedule != "oneshot":
        pruned, done, masks = _scheduled(opts, copy.deepcopy(model), ds, not from_scratch_schedule, device, log)
        done["prune_seconds"] = round(time.perf_counter() - t0, 1)  # the training run the schedule prunes during
    else:
        pruned, callbacks, done, masks = _prune(opts, copy.deepcopy(model), ds, log)
        done["prune_seconds"] = round(time.perf_counter() - t0, 3)
        if opts.finetune_epochs:  # what fine-tuning starts from: how much the cut itself cost
            done["test_accuracy_after_cut"] = evaluate(pruned, ds, "test", device=device)["accuracy"]
            res = fit(pruned, ds, _finetune_config(opts), device=device, callbacks=callbacks,
                      out_dir=out / "finetune", progress=opts.progress, description={"data": data_section(ds)},
                      teacher=model if opts.distill else None, phase="finetune", loggers=[log])
            pruned = res.model
    log.close()  # every epoch is already on disk (written per epoch); this ends the TensorBoard writers
    after_acc = evaluate(pruned, ds, "test", device=device)["accuracy"]
    final = out / "model.safetensors"
    extras = {f"@mask/{k}": v for k, v in masks.state_dict().items()} if masks is not None else None
    codec = {"values": opts.quantize or "fp32"} if masks is not None else None
    kernels = _kernel_decisions(pruned, masks, ds, done) if opts.sparse_kernels else None
    ckpt.save(pruned, final, extras=extras, codec=codec, data=data_section(ds), pruning=done,
              metrics={"test_accuracy": after_acc}, recipe=opts.model_dump(mode="json"), sparse_kernels=kernels)
    before, after = _measure_pair(model, pruned, ds, (base_file, final), opts.latency, (before_acc, after_acc),
                                  opts.deploy)
    if opts.latency and opts.deploy != "eager":
        done["latency_form"] = opts.deploy
    if opts.latency and opts.method == "structured":  # not faster somewhere: one line on stderr with the fix
        done["speed_guard"] = speed_guard(
            model, pruned, tuple(ds.images.shape[1:]), runtime_spec(opts.latency_runtime, opts.latency_dtype),
            (1, opts.latency_batch), opts.model_dump(include={"round_to", "allocation", "deploy"}), before, after,
            None if opts.deploy == "eager" else lambda m, x: prepare(m, opts.deploy, x, autocast=opts.latency_dtype))
    paths = write_report(out, f"prunekit: {opts.method} pruning of {opts.model}", before, after,
                         extra={**run_settings("prune", opts, _used(opts, done)), "pruning": done, "start": start,
                                "curves": log.curves()}, timed_together=True)
    result = {"out": str(out), "checkpoint": str(final), "before": before, "after": after, "pruning": done,
              "report": {k: str(v) for k, v in paths.items()}, "logs": log.files()}
    write_json(out / "result.json", result)
    return result


def _used(opts: PruneOptions, done: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The ratio the cut used (a --reduce target searches its own; None: no ratio played a part), for the report."""
    return {"ratio": done.get("ratio")} if "ratio" in done or opts.reduce else None


def _preview(opts: PruneOptions, model: nn.Module, ds) -> Dict[str, Any]:
    """What the cut would remove, on the model as it is now (an untrained one for a run that trains first: the
    counts of a uniform cut do not depend on the weights). Allocations that time candidates or scan sensitivity
    decide at run time and are not previewed."""
    example = ds.images[:2].float().to(next(model.parameters()).device)
    if opts.method == "unstructured":
        masks = unstructured_masks(opts, copy.deepcopy(model))
        return {"masks": dataclasses.asdict(masks.sparsity())}
    if run_target(opts).kind not in ("ratio", "reduce", "depth") or opts.schedule != "oneshot":
        return {"plan": None, "plan_note": "decided while the run goes (a schedule prunes during training; a "
                                           "timed or sensitivity allocation measures first): not previewed"}
    criterion = "l2" if opts.criterion == "attention" else opts.criterion  # attention scores need its training
    found = structured_plan(opts, model, ds, example, exact=False, criterion=criterion)
    return {"plan": preview_plan(model, example, found.plan, found.graph), "allocation": found.record,
            "plan_note": "which channels go is decided by attention training" if criterion != opts.criterion else None}


def _kernel_decisions(model: nn.Module, masks: Optional[Any], ds, done: Dict[str, Any]) -> Dict[str, Any]:
    """Time sparse against dense kernels per masked layer (batch 1, CPU) on a copy; summarize into ``done``."""
    example = calibration_batches(ds, 1)[0][0][:1].cpu()
    _, decisions = sparsify_for_inference(copy.deepcopy(model).cpu(), masks, example)
    sparse = [n for n, d in decisions["layers"].items() if d["kind"] != "dense"]
    done["sparse_kernels"] = {"layers_timed": len(decisions["layers"]), "layers_sparse": sparse,
                              "note": "recorded in the checkpoint; prunekit.load(path, sparse_kernels=True) uses them"}
    return decisions
