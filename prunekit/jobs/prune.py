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

from ..allocate import Target, parse_reduce, plan_for_target
from ..apply.oneshot import remove_planned
from ..attention import attention_prune
from ..config import PruneOptions
from ..data import calibration_batches, data_section
from ..device import pick_device, seed_everything
from ..errors import ConfigError
from ..deploy import prepare
from ..measure import measure_latency_together, measure_models
from ..measure.guard import speed_guard
from ..measure.latency_cuda import check_runtime, runtime_spec
from ..models import create_model
from ..models.input_size import fit_input_size
from ..report import flatten_measurement, run_settings, write_report
from ..schedules.base import check_criterion
from ..schedules.config import ScheduleConfig
from ..slimming import BNSparsity
from ..sparse import magnitude_prune, nm_prune, parse_nm
from ..sparse.kernels import sparsify_for_inference
from ..storage import checkpoint as ckpt
from ..train import MaskCallback, RunLogger, TrainConfig, evaluate, fit, run_log
from .common import data_for_checkpoint, load_data, write_json
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
    if _is_trained_source(opts) and opts.weights is None:
        return ckpt.load_checkpoint(Path(opts.model), device)
    return None


def _starting_model(opts: PruneOptions, ds, device, loaded: Optional[Any], log: RunLogger
                    ) -> Tuple[nn.Module, Dict[str, Any]]:
    """A prunekit checkpoint as given (``loaded``), or a model trained here from scratch (or from local weights)."""
    if loaded is not None:  # its data was loaded by data_for_checkpoint
        return loaded.model, {"source": str(Path(opts.model))}
    model = create_model(opts.model, len(ds.classes), weights=opts.weights)
    if opts.weights is not None or opts.epochs == 0:
        return model.to(device), {"source": opts.weights or "random init"}
    cfg = _train_config(opts)
    callbacks = []
    if opts.slimming:
        callbacks.append(BNSparsity(opts.slimming))
    res = fit(model, ds, cfg, device=device, out_dir=opts.out / "base", progress=opts.progress,
              callbacks=callbacks, description={"data": data_section(ds)}, phase="train", loggers=[log])
    return res.model, {"source": f"trained {res.epochs_run} epochs here", "history": res.history}


def _train_config(opts: PruneOptions) -> TrainConfig:
    """Training from scratch inside ``prune``: the ``--epochs`` budget with the training flags."""
    return TrainConfig(epochs=opts.epochs, batch_size=opts.batch_size, optimizer=opts.optimizer, lr=opts.lr,
                       seed=opts.seed)


def _finetune_config(opts: PruneOptions) -> TrainConfig:
    """Fine-tuning after pruning: no warm-up, a fifth of the training lr unless ``--finetune-lr`` is given."""
    return _train_config(opts).recovery(opts.finetune_epochs, opts.finetune_lr)


def _prune_structured(opts: PruneOptions, model: nn.Module, ds, log: RunLogger) -> Tuple[nn.Module, Dict[str, Any]]:
    """Allocate (one registered allocator: ratio, reduce, latency, latency_target, depth or budget), then remove by
    criterion."""
    device = next(model.parameters()).device
    example = ds.images[:2].float().to(device)
    scope = "uniform" if opts.scope == "layer" else "global"
    done: Dict[str, Any] = {"method": "structured", "criterion": opts.criterion, "scope": opts.scope}
    if opts.round_to is not None:
        done["round_to"] = {"asked": opts.round_to, "multiple": opts.round_to_value()}
    if opts.criterion == "attention":
        return _attention_prune(opts, model, ds, example, scope, done, log)
    plan_kwargs: Dict[str, Any] = {"scope": scope, "data": calibration_batches(ds, opts.calib_batches, device=device),
                                   "round_to": opts.round_to_value()}
    if opts.wants_depth():  # blocks go beside the channels the allocator picks (and count toward --reduce)
        plan_kwargs.update(depth=opts.depth, depth_blocks=opts.depth_blocks, depth_criterion=opts.depth_criterion)
    if opts.max_drop is not None:
        target = Target.of(allocation="budget")
        options = budget_request(opts, model, ds, example, plan_kwargs, _train_config(opts)).options
    else:
        target = Target.of(ratio=None if opts.reduce else channel_ratio(opts), reduce=opts.reduce or None,
                           allocation=opts.allocation if opts.reduce else "uniform")
        options = {"runtime": runtime_spec(opts.latency_runtime, opts.latency_dtype), "cache": opts.latency_cache,
                   "batch": opts.latency_batch, "depth_criterion": opts.depth_criterion}
    found = plan_for_target(model, example, target, opts.criterion, options=options, exact=True, **plan_kwargs)
    if opts.reduce:
        done["reduce"] = opts.reduce
    done.update(found.record)
    plan = found.plan
    remove_planned(model, plan, found.graph)
    done.update(ratio=found.plan_kwargs["ratio"], plan=json.loads(plan.to_json()))
    if plan.blocks:
        done.update(blocks_removed=plan.blocks, depth_criterion=plan.settings.get("depth_criterion"))
    return model, done


def channel_ratio(opts: PruneOptions) -> float:
    """``--ratio``, except 0 when depth pruning is asked and no ratio was typed: ``--depth 0.3`` alone removes
    blocks, not channels."""
    return 0.0 if opts.wants_depth() and "ratio" not in opts.model_fields_set else opts.ratio


def allocation_kind(opts: PruneOptions) -> str:
    """Which registered allocator the flags ask for: ``budget`` (--max-drop), ``latency_target`` (--reduce
    latency=...), ``latency`` / ``depth`` / ``fastest`` (--allocation ...), ``reduce`` (--reduce) or ``ratio``."""
    if opts.max_drop is not None:
        return "budget"
    if wants_latency_target(opts):
        return "latency_target"
    if opts.reduce:
        return opts.allocation if opts.allocation in ("latency", "depth", "fastest") else "reduce"
    return "ratio"


def wants_latency_target(opts: PruneOptions) -> bool:
    """``--reduce latency=...``: a measured latency target (the ``latency_target`` allocator)."""
    return bool(opts.reduce) and "latency" in parse_reduce(opts.reduce, measured=True)


def _check_latency_target(opts: PruneOptions) -> None:
    """A latency target times candidates once, before pruning, and picks blocks and one channel ratio itself."""
    if not wants_latency_target(opts):
        return
    if not (opts.method == "structured" and opts.schedule == "oneshot" and opts.scope == "layer"
            and opts.criterion != "attention" and opts.allocation == "uniform" and not opts.wants_depth()):
        raise ConfigError(f"--reduce {opts.reduce} times candidate models and picks blocks and one channel ratio "
                          "itself: use it with --structured one-shot pruning (no --schedule), layer scope, any "
                          "criterion but attention, without --allocation / --depth / --depth-blocks; or give a "
                          "macs=... / params=... target")


def _attention_prune(opts: PruneOptions, model: nn.Module, ds, example, scope: str, done: Dict[str, Any],
                     log: RunLogger):
    """SE attention inserted, trained, read, removed (folded or dropped); the channels it turns down go."""
    cfg = TrainConfig(batch_size=opts.batch_size, optimizer=opts.optimizer, lr=opts.finetune_lr, seed=opts.seed)
    model, plan, report = attention_prune(
        model, ds, example, ratio=opts.ratio, reduce=parse_reduce(opts.reduce) if opts.reduce else None,
        attention_epochs=opts.attention_epochs, mode=opts.attention_mode, sparsity=opts.attention_sparsity,
        reduction=opts.attention_reduction, removal=opts.attention_removal, score=opts.attention_score,
        budget=opts.attention_budget, train_cfg=cfg, device=next(model.parameters()).device, progress=opts.progress, scope=scope,
        round_to=opts.round_to_value(), loggers=[log])
    done.update(ratio=None if opts.reduce else opts.ratio, reduce=opts.reduce, attention=report,
                plan=json.loads(plan.to_json()))
    return model, done


def _prune(opts: PruneOptions, model: nn.Module, ds, log: RunLogger
           ) -> Tuple[nn.Module, list, Dict[str, Any], Optional[Any]]:
    """One-shot pruning. Returns (model, fine-tuning callbacks, what was done, masks or None)."""
    if opts.method == "structured":
        model, done = _prune_structured(opts, model, ds, log)
        return model, [], done, None
    if opts.nm:
        n, m = parse_nm(opts.nm)
        masks = nm_prune(model, n=n, m=m)
    else:
        allocation = opts.criterion if opts.criterion in ("lamp", "erk") else None
        masks = magnitude_prune(model, ratio=opts.ratio, scope=opts.scope, allocation=allocation)
    masks.apply(model)
    return model, [MaskCallback(masks)], {"method": "unstructured", "ratio": opts.ratio, "scope": opts.scope,
                                          "nm": opts.nm, "sparsity": dataclasses.asdict(masks.sparsity())}, masks


def _scheduled(opts: PruneOptions, model: nn.Module, ds, trained: bool, device, log: RunLogger
               ) -> Tuple[nn.Module, Dict, Any]:
    """Prune while training: during fine-tuning of a trained model, or during training from scratch."""
    if opts.nm:
        raise ConfigError("--nm prunes in one shot; use it with --schedule oneshot")
    recipe = ScheduleConfig.from_options(opts, scope=opts.scope)
    schedule = recipe.build()
    cfg = _finetune_config(opts) if trained else _train_config(opts)
    if opts.distill and not trained:
        raise ConfigError("--distill learns from the model before pruning, but this schedule trains from scratch; "
                          "give a trained --model (a checkpoint) or drop --distill")
    res = fit(model, ds, cfg, device=device, callbacks=[schedule], out_dir=opts.out / "schedule",
              progress=opts.progress, description={"data": data_section(ds)},
              teacher=model if opts.distill else None, phase="schedule", loggers=[log])  # fit copies the teacher
    done = {"method": opts.method, "schedule": recipe.model_dump(mode="json"), "epochs": cfg.epochs,
            "history": getattr(schedule, "history", None)}
    return res.model, done, getattr(schedule, "masks", None)


def prune_job(opts: PruneOptions) -> Dict[str, Any]:
    """Train or load, measure, prune (one shot, or on a schedule while training), fine-tune, measure, save, report."""
    if not opts.nm:
        check_criterion(opts.method, opts.criterion)
    if opts.method == "unstructured" and (opts.reduce or opts.round_to is not None):
        flag = "--reduce" if opts.reduce else "--round-to"
        raise ConfigError(f"{flag} shapes structured pruning (whole channels); with --unstructured give the fraction "
                          "of weights to remove as --ratio, or add --structured")
    _check_latency_target(opts)
    check_runtime(opts.latency_runtime, opts.latency_dtype)  # a GPU runtime without a GPU fails before the work
    if opts.sparse_kernels and opts.method != "unstructured":
        raise ConfigError("--sparse-kernels needs --unstructured (or --nm) pruning; structured pruning already gives "
                          "a smaller dense model")
    if opts.allocation == "latency" and not (opts.method == "structured" and opts.reduce and opts.scope == "layer"
                                             and opts.schedule == "oneshot" and opts.criterion != "attention"):
        raise ConfigError("--allocation latency works with --structured one-shot pruning to a --reduce target "
                          "(e.g. --reduce macs=0.5), layer scope, any criterion but attention")
    if opts.attention_budget and not (opts.method == "structured" and opts.criterion == "attention"
                                      and opts.schedule == "oneshot" and opts.scope == "layer"
                                      and opts.attention_sparsity > 0):
        raise ConfigError("--attention-budget aims the gate penalty of --structured one-shot --criterion attention, "
                          "layer scope: give --attention-sparsity > 0 (e.g. 3e-2) and drop --global / --schedule")
    if opts.max_drop is not None and not (opts.method == "structured" and opts.schedule == "oneshot"
                                          and opts.scope == "layer" and not opts.reduce
                                          and opts.allocation == "uniform"):
        raise ConfigError("--max-drop chooses per-layer ratios for --structured one-shot pruning, layer scope; drop "
                          "--reduce / --global / --schedule / --allocation latency (it replaces them)")
    _check_depth(opts)
    if opts.deploy != "eager" and not opts.latency:
        raise ConfigError(f"--deploy {opts.deploy} sets the form latency is timed in; drop --no-latency (or --deploy)")
    seed_everything(opts.seed)
    device = pick_device(opts.device)
    opts = opts.model_copy(update={"out": opts.out or Path("runs") / f"prune-{opts.method}"})
    out: Path = opts.out
    log = run_log(out, opts.tensorboard)  # history.csv (+ tb/): every training phase below, one row per epoch
    loaded = _given_checkpoint(opts, device)  # before the data: a checkpoint decides how it is split and sized
    if loaded is None:
        opts = fit_input_size(opts)  # the size the architecture takes (--image-size, else its own), before decoding
    ds = data_for_checkpoint(opts, loaded, opts.model) if loaded is not None else load_data(opts, opts.seed)
    from_scratch_schedule = opts.schedule != "oneshot" and not _is_trained_source(opts)
    if from_scratch_schedule:  # e.g. PFAM: soft pruning inside the original training run, no pretrained model
        model = create_model(opts.model, len(ds.classes)).to(device)
        start: Dict[str, Any] = {"source": "random init; pruned while training from scratch"}
        before_acc = None
    else:
        model, start = _starting_model(opts, ds, device, loaded, log)
        before_acc = evaluate(model, ds, "test", device=device)["accuracy"]
    base_file = out / "before.safetensors"
    ckpt.save(model, base_file, data=data_section(ds))
    t0 = time.perf_counter()
    if opts.schedule != "oneshot":
        pruned, done, masks = _scheduled(opts, copy.deepcopy(model), ds, not from_scratch_schedule, device, log)
        done["seconds"] = round(time.perf_counter() - t0, 1)
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


def _check_depth(opts: PruneOptions) -> None:
    """Depth pruning is a structured one-shot cut; --allocation depth finds the block count itself."""
    if opts.allocation == "depth" and not (opts.method == "structured" and opts.reduce and not opts.wants_depth()):
        raise ConfigError("--allocation depth removes the fewest whole blocks that reach a target: give --structured "
                          "and --reduce (e.g. --reduce macs=0.3), without --depth / --depth-blocks")
    if opts.allocation == "fastest" and not (opts.method == "structured" and opts.reduce and not opts.wants_depth()
                                             and opts.schedule == "oneshot" and opts.scope == "layer"
                                             and opts.criterion != "attention"):
        raise ConfigError("--allocation fastest times splits of a --reduce target between whole blocks and channels: "
                          "give --structured one-shot pruning, --reduce (e.g. macs=4x), layer scope, any criterion "
                          "but attention, without --depth / --depth-blocks")
    if opts.wants_depth() and not (opts.method == "structured" and opts.schedule == "oneshot"
                                   and opts.criterion != "attention" and opts.max_drop is None):
        raise ConfigError("--depth / --depth-blocks remove whole residual blocks in --structured one-shot pruning "
                          "(any channel criterion but attention, no --max-drop or --schedule)")


def _kernel_decisions(model: nn.Module, masks: Optional[Any], ds, done: Dict[str, Any]) -> Dict[str, Any]:
    """Time sparse against dense kernels per masked layer (batch 1, CPU) on a copy; summarize into ``done``."""
    example = calibration_batches(ds, 1)[0][0][:1].cpu()
    _, decisions = sparsify_for_inference(copy.deepcopy(model).cpu(), masks, example)
    sparse = [n for n, d in decisions["layers"].items() if d["kind"] != "dense"]
    done["sparse_kernels"] = {"layers_timed": len(decisions["layers"]), "layers_sparse": sparse,
                              "note": "recorded in the checkpoint; prunekit.load(path, sparse_kernels=True) uses them"}
    return decisions


def _is_trained_source(opts: PruneOptions) -> bool:
    return opts.weights is not None or Path(opts.model).suffix == ".safetensors" or Path(opts.model).is_file()
