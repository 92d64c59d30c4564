"""Per-epoch records (prunekit.train.logs): history.csv, TensorBoard event files, curves in a job's report."""
import json

import pytest
import torch

from prunekit.cli.main import main
from prunekit.config import PruneOptions
from prunekit.data import load_dataset
from prunekit.jobs.prune import prune_job
from prunekit.models import create_model
from prunekit.train import Callback, CsvLogger, TensorBoardLogger, TrainConfig, fit, run_log
from prunekit.train import logs as logs_module
from prunekit.train.logs import CurveRecorder, read_history

FAST = dict(batch_size=8, warmup_epochs=0.5, lr=0.05)
CURVE_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "params", "sparsity"}


@pytest.fixture
def tiny_ds(tiny_folder):
    return load_dataset(tiny_folder, image_size=16, seed=0, test_frac=0.2, val_frac=0.2)


def _fit(ds, out, epochs=3, **kw):
    torch.manual_seed(0)
    return fit(create_model("vgg_tiny", num_classes=3), ds, TrainConfig(epochs=epochs, **FAST), device="cpu",
               out_dir=out, progress=False, **kw)


class _KillAt(Callback):
    """Stops the process in the middle of epoch ``epoch`` (0-based), as a kill would."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_step_end(self, state):
        if state.epoch == self.epoch:
            raise KeyboardInterrupt


def test_csv_has_one_row_per_epoch_equal_to_the_history(tiny_ds, tmp_path):
    csv = CsvLogger(tmp_path / "history.csv")
    res = _fit(tiny_ds, tmp_path / "run", phase="finetune", loggers=[csv])
    rows = read_history(tmp_path / "history.csv")
    assert [(r["phase"], r["epoch"]) for r in rows] == [("finetune", 1), ("finetune", 2), ("finetune", 3)]
    for row, hist in zip(rows, res.history):
        assert set(row) == CURVE_KEYS | {"phase"}
        assert {k: row[k] for k in hist} == hist  # floats round-trip exactly through the CSV


def test_a_resumed_run_lists_each_epoch_once_and_its_curves_whole(tiny_ds, tmp_path):
    path = tmp_path / "history.csv"
    with pytest.raises(KeyboardInterrupt):
        _fit(tiny_ds, tmp_path / "run", epochs=4, loggers=[CsvLogger(path)], callbacks=[_KillAt(2)])
    assert [r["epoch"] for r in read_history(path)] == [1, 2]
    curves = CurveRecorder()  # a new process: it knows only what fit hands it
    res = _fit(tiny_ds, tmp_path / "run", epochs=4, loggers=[CsvLogger(path), curves])
    assert res.resumed_from == 2
    rows = read_history(path)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["train_loss"] for r in rows] == [h["train_loss"] for h in res.history]
    assert [r["epoch"] for r in curves.curves()["train"]] == [1, 2, 3, 4]


def test_csv_keeps_other_phases_and_a_rerun_phase_replaces_its_rows(tmp_path):
    path = tmp_path / "history.csv"
    first = CsvLogger(path)
    for phase in ("train", "finetune"):
        for epoch in (1, 2, 3):
            first.log_epoch(phase, {"epoch": epoch, "train_loss": float(epoch)})
    CsvLogger(path).log_epoch("finetune", {"epoch": 1, "train_loss": 9.0, "note": "rerun"})
    rows = read_history(path)
    assert [(r["phase"], r["epoch"]) for r in rows] == [("train", 1), ("train", 2), ("train", 3), ("finetune", 1)]
    assert rows[-1]["train_loss"] == 9.0 and rows[-1]["note"] == "rerun"


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_event_files_hold_the_epoch_scalars(tiny_ds, tmp_path):
    pytest.importorskip("tensorboard")
    tb = TensorBoardLogger(tmp_path / "tb")
    res = _fit(tiny_ds, tmp_path / "run", epochs=2, phase="finetune", loggers=[tb])
    tb.close()
    assert list((tmp_path / "tb" / "finetune").glob("events.out.tfevents.*"))
    scalars = _scalars(tmp_path / "tb" / "finetune")
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr", "width/params"} <= set(scalars)
    for tag, key in (("loss/train", "train_loss"), ("accuracy/val", "val_acc"), ("lr", "lr")):
        assert [s for s, _ in scalars[tag]] == [1, 2]
        assert [v for _, v in scalars[tag]] == pytest.approx([h[key] for h in res.history], rel=1e-6)


def test_a_resumed_phase_shows_each_epoch_once_in_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    first = TensorBoardLogger(tmp_path / "tb")
    for epoch in (1, 2, 3):  # the killed run got as far as epoch 3; its checkpoint holds 2
        first.log_epoch("train", {"epoch": epoch, "train_loss": 10.0 + epoch})
    first.close()
    second = TensorBoardLogger(tmp_path / "tb")
    for epoch in (1, 2, 3, 4):  # fit replays the restored epochs, then trains on
        second.log_epoch("train", {"epoch": epoch, "train_loss": float(epoch)})
    second.close()
    assert _scalars(tmp_path / "tb" / "train")["loss/train"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]


def test_prune_job_saves_fine_tuning_history_and_report_curves(tiny_folder, tmp_path):
    out = tmp_path / "p"
    res = prune_job(PruneOptions(model="vgg_tiny", data=str(tiny_folder), image_size=16, epochs=2, finetune_epochs=1,
                                 batch_size=8, out=out, progress=False, latency=False, val_frac=0.2,
                                 method="structured", ratio=0.5, tensorboard=False))
    curves = json.loads((out / "report.json").read_text())["extra"]["curves"]
    assert list(curves) == ["train", "finetune"]
    assert [len(curves["train"]), len(curves["finetune"])] == [2, 1]
    assert all(set(r) == CURVE_KEYS for rows in curves.values() for r in rows)
    assert curves["finetune"][0]["params"] == res["after"]["params"] < curves["train"][-1]["params"]
    rows = read_history(out / "history.csv")
    assert [(r["phase"], r["epoch"]) for r in rows] == [("train", 1), ("train", 2), ("finetune", 1)]
    assert res["logs"] == {"csv": str(out / "history.csv"), "tensorboard": None}
    assert not (out / "tb").exists()


def test_tensorboard_asked_without_the_package_is_refused_before_any_work(tiny_folder, tmp_path, capsys,
                                                                           monkeypatch):
    monkeypatch.setattr(logs_module, "tensorboard_available", lambda: False)
    code = main(["prune", "--model", "vgg_tiny", "--data", str(tiny_folder), "--image-size", "16", "--epochs", "1",
                 "--out", str(tmp_path / "o"), "--tensorboard", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "tensorboard" in err[0] and "pip install" in err[0]
    assert not (tmp_path / "o").exists()
    assert run_log(tmp_path / "q").tensorboard is None  # not asked: off without the package, no error


def test_progress_off_a_terminal_is_one_line_per_epoch(tiny_ds, tmp_path, capsys):
    torch.manual_seed(0)
    fit(create_model("vgg_tiny", num_classes=3), tiny_ds, TrainConfig(epochs=2, **FAST), device="cpu",
        progress=True, phase="finetune")
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "\r" not in err and len(lines) == 2
    assert lines[0].startswith("finetune epoch 1/2 | train loss ") and "val loss" in lines[0]


class _Bar:
    """Stands in for tqdm: records the postfix the loop sets."""

    def __init__(self, iterable, *args, **kw):
        self.iterable, self.postfix = iterable, None
        _Bar.made.append(self)

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, refresh=True, **kw):
        self.postfix = kw


def test_the_bar_carries_the_running_loss_and_accuracy(tiny_ds, monkeypatch):
    _Bar.made = []
    monkeypatch.setattr("prunekit.train.loop.progress_bar", _Bar)
    torch.manual_seed(0)
    res = fit(create_model("vgg_tiny", num_classes=3), tiny_ds, TrainConfig(epochs=2, **FAST), device="cpu",
              progress=True)
    assert len(_Bar.made) == 2
    for bar, row in zip(_Bar.made, res.history):
        assert bar.postfix == {"loss": f"{row['train_loss']:.4f}", "acc": f"{row['train_acc']:.3f}"}
