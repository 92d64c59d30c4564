"""The jobs the CLI runs, as library functions: train, evaluate, prune (+ fine-tune), measure.

Each takes the validated options of its command and returns a JSON-able result, so the CLI only parses and prints,
and the same jobs can be driven from Python or a YAML recipe.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from .cli.schemas import DataOptions, EvalOptions, PruneOptions, TrainOptions
from .data.loader import calibration_batches
from .errors import ConfigError
from .models import create_model
from .models.input_size import fit_input_size
from .runtime import atomic_path, pick_device, seed_everything
from .storage import checkpoint as ckpt
from .train import TrainConfig, evaluate, fit


def load_data(opts: DataOptions, seed: int, image_size: Optional[int] = None,
              fractions: Optional[Tuple[float, float]] = None):
    """The dataset split by ``seed`` and ``fractions`` (test, val; default the options')."""
    from .data import load_dataset

    test_frac, val_frac = fractions or (opts.test_frac, opts.val_frac)
    return load_dataset(opts.data, image_size=image_size or opts.image_size, seed=seed, test_frac=test_frac,
                        val_frac=val_frac, on_bad_image=opts.on_bad_image)


def data_section(ds) -> Dict[str, Any]:
    """What a checkpoint must remember about its data to be used later: classes, normalization, input size, and
    the split (seed and fractions), so later commands test it on images it was not trained on."""
    section = {"classes": list(ds.classes), "mean": list(ds.mean), "std": list(ds.std),
               "input_size": int(ds.images.shape[-1]), "source": str(ds.root)}
    if ds.split_seed is not None:  # None: splits made by hand, nothing to record
        section.update(split_seed=int(ds.split_seed), test_frac=float(ds.test_frac), val_frac=float(ds.val_frac))
    return section


def checkpoint_split(opts: DataOptions, desc: Dict[str, Any], path: Any) -> Tuple[int, Tuple[float, float]]:
    """``(split seed, (test_frac, val_frac))`` to load the data for a trained checkpoint with: the split it recorded,
    whatever ``opts.seed`` is (``--seed`` then only sets init, batch order and fine-tuning), so its test split holds
    no image it was trained on.

    A fraction given explicitly (``--test-frac``/``--val-frac`` typed or in a recipe, i.e. in the options'
    ``model_fields_set``) that differs from the recorded one is refused with one line; an unset one takes the
    checkpoint's value.
    """
    data = desc.get("data") or {}
    if "split_seed" not in data:
        # Written before checkpoints recorded their split: nothing to reuse, so split from --seed as before.
        return opts.seed, (opts.test_frac, opts.val_frac)
    recorded = (float(data["test_frac"]), float(data["val_frac"]))
    for name, value in zip(("test_frac", "val_frac"), recorded):
        asked = getattr(opts, name)
        if name in opts.model_fields_set and not math.isclose(asked, value):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"checkpoint {path} was split with {flag} {value:g}, but {flag} {asked:g} was given; "
                              f"drop {flag} (the checkpoint's split is reused so its test images stay unseen)")
    return int(data["split_seed"]), recorded


def write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str))


def _check_classes(model_desc: Dict[str, Any], ds, path: str) -> None:
    classes = (model_desc.get("data") or {}).get("classes")
    if classes is not None and list(classes) != list(ds.classes):
        raise ConfigError(f"checkpoint {path} was trained on classes {classes[:3]}... but the dataset has "
                          f"{list(ds.classes)[:3]}...; evaluate it on the dataset it was trained on")


def train_job(opts: TrainOptions) -> Dict[str, Any]:
    """Train ``opts.model`` from scratch (or from local weights) and evaluate it on the test split."""
    seed_everything(opts.seed)
    device = pick_device(opts.device)
    opts = fit_input_size(opts)  # the size the architecture takes (--image-size, else its own), before decoding
    ds = load_data(opts, opts.seed)
    model = create_model(opts.model, len(ds.classes), weights=opts.weights)
    cfg = TrainConfig(**{k: getattr(opts, k) for k in TrainConfig.model_fields})
    out = opts.out or Path("runs") / f"train-{opts.model.replace('/', '-')}"
    t0 = time.perf_counter()
    res = fit(model, ds, cfg, device=device, out_dir=out, progress=opts.progress,
              description={"data": data_section(ds)})
    seconds = time.perf_counter() - t0
    test = evaluate(res.model, ds, "test", device=device)
    ckpt.save(res.model, out / "model.safetensors", data=data_section(ds), metrics={"test": _brief(test)},
              recipe=opts.model_dump(mode="json"))
    result = {"model": opts.model, "out": str(out), "checkpoint": str(out / "model.safetensors"),
              "dataset": ds.describe(), "epochs_run": res.epochs_run, "resumed_from_epoch": res.resumed_from,
              "best_val_accuracy": res.best_val, "test": test, "train_seconds": round(seconds, 1),
              "history": res.history}
    write_json(out / "metrics.json", result)
    return result


def _brief(metrics: Dict[str, Any]) -> Dict[str, Any]:
    return {k: metrics[k] for k in ("accuracy", "loss", "samples") if k in metrics}


def data_for_checkpoint(opts: Any, loaded: Any, path: Any):
    """The dataset a trained checkpoint is used with: at its input size, normalization and split
    (:func:`checkpoint_split`, so its test images stay unseen whatever ``--seed``), refused with one line when its
    classes differ."""
    size = (loaded.description.get("data") or {}).get("input_size", opts.image_size)
    seed, fractions = checkpoint_split(opts, loaded.description, path)
    ds = load_data(opts, seed, image_size=size, fractions=fractions)
    _check_classes(loaded.description, ds, path)
    _use_checkpoint_normalization(ds, loaded.description)
    return ds


def checkpoint_with_data(opts: Any, device: Any) -> Tuple[Any, Any]:
    """``(loaded checkpoint, dataset)`` for a command that works on a trained checkpoint
    (:func:`data_for_checkpoint`)."""
    loaded = ckpt.load_checkpoint(opts.checkpoint, device)
    return loaded, data_for_checkpoint(opts, loaded, opts.checkpoint)


def eval_job(opts: EvalOptions) -> Dict[str, Any]:
    device = pick_device(opts.device)
    loaded, ds = checkpoint_with_data(opts, device)
    metrics = evaluate(loaded.model, ds, opts.split, batch_size=opts.batch_size, device=device)
    return {"checkpoint": opts.checkpoint, "split": opts.split, **metrics}


def _use_checkpoint_normalization(ds, desc: Dict[str, Any]) -> None:
    data = desc.get("data") or {}
    if data.get("mean") and data.get("std"):
        ds.mean, ds.std = tuple(data["mean"]), tuple(data["std"])


def _measure_pair(before: nn.Module, after: nn.Module, ds, files: Tuple[Path, Path], latency: bool,
                  accuracies: Tuple[Optional[float], float]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Both models measured in one go, latencies timed round-robin, so the speedup is not the machine's drift."""
    from .measure import measure_models
    from .report import flatten_measurement

    ms = measure_models([before, after], input_shape=tuple(ds.images.shape[1:]), file_paths=files, latency=latency)
    return ({"accuracy": accuracies[0], **flatten_measurement(ms[0])},
            {"accuracy": accuracies[1], **flatten_measurement(ms[1])})


def _given_checkpoint(opts: PruneOptions, device) -> Optional[Any]:
    """The prunekit checkpoint given as ``--model``, loaded; None for a model name (with or without --weights)."""
    if _is_trained_source(opts) and opts.weights is None:
        return ckpt.load_checkpoint(Path(opts.model), device)
    return None


def _starting_model(opts: PruneOptions, ds, device, loaded: Optional[Any]) -> Tuple[nn.Module, Dict[str, Any]]:
    """A prunekit checkpoint as given (``loaded``), or a model trained here from scratch (or from local weights)."""
    if loaded is not None:  # its data was loaded by data_for_checkpoint
        return loaded.model, {"source": str(Path(opts.model))}
    model = create_model(opts.model, len(ds.classes), weights=opts.weights)
    if opts.weights is not None or opts.epochs == 0:
        return model.to(device), {"source": opts.weights or "random init"}
    cfg = _train_config(opts)
    callbacks = []
    if opts.slimming:
        from .slimming import BNSparsity

        callbacks.append(BNSparsity(opts.slimming))
    res = fit(model, ds, cfg, device=device, out_dir=opts.out / "base", progress=opts.progress,
              callbacks=callbacks, description={"data": data_section(ds)})
    return res.model, {"source": f"trained {res.epochs_run} epochs here", "history": res.history}


def _train_config(opts: PruneOptions) -> TrainConfig:
    """Training from scratch inside ``prune``: the ``--epochs`` budget with the training flags."""
    return TrainConfig(epochs=opts.epochs, batch_size=opts.batch_size, optimizer=opts.optimizer, lr=opts.lr,
                       seed=opts.seed)


def _finetune_config(opts: PruneOptions) -> TrainConfig:
    """Fine-tuning after pruning: no warm-up, a fifth of the training lr unless ``--finetune-lr`` is given."""
    return _train_config(opts).recovery(opts.finetune_epochs, opts.finetune_lr)


def _prune_structured(opts: PruneOptions, model: nn.Module, ds) -> Tuple[nn.Module, Dict[str, Any]]:
    from .apply.structured import prune_structured

    device = next(model.parameters()).device
    example = ds.images[:2].float().to(device)
    scope = "uniform" if opts.scope == "layer" else "global"
    done: Dict[str, Any] = {"method": "structured", "criterion": opts.criterion, "scope": opts.scope}
    if opts.round_to is not None:
        from .measure.channel_multiple import resolve_round_to

        done["round_to"] = {"asked": opts.round_to, "multiple": resolve_round_to(opts.round_to_value())}
    if opts.criterion == "attention":
        return _attention_prune(opts, model, ds, example, scope, done)
    kwargs: Dict[str, Any] = {"scope": scope, "data": calibration_batches(ds, opts.calib_batches, device=device),
                              "round_to": opts.round_to_value()}
    if opts.max_drop is not None:
        from .balance.job import budget_record, scan_and_budget

        _, choice = scan_and_budget(opts, model, ds, example, opts.criterion, kwargs, _train_config(opts))
        if choice is None or not choice.overrides:
            raise ConfigError(f"no layer can lose channels within --max-drop {opts.max_drop} (accuracy points on the "
                              f"{opts.sensitivity_split} split after {opts.budget_epochs} recovery epochs); allow a "
                              "larger drop or more --budget-epochs")
        kwargs.update(choice.plan_kwargs())
        done.update(budget=budget_record(choice, opts.max_drop, opts.sensitivity_split, opts.budget_epochs))
    elif opts.reduce and opts.allocation == "latency":
        from .latency_alloc import latency_allocation, runtime_timer
        from .targets import parse_reduce

        latency_fn, runtime = runtime_timer((example[:1],), opts.latency_runtime)
        alloc = latency_allocation(model, example[:1], parse_reduce(opts.reduce), cache=opts.latency_cache,
                                   round_to=opts.round_to_value(), latency_fn=latency_fn, runtime=runtime)
        kwargs.update(alloc.plan_kwargs())
        done.update(reduce=opts.reduce, reduce_achieved=alloc.achieved, allocation="latency",
                    allocation_ratios=alloc.overrides, allocation_chosen=alloc.chosen,
                    allocation_cached=alloc.cached, allocation_blend=alloc.blend, allocation_runtime=runtime,
                    dense_latency_ms_b1=round(alloc.dense_ms, 3))
    elif opts.reduce:
        from .targets import parse_reduce, search_ratio

        found = search_ratio(model, example, parse_reduce(opts.reduce), criterion=opts.criterion, **kwargs)
        kwargs.update(found.plan_kwargs())
        done.update(reduce=opts.reduce, reduce_achieved=found.achieved)
    else:
        kwargs["ratio"] = opts.ratio
    model, plan = prune_structured(model, example, criterion=opts.criterion, **kwargs)
    done.update(ratio=kwargs["ratio"], plan=json.loads(plan.to_json()))
    return model, done


def _attention_prune(opts: PruneOptions, model: nn.Module, ds, example, scope: str, done: Dict[str, Any]):
    """SE attention inserted, trained, read, removed (folded or dropped); the channels it turns down go."""
    from .attention import attention_prune
    from .targets import parse_reduce

    cfg = TrainConfig(batch_size=opts.batch_size, optimizer=opts.optimizer, lr=opts.finetune_lr, seed=opts.seed)
    model, plan, report = attention_prune(
        model, ds, example, ratio=opts.ratio, reduce=parse_reduce(opts.reduce) if opts.reduce else None,
        attention_epochs=opts.attention_epochs, mode=opts.attention_mode, sparsity=opts.attention_sparsity,
        reduction=opts.attention_reduction, removal=opts.attention_removal, score=opts.attention_score,
        budget=opts.attention_budget, train_cfg=cfg, device=next(model.parameters()).device, progress=opts.progress, scope=scope,
        round_to=opts.round_to_value())
    done.update(ratio=None if opts.reduce else opts.ratio, reduce=opts.reduce, attention=report,
                plan=json.loads(plan.to_json()))
    return model, done


def _prune(opts: PruneOptions, model: nn.Module, ds) -> Tuple[nn.Module, list, Dict[str, Any], Optional[Any]]:
    """One-shot pruning. Returns (model, fine-tuning callbacks, what was done, masks or None)."""
    if opts.method == "structured":
        model, done = _prune_structured(opts, model, ds)
        return model, [], done, None
    from .sparse import MaskCallback, magnitude_prune, nm_prune, parse_nm

    if opts.nm:
        n, m = parse_nm(opts.nm)
        masks = nm_prune(model, n=n, m=m)
    else:
        allocation = opts.criterion if opts.criterion in ("lamp", "erk") else None
        masks = magnitude_prune(model, ratio=opts.ratio, scope=opts.scope, allocation=allocation)
    masks.apply(model)
    return model, [MaskCallback(masks)], {"method": "unstructured", "ratio": opts.ratio, "scope": opts.scope,
                                          "nm": opts.nm, "sparsity": dataclasses.asdict(masks.sparsity())}, masks


def _scheduled(opts: PruneOptions, model: nn.Module, ds, trained: bool, device) -> Tuple[nn.Module, Dict, Any]:
    """Prune while training: during fine-tuning of a trained model, or during training from scratch."""
    from .schedules.config import ScheduleConfig

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
              teacher=model if opts.distill else None)  # fit copies the teacher before training starts
    done = {"method": opts.method, "schedule": recipe.model_dump(mode="json"), "epochs": cfg.epochs,
            "history": getattr(schedule, "history", None)}
    return res.model, done, getattr(schedule, "masks", None)


def prune_job(opts: PruneOptions) -> Dict[str, Any]:
    """Train or load, measure, prune (one shot, or on a schedule while training), fine-tune, measure, save, report."""
    from .report import write_report

    if not opts.nm:
        from .schedules.base import check_criterion

        check_criterion(opts.method, opts.criterion)
    if opts.method == "unstructured" and (opts.reduce or opts.round_to is not None):
        flag = "--reduce" if opts.reduce else "--round-to"
        raise ConfigError(f"{flag} shapes structured pruning (whole channels); with --unstructured give the fraction "
                          "of weights to remove as --ratio, or add --structured")
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
    seed_everything(opts.seed)
    device = pick_device(opts.device)
    opts = opts.model_copy(update={"out": opts.out or Path("runs") / f"prune-{opts.method}"})
    out: Path = opts.out
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
        model, start = _starting_model(opts, ds, device, loaded)
        before_acc = evaluate(model, ds, "test", device=device)["accuracy"]
    base_file = out / "before.safetensors"
    ckpt.save(model, base_file, data=data_section(ds))
    t0 = time.perf_counter()
    if opts.schedule != "oneshot":
        pruned, done, masks = _scheduled(opts, copy.deepcopy(model), ds, not from_scratch_schedule, device)
        done["seconds"] = round(time.perf_counter() - t0, 1)
    else:
        pruned, callbacks, done, masks = _prune(opts, copy.deepcopy(model), ds)
        done["prune_seconds"] = round(time.perf_counter() - t0, 3)
        if opts.finetune_epochs:
            res = fit(pruned, ds, _finetune_config(opts), device=device, callbacks=callbacks,
                      out_dir=out / "finetune", progress=opts.progress, description={"data": data_section(ds)},
                      teacher=model if opts.distill else None)
            pruned = res.model
    after_acc = evaluate(pruned, ds, "test", device=device)["accuracy"]
    final = out / "model.safetensors"
    extras = {f"@mask/{k}": v for k, v in masks.state_dict().items()} if masks is not None else None
    codec = {"values": opts.quantize or "fp32"} if masks is not None else None
    kernels = _kernel_decisions(pruned, masks, ds, done) if opts.sparse_kernels else None
    ckpt.save(pruned, final, extras=extras, codec=codec, data=data_section(ds), pruning=done,
              metrics={"test_accuracy": after_acc}, recipe=opts.model_dump(mode="json"), sparse_kernels=kernels)
    before, after = _measure_pair(model, pruned, ds, (base_file, final), opts.latency, (before_acc, after_acc))
    paths = write_report(out, f"prunekit: {opts.method} pruning of {opts.model}", before, after,
                         extra={"settings": opts.model_dump(mode="json"), "pruning": done, "start": start})
    result = {"out": str(out), "checkpoint": str(final), "before": before, "after": after, "pruning": done,
              "report": {k: str(v) for k, v in paths.items()}}
    write_json(out / "result.json", result)
    return result


def _kernel_decisions(model: nn.Module, masks: Optional[Any], ds, done: Dict[str, Any]) -> Dict[str, Any]:
    """Time sparse against dense kernels per masked layer (batch 1, CPU) on a copy; summarize into ``done``."""
    from .sparse.kernels import sparsify_for_inference

    example = calibration_batches(ds, 1)[0][0][:1].cpu()
    _, decisions = sparsify_for_inference(copy.deepcopy(model).cpu(), masks, example)
    sparse = [n for n, d in decisions["layers"].items() if d["kind"] != "dense"]
    done["sparse_kernels"] = {"layers_timed": len(decisions["layers"]), "layers_sparse": sparse,
                              "note": "recorded in the checkpoint; prunekit.load(path, sparse_kernels=True) uses them"}
    return decisions


def _is_trained_source(opts: PruneOptions) -> bool:
    return opts.weights is not None or Path(opts.model).suffix == ".safetensors" or Path(opts.model).is_file()


def info_job(opts) -> Dict[str, Any]:
    """A checkpoint's description (without bulky training state) and its measured size, parameters and MACs."""
    from .measure import measure_model
    from .report import flatten_measurement

    loaded = ckpt.load_checkpoint(opts.checkpoint)
    desc = {k: v for k, v in loaded.description.items() if k != "train"}
    size = (desc.get("data") or {}).get("input_size", 64)
    m = measure_model(loaded.model, input_shape=(3, size, size), file_path=Path(opts.checkpoint),
                      latency=opts.latency)
    return {"checkpoint": opts.checkpoint, "description": desc, "measurement": flatten_measurement(m)}


def size_job(opts) -> Dict[str, Any]:
    """Dense size, compressed size and the lossless entropy bound of a checkpoint's weights."""
    from .sparse.codec import size_report

    rep = size_report(opts.checkpoint, values=opts.values)
    return {"checkpoint": opts.checkpoint, "file_bytes": Path(opts.checkpoint).stat().st_size, **rep.as_dict(),
            "text": str(rep)}


def export_job(opts) -> Dict[str, Any]:
    """ONNX export of a checkpoint, verified against PyTorch with onnxruntime."""
    from .export import export_onnx

    model = ckpt.load(opts.checkpoint)
    size = (model.prunekit_description.get("data") or {}).get("input_size", 64)
    return export_onnx(model, opts.onnx, input_shape=(3, size, size), opset=opts.opset)
