"""Per-epoch records of every training phase, for people: a CSV, TensorBoard event files, or your own tracker.

:func:`~prunekit.train.fit` hands each finished epoch to its ``loggers`` as ``log_epoch(phase, row)``: ``phase``
names the training ("train", "attention", "finetune", "schedule") and ``row`` holds ``epoch`` (1-based),
``train_loss``, ``train_acc``, ``val_loss``, ``val_acc`` (with a validation split), ``lr``, ``params`` (parameters
of the model, which fall when channels go mid-training), ``sparsity`` (fraction of zero weight entries: masks,
zeroed filters) and ``seconds``. When fit resumes a killed run it hands the restored epochs again first, so a
logger sees a complete phase; a row for ``(phase, epoch)`` then restarts that phase from that epoch (the rows it
replaces came from the killed run).

Any object with ``log_epoch`` and ``close`` plugs in. An MLflow logger, for example::

    class MlflowLogger:
        def __init__(self, run_name: str):
            import mlflow
            self.mlflow = mlflow
            mlflow.start_run(run_name=run_name)

        def log_epoch(self, phase, row):
            numbers = {f"{phase}/{k}": v for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))}
            self.mlflow.log_metrics(numbers, step=row["epoch"])

        def close(self):
            self.mlflow.end_run()

    fit(model, data, cfg, phase="finetune", loggers=[MlflowLogger("resnet18-l1-50")])

(W&B alike: ``wandb.init`` / ``wandb.log({...}, step=...)`` / ``wandb.finish``; use one step counter per phase or
``define_metric`` with the phase's epoch as its step.) Jobs write ``<out>/history.csv`` and, with
``--tensorboard``, ``<out>/tb/<phase>/`` through :func:`run_log`.
"""
from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Protocol, runtime_checkable

from ..errors import ConfigError
from ..files import atomic_path

#: Row keys in the order the CSV lists them (other keys follow, sorted).
EPOCH_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "params", "sparsity", "seconds")
#: TensorBoard tags: train and val of one quantity share a section.
TB_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train",
           "val_acc": "accuracy/val", "lr": "lr", "params": "width/params", "sparsity": "width/sparsity",
           "seconds": "time/seconds"}
_PHASE = re.compile(r"^[A-Za-z0-9_.-]+$")
INSTALL_TB = "pip install 'prunekit[tensorboard]' (or pip install tensorboard)"


@runtime_checkable
class RunLogger(Protocol):
    """Receives one row per finished epoch of a training phase; ``close`` once, when the run is over."""

    def log_epoch(self, phase: str, row: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def check_phase(phase: str) -> str:
    """A phase name is a folder name under ``tb/`` and a CSV value: letters, digits, ``_ . -``."""
    if not isinstance(phase, str) or not _PHASE.match(phase):
        raise ConfigError(f"training phase name {phase!r} must be letters, digits, '_', '.' or '-' "
                          "(e.g. 'finetune')")
    return phase


def restart_at(rows: List[Dict[str, Any]], phase: str, row: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """``rows`` with ``row`` added as epoch ``row['epoch']`` of ``phase``; the phase's rows from that epoch on go."""
    epoch = int(row["epoch"])
    kept = [r for r in rows if not (r.get("phase") == phase and int(r["epoch"]) >= epoch)]
    return kept + [{"phase": phase, **row}]


class CurveRecorder:
    """The rows of this run in memory, per phase: the ``curves`` a job's report carries."""

    def __init__(self) -> None:
        self.rows: List[Dict[str, Any]] = []

    def log_epoch(self, phase: str, row: Mapping[str, Any]) -> None:
        self.rows = restart_at(self.rows, phase, row)

    def close(self) -> None:
        pass

    def curves(self) -> Dict[str, List[Dict[str, Any]]]:
        """``{phase: [row, ...]}`` in the order the phases ran, rows without the ``phase`` key."""
        out: Dict[str, List[Dict[str, Any]]] = {}
        for r in self.rows:
            out.setdefault(r["phase"], []).append({k: v for k, v in r.items() if k != "phase"})
        return out


class CsvLogger:
    """``history.csv``: one row per epoch and phase, rewritten atomically after every epoch (a killed run never
    leaves half a line). Rows already in the file are kept, except the ones a resumed or rerun phase replaces, so
    a resumed run lists each epoch once."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        found = read_history(self.path) if self.path.is_file() else []
        self.rows: List[Dict[str, Any]] = [r for r in found if "phase" in r and isinstance(r.get("epoch"), int)]

    def log_epoch(self, phase: str, row: Mapping[str, Any]) -> None:
        self.rows = restart_at(self.rows, phase, row)
        extra = sorted({k for r in self.rows for k in r} - set(EPOCH_KEYS) - {"phase"})
        columns = ["phase", *EPOCH_KEYS, *extra]
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=columns, restval="")
                writer.writeheader()
                writer.writerows(self.rows)

    def close(self) -> None:
        pass


def read_history(path: str | Path) -> List[Dict[str, Any]]:
    """The rows of a ``history.csv``, numbers as numbers and empty cells left out."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: v if k == "phase" else _number(v) for k, v in r.items() if v not in ("", None)}
                for r in csv.DictReader(f)]


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLogger:
    """Event files under ``<log_dir>/<phase>/`` (one TensorBoard run per phase, the epoch as step), so
    ``tensorboard --logdir runs`` shows the fine-tuning of two pruning runs side by side.

    A phase's writer opens at the first epoch logged with ``purge_step`` at that epoch: TensorBoard hides what a
    killed earlier run wrote from there on, so a resumed phase shows each epoch once."""

    def __init__(self, log_dir: str | Path):
        if not tensorboard_available():
            raise ConfigError(f"TensorBoard logs need the tensorboard package: {INSTALL_TB}")
        from torch.utils.tensorboard import SummaryWriter  # optional dependency: imported only when asked for

        self._writer_class = SummaryWriter
        self.log_dir = Path(log_dir)
        self.writers: Dict[str, Any] = {}

    def log_epoch(self, phase: str, row: Mapping[str, Any]) -> None:
        step = int(row["epoch"])
        writer = self.writers.get(phase)
        if writer is None:
            writer = self.writers[phase] = self._writer_class(str(self.log_dir / phase), purge_step=step)
        for key, tag in TB_TAGS.items():
            value = row.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(tag, value, step)
        writer.flush()  # a killed run keeps every finished epoch

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


def use_tensorboard(asked: Optional[bool]) -> bool:
    """``--tensorboard``: True needs the package (refused before any work without it), False is off, None (not
    given) means on when the package is installed."""
    if asked is None:
        return tensorboard_available()
    if asked and not tensorboard_available():
        raise ConfigError(f"--tensorboard needs the tensorboard package: {INSTALL_TB}; or drop --tensorboard")
    return bool(asked)


class RunLog:
    """What a job records of its training phases: ``<out>/history.csv``, ``<out>/tb/`` (optional) and the curves
    for its report. Pass it to ``fit(..., loggers=[log])`` with one phase name per training.

        with run_log(out, tensorboard=None) as log:
            fit(model, data, cfg, out_dir=out, phase="train", loggers=[log])
        result["curves"] = log.curves()
    """

    def __init__(self, out_dir: str | Path, tensorboard: bool):
        out = Path(out_dir)
        self.recorder = CurveRecorder()
        self.csv = CsvLogger(out / "history.csv")
        self.tensorboard = TensorBoardLogger(out / "tb") if tensorboard else None
        self.loggers: List[RunLogger] = [self.recorder, self.csv] + ([self.tensorboard] if self.tensorboard else [])

    def log_epoch(self, phase: str, row: Mapping[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_epoch(phase, row)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()

    def curves(self) -> Dict[str, List[Dict[str, Any]]]:
        return self.recorder.curves()

    def files(self) -> Dict[str, Optional[str]]:
        """Where the records went (for a job's result): the CSV, and the TensorBoard folder or None."""
        return {"csv": str(self.csv.path),
                "tensorboard": str(self.tensorboard.log_dir) if self.tensorboard else None}

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run_log(out_dir: str | Path, tensorboard: Optional[bool] = None) -> RunLog:
    """The job's :class:`RunLog`; ``tensorboard`` as :func:`use_tensorboard` reads it (checked before training)."""
    return RunLog(out_dir, use_tensorboard(tensorboard))
