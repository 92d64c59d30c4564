import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from prunekit.data import load_dataset
from prunekit.models import create_model
from prunekit.storage import checkpoint as ckpt
from prunekit.train import Callback, TrainConfig, evaluate, fit
from prunekit.train.loop import lr_at
from prunekit.train.metrics import confusion_matrix, summarize

REPO = Path(__file__).resolve().parents[1]
FAST = dict(batch_size=8, warmup_epochs=0.5, lr=0.05)


@pytest.fixture
def tiny_ds(tiny_folder):
    return load_dataset(tiny_folder, image_size=16, seed=0, test_frac=0.2, val_frac=0.2)


def test_confusion_and_summary():
    cm = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    s = summarize(cm, ["a", "b", "c"])
    assert s["accuracy"] == 0.75 and s["per_class"] == {"a": 1.0, "b": 1.0, "c": 0.5}


def test_lr_schedule_warms_up_then_decays_to_floor():
    cfg = TrainConfig(lr=1.0, min_lr_ratio=0.1)
    assert lr_at(0, 100, 10, cfg) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, cfg) == pytest.approx(1.0)
    assert lr_at(99, 100, 10, cfg) == pytest.approx(0.1, abs=1e-3)
    assert all(lr_at(s, 100, 10, cfg) >= lr_at(s + 1, 100, 10, cfg) for s in range(10, 99))


def test_fit_learns_and_reports(tiny_ds, tmp_path):
    torch.manual_seed(0)
    model = create_model("vgg_tiny", num_classes=3)
    res = fit(model, tiny_ds, TrainConfig(epochs=6, **FAST), device="cpu", out_dir=tmp_path, progress=False)
    assert res.epochs_run == 6 and len(res.history) == 6
    test = evaluate(res.model, tiny_ds, "test")
    assert test["accuracy"] > 0.6  # three colour classes: chance is 1/3
    assert sum(map(sum, test["confusion"])) == len(tiny_ds.splits["test"])
    assert (tmp_path / "last.safetensors").is_file()


def test_adamw_and_early_stopping(tiny_ds, tmp_path):
    model = create_model("vgg_tiny", num_classes=3)
    cfg = TrainConfig(epochs=20, optimizer="adamw", patience=2, **{**FAST, "lr": 1e-6})
    res = fit(model, tiny_ds, cfg, device="cpu", out_dir=tmp_path, progress=False)
    assert res.stopped_early and res.epochs_run < 20


class _KillAt(Callback):
    """Simulates a kill in the middle of an epoch."""

    def __init__(self, epoch: int, step_in_epoch: int):
        self.epoch, self.step_in_epoch = epoch, step_in_epoch

    def on_step_end(self, state):
        if state.epoch == self.epoch and state.step - state.epoch * state.steps_per_epoch == self.step_in_epoch:
            raise KeyboardInterrupt


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_after_interrupt_equals_uninterrupted(tiny_ds, tmp_path):
    cfg = TrainConfig(epochs=4, **FAST)
    torch.manual_seed(1)
    ref = fit(create_model("vgg_tiny", num_classes=3), tiny_ds, cfg, device="cpu", out_dir=tmp_path / "a",
              progress=False)
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        fit(create_model("vgg_tiny", num_classes=3), tiny_ds, cfg, device="cpu", out_dir=tmp_path / "b",
            progress=False, callbacks=[_KillAt(epoch=2, step_in_epoch=1)])
    torch.manual_seed(123)  # a different process state must not matter
    res = fit(create_model("vgg_tiny", num_classes=3), tiny_ds, cfg, device="cpu", out_dir=tmp_path / "b",
              progress=False)
    assert res.resumed_from == 2
    for k, v in _weights(ref.model).items():
        assert torch.equal(v, res.model.state_dict()[k]), k
    assert [h["train_loss"] for h in res.history] == [h["train_loss"] for h in ref.history]


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "prunekit.cli.main", *args], env=env, cwd=kw.get("cwd"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_killed_process_resumes_to_same_weights(tiny_folder, tmp_path):
    """A real SIGKILL in the middle of epoch 3 of `prunekit train`; rerunning the command resumes."""
    args = ["train", "--data", str(tiny_folder), "--image-size", "32", "--model", "vgg_tiny", "--epochs", "12",
            "--batch-size", "2", "--no-progress", "--val-frac", "0.2"]
    ref = _cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    proc = _cli(*args, "--out", str(tmp_path / "run"))
    last = tmp_path / "run" / "last.safetensors"
    deadline = time.time() + 240
    while time.time() < deadline:
        if last.is_file() and ckpt.read(last)[1]["train"]["epoch"] >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.1)  # now inside epoch 3
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.read(last)[1]["train"]["epoch"] < 12, "the run finished before it could be killed"
    again = _cli(*args, "--out", str(tmp_path / "run"))
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "resumed from epoch" in out
    a = ckpt.read(tmp_path / "ref" / "model.safetensors")[0]
    b = ckpt.read(tmp_path / "run" / "model.safetensors")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ddp_two_cpu_processes_end_with_identical_weights(tiny_folder, tmp_path):
    script = REPO / "tests" / "ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    import socket

    with socket.socket() as sock:  # torchrun's --master_port=0 does not pick a port for the c10d store
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           str(script), str(tiny_folder), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r0 = ckpt.read(tmp_path / "rank0.safetensors")[0]
    r1 = ckpt.read(tmp_path / "rank1.safetensors")[0]
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    start = ckpt.read(tmp_path / "start.safetensors")[0]
    assert any(not torch.equal(start[k], r0[k]) for k in r0 if k.endswith("weight")), "no training happened"


class _RolledColourTeacher(torch.nn.Module):
    """Predicts the *next* class of the colour that dominates the image: a teacher that disagrees with the labels."""

    def forward(self, x):
        return 10 * x.mean((2, 3)).roll(1, dims=1)


def test_distillation_loss_is_zero_only_when_student_matches_teacher():
    from prunekit.train.distill import distillation_loss

    t = torch.randn(5, 4)
    assert distillation_loss(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    s = torch.randn(5, 4)
    p_t, log_s = torch.softmax(t / 2, 1), torch.log_softmax(s / 2, 1)
    by_hand = (p_t * (p_t.log() - log_s)).sum(1).mean() * 4
    assert distillation_loss(s, t, 2.0).item() == pytest.approx(by_hand.item(), rel=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_fit_with_teacher_follows_the_teacher_by_alpha(tiny_ds, alpha):
    torch.manual_seed(0)
    teacher = _RolledColourTeacher()
    cfg = TrainConfig(epochs=6, distill_alpha=alpha, distill_temperature=1.0, **FAST)
    student = fit(create_model("vgg_tiny", num_classes=3), tiny_ds, cfg, device="cpu", progress=False,
                  teacher=teacher).model
    acc = evaluate(student, tiny_ds, "test")["accuracy"]
    if alpha == 0:  # labels only: the teacher is ignored
        assert acc > 0.6
    else:  # teacher only: the student learns the teacher's rolled classes, so it is wrong on (almost) every image
        assert acc < 0.2


def test_fit_leaves_the_teacher_untouched(tiny_ds):
    torch.manual_seed(0)
    teacher = create_model("vgg_tiny", num_classes=3)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    fit(create_model("vgg_tiny", num_classes=3), tiny_ds, TrainConfig(epochs=1, **FAST), device="cpu",
        progress=False, teacher=teacher)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())


def test_resume_into_a_run_on_other_data_or_model_is_refused(tmp_path):
    """The same --out with other classes or another model must not resume the old run (it trained the old model, or
    crashed with an IndexError inside the loss); the user is told to pick another folder."""
    from tests.conftest import make_image_folder

    from prunekit.errors import ConfigError

    cfg = TrainConfig(epochs=1, **FAST)
    three = load_dataset(make_image_folder(tmp_path / "three"), image_size=16, seed=0, test_frac=0.2, val_frac=0.2)
    two = load_dataset(make_image_folder(tmp_path / "two", classes=2), image_size=16, seed=0, test_frac=0.2,
                       val_frac=0.2)
    section = {"data": {"classes": list(three.classes), "input_size": 16}}
    fit(create_model("vgg_tiny", num_classes=3), three, cfg, device="cpu", out_dir=tmp_path / "run", progress=False,
        description=section)
    with pytest.raises(ConfigError, match="run on other data .3 classes, not 2"):
        fit(create_model("vgg_tiny", num_classes=2), two, cfg, device="cpu", out_dir=tmp_path / "run",
            progress=False, description={"data": {"classes": list(two.classes), "input_size": 16}})
    with pytest.raises(ConfigError, match="run of another model"):
        fit(create_model("resnet_tiny", num_classes=3), three, cfg, device="cpu", out_dir=tmp_path / "run",
            progress=False, description=section)
    again = fit(create_model("vgg_tiny", num_classes=3), three, TrainConfig(epochs=2, **FAST), device="cpu",
                out_dir=tmp_path / "run", progress=False, description=section)
    assert again.resumed_from == 1 and len(again.history) == 2
