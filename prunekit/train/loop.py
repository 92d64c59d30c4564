"""The one training loop: SGD/AdamW, warm-up + cosine, label smoothing, AMP, clipping, early stopping, DDP, resume.

Every random draw of epoch ``e`` (shuffle, augmentation, dropout) is seeded from ``(seed, e)``, and the loop saves
``last.safetensors`` (weights, optimizer, callback state, history) after every epoch. A run killed at any moment and
restarted with the same arguments therefore resumes at the last finished epoch and ends with the same weights as an
uninterrupted run. Pruning plugs in through :class:`~prunekit.train.callbacks.Callback`; per-epoch records go to
``loggers`` (:mod:`prunekit.train.logs`: CSV, TensorBoard, your tracker) under a ``phase`` name.

    result = fit(model, dataset, TrainConfig(epochs=30), out_dir="runs/base")
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data import make_loader
from ..device import pick_device
from ..errors import ConfigError
from ..storage import checkpoint as ckpt
from ..storage.nested import flatten, unflatten
from .callbacks import Callback, TrainState
from .config import TrainConfig
from .distill import distillation_loss, frozen_teacher
from .distributed import DistInfo, all_reduce_sum, average_buffers, barrier, init_from_env
from .logs import RunLogger, check_phase
from .metrics import confusion_matrix, model_width, summarize
from .progress import epoch_line, print_line, progress_bar

LAST = "last.safetensors"


@dataclass
class TrainResult:
    model: nn.Module
    history: List[Dict[str, Any]] = field(default_factory=list)
    best_val: Optional[float] = None
    epochs_run: int = 0
    stopped_early: bool = False
    resumed_from: Optional[int] = None


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """No weight decay on biases and norm scales (1-D tensors): decaying them only hurts accuracy."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.peak_lr(), momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.peak_lr())


def lr_at(step: int, total: int, warmup: int, cfg: TrainConfig) -> float:
    """Linear warm-up to the peak, then cosine decay to ``min_lr_ratio * peak``."""
    peak = cfg.peak_lr()
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    floor = peak * cfg.min_lr_ratio
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def _amp(cfg: TrainConfig, device: torch.device):
    """(autocast context factory, GradScaler or None). Mixed precision only where the device has it."""
    mode = cfg.amp
    if mode == "auto":
        mode = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "off"
    if mode == "off":
        return nullcontext, None
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


@torch.no_grad()
def evaluate(model: nn.Module, data: Any, split: str = "test", batch_size: int = 256,
             device: str | torch.device | None = None, info: DistInfo = DistInfo()) -> Dict[str, Any]:
    """Overall and per-class accuracy, confusion matrix and mean loss of ``model`` on ``data.splits[split]``."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    n_cls = len(data.classes)
    cm = torch.zeros(n_cls, n_cls, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in make_loader(data, split, batch_size=batch_size, train=False, augment=False,
                            rank=info.rank, world_size=info.world_size, device=device):
        logits = model(x).float()
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").double()
        cm += confusion_matrix(logits.argmax(1), y, n_cls).to(device)
    all_reduce_sum(cm, info)
    all_reduce_sum(loss_sum, info)
    model.train(was_training)
    total = int(cm.sum())
    return summarize(cm, data.classes, loss=float(loss_sum) / total if total else None)


class _Trainer:
    """Holds the run's moving parts so ``fit`` reads top to bottom."""

    def __init__(self, model, data, cfg, device, callbacks, out_dir, progress, description, teacher=None,
                 phase: str = "train"):
        self.data, self.cfg, self.device = data, cfg, device
        self.teacher = frozen_teacher(teacher, device) if teacher is not None else None
        self.callbacks: Sequence[Callback] = list(callbacks)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress, self.description, self.phase = progress, description or {}, phase
        self.info = init_from_env(device)
        self.model = model.to(device)
        self.optimizer = build_optimizer(self.model, cfg)
        self.autocast, self.scaler = _amp(cfg, device)
        self.history: List[Dict[str, Any]] = []
        self.best_val: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.start_epoch = 0
        self.step = 0

    # -- checkpointing -------------------------------------------------------------------------------------------
    def _train_state(self) -> tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
        spec_opt, t_opt = flatten(self.optimizer.state_dict(), "@train/optim")
        spec_cb, t_cb = flatten([cb.state_dict() for cb in self.callbacks], "@train/callbacks")
        state = {"epoch": len(self.history), "step": self.step, "history": self.history, "best_val": self.best_val,
                 "best_epoch": self.best_epoch, "optimizer": spec_opt, "callbacks": spec_cb,
                 "scaler": self.scaler.state_dict() if self.scaler else None}
        return state, {**t_opt, **t_cb}

    def save(self, name: str = LAST) -> None:
        if self.out_dir is None or not self.info.is_main:
            return
        state, tensors = self._train_state()
        ckpt.save(self.unwrapped, self.out_dir / name, extras=tensors, train=state, recipe=self.cfg.model_dump(),
                  **self.description)

    def restore(self, path: Path) -> Dict[str, Any]:
        """Load model (with its pruned structure), optimizer and callback states from a checkpoint of this run."""
        loaded = ckpt.load_checkpoint(path, self.device)
        state = loaded.description.get("train") or {}
        self.model = loaded.model.train()
        self.optimizer = build_optimizer(self.model, self.cfg)
        self.optimizer.load_state_dict(unflatten(state["optimizer"], loaded.extras))
        for cb, cb_state in zip(self.callbacks, unflatten(state["callbacks"], loaded.extras)):
            cb.load_state_dict(cb_state)
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        return state

    def try_resume(self) -> Optional[int]:
        path = self.out_dir / LAST if self.out_dir is not None else None
        if path is None or not path.is_file():
            return None
        self._check_same_run(path)
        given = set(self.unwrapped.state_dict())
        state = self.restore(path)
        if not set(self.unwrapped.state_dict()) <= given:
            raise ConfigError(f"{self.out_dir} holds a run of another model than this one; pass another --out, "
                              "or delete that folder to start over")
        self.history = list(state["history"])
        self.best_val, self.best_epoch = state.get("best_val"), state.get("best_epoch")
        self.start_epoch, self.step = state["epoch"], state["step"]
        return self.start_epoch

    def _check_same_run(self, path: Path) -> None:
        """Resuming continues the same run: a folder holding a run on other data (other classes, input size or
        split) is refused before anything is loaded, never resumed into a silently different model."""
        old = ckpt.read_description(path).get("data") or {}
        new = self.description.get("data") or {}
        for key in ("classes", "input_size", "split_seed", "test_frac", "val_frac"):
            if key in old and key in new and old[key] != new[key]:
                what = f"{key} {old[key]}, not {new[key]}"
                if key == "classes":
                    what = (f"{len(old[key])} classes, not {len(new[key])}" if len(old[key]) != len(new[key])
                            else f"classes {', '.join(sorted(set(old[key]) - set(new[key]))[:3])} not in this data")
                raise ConfigError(f"{self.out_dir} holds a run on other data ({what}); pass another --out, or "
                                  "delete that folder to start over")

    @property
    def unwrapped(self) -> nn.Module:
        return getattr(self.model, "module", self.model)

    # -- one epoch -----------------------------------------------------------------------------------------------
    def run_epoch(self, epoch: int, ddp_model: nn.Module, ts: TrainState, total_steps: int, warmup: int) -> Dict:
        cfg = self.cfg
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout etc.: same draws on resume
        loader = _train_loader(self.data, cfg, self.info, epoch, self.device)
        ts.loader = loader
        ddp_model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        steps = ts.steps_per_epoch
        bar = progress_bar(loader, steps, f"{self.phase} {epoch + 1}/{cfg.epochs}", self.progress and self.info.is_main)
        for x, y in bar:
            for g in self.optimizer.param_groups:
                g["lr"] = lr_at(self.step, total_steps, warmup, cfg)
            with self.autocast():
                logits = ddp_model(x)
                loss = nn.functional.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                if self.teacher is not None:
                    with torch.no_grad():
                        soft = self.teacher(x)
                    loss = (1 - cfg.distill_alpha) * loss + cfg.distill_alpha * distillation_loss(
                        logits, soft, cfg.distill_temperature)
            self.optimizer.zero_grad(set_to_none=True)
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            for cb in self.callbacks:
                cb.on_after_backward(ts)
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(ddp_model.parameters(), cfg.grad_clip)
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.step += 1
            ts.step = self.step
            for cb in self.callbacks:
                cb.on_step_end(ts)
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if bar is not loader:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}", refresh=False)
        return {"train_loss": loss_sum / max(1, seen), "train_acc": correct / max(1, seen),
                "lr": self.optimizer.param_groups[0]["lr"]}


def fit(model: nn.Module, data: Any, cfg: TrainConfig | None = None, device: str | torch.device = "auto",
        callbacks: Sequence[Callback] = (), out_dir: str | Path | None = None, resume: bool = True,
        progress: bool = True, description: Optional[Dict[str, Any]] = None,
        on_epoch: Optional[Any] = None, teacher: Optional[nn.Module] = None, phase: str = "train",
        loggers: Sequence[RunLogger] = ()) -> TrainResult:
    """Train ``model`` on ``data`` ("train" split; "val" for early stopping). Returns the trained model and history.

    Each finished epoch's row (losses, accuracies, lr, params, sparsity, seconds) goes to every logger as
    ``log_epoch(phase, row)`` (:mod:`prunekit.train.logs`); a resumed run hands them the restored epochs first.
    ``progress``: a bar per epoch carrying loss and accuracy on a terminal, and one line per finished epoch (the
    only output when stderr is not a terminal); False prints nothing.

    With ``teacher`` (e.g. the model before pruning) the loss adds knowledge distillation from a frozen copy of it,
    weighted by ``cfg.distill_alpha`` at temperature ``cfg.distill_temperature`` (:mod:`prunekit.train.distill`).

    With ``out_dir`` the run checkpoints every epoch and, when ``resume`` is true, continues a previous run found
    there. ``description`` sections (e.g. ``data=...``) are stored in every checkpoint.
    """
    cfg = cfg or TrainConfig()
    device = pick_device(device) if isinstance(device, str) else device
    tr = _Trainer(model, data, cfg, device, callbacks, out_dir, progress, description, teacher, check_phase(phase))
    resumed = tr.try_resume() if resume else None
    loggers = list(loggers) if tr.info.is_main else []
    for row in tr.history:  # the epochs a killed run finished: loggers see the whole phase
        for logger in loggers:
            logger.log_epoch(phase, row)
    steps_per_epoch = _steps_per_epoch(data, cfg, tr.info)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    ts = TrainState(model=tr.model, optimizer=tr.optimizer, epoch=tr.start_epoch, step=tr.step, epochs=cfg.epochs,
                    steps_per_epoch=steps_per_epoch, data=data)
    has_val = len(data.splits.get("val", [])) > 0
    if resumed is None:
        ts.loader = _train_loader(data, cfg, tr.info, epoch=0, device=device)  # for criteria needing batches
        for cb in tr.callbacks:
            cb.on_train_start(ts)
    stopped = False
    for epoch in range(tr.start_epoch, cfg.epochs):
        ddp_model = DistributedDataParallel(tr.model) if tr.info.enabled else tr.model
        ts.model, ts.optimizer, ts.epoch = tr.model, tr.optimizer, epoch
        for cb in tr.callbacks:
            cb.on_epoch_start(ts)
        t0 = time.perf_counter()
        row = {"epoch": epoch + 1, **tr.run_epoch(epoch, ddp_model, ts, total_steps, warmup)}
        average_buffers(tr.model, tr.info)
        if has_val:
            val = evaluate(tr.model, data, "val", device=device, info=tr.info)
            row.update(val_acc=val["accuracy"], val_loss=val["loss"])
            ts.metrics = val
        for cb in tr.callbacks:
            cb.on_epoch_end(ts)
        # A callback may have replaced the model or optimizer (physical pruning mid-training).
        tr.model, tr.optimizer = ts.model, ts.optimizer
        row.update(model_width(tr.unwrapped))  # after the callbacks: what this epoch's pruning left
        row["seconds"] = round(time.perf_counter() - t0, 2)
        tr.history.append(row)
        improved = has_val and (tr.best_val is None or row["val_acc"] > tr.best_val)
        if improved:
            tr.best_val, tr.best_epoch = row["val_acc"], epoch + 1
            if cfg.patience:
                tr.save("best.safetensors")
        tr.save()
        barrier(tr.info)
        for logger in loggers:  # after the checkpoint: a logged epoch is one a resumed run keeps
            logger.log_epoch(phase, row)
        if progress and tr.info.is_main:
            print_line(epoch_line(phase, cfg.epochs, row))
        if on_epoch is not None and tr.info.is_main:
            on_epoch(row)
        if ts.stop or (cfg.patience and has_val and epoch + 1 - (tr.best_epoch or 0) >= cfg.patience):
            stopped = True
            break
    best = tr.out_dir / "best.safetensors" if tr.out_dir is not None else None
    if stopped and cfg.patience and best is not None and best.is_file():
        # Early stopping hands back the best epoch: weights, structure and callback state (masks, schedule) together,
        # so a schedule's end-of-training step (e.g. removing soft-pruned channels) acts on the matching weights.
        tr.restore(best)
        ts.model, ts.optimizer = tr.model, tr.optimizer
    for cb in tr.callbacks:
        cb.on_train_end(ts)
    tr.model = ts.model
    return TrainResult(tr.model, tr.history, tr.best_val, len(tr.history), stopped, resumed)


def _train_loader(data: Any, cfg: TrainConfig, info: DistInfo, epoch: int, device: torch.device | str = "cpu"):
    return make_loader(data, "train", batch_size=cfg.batch_size, train=True, seed=cfg.seed, epoch=epoch,
                       augment=cfg.augment, rank=info.rank, world_size=info.world_size, device=device)


def _steps_per_epoch(data: Any, cfg: TrainConfig, info: DistInfo) -> int:
    return max(1, len(_train_loader(data, cfg, info, epoch=0)))
