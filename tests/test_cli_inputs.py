"""The CLI on what a checkpoint records: info and export at its input (--input-size to override), a checkpoint saved
from a plain torchvision model (--model NAME), and eval on the data folder it was trained on (issue 36)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision

import prunekit
from prunekit.cli.main import main
from prunekit.data import data_section, load_dataset
from prunekit.measure import count_macs, count_params


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def saved_at_32(tmp_path):
    """A vgg_tiny whose data says 16 px but which was pruned at 32 px: the recorded input wins."""
    torch.manual_seed(0)
    model = prunekit.create_model("vgg_tiny", 3).eval()
    path = prunekit.save(model, tmp_path / "m.safetensors", input=torch.randn(1, 3, 32, 32), data={"input_size": 16})
    return model, path


def test_info_reports_macs_at_the_recorded_input(saved_at_32, capsys):
    model, path = saved_at_32
    code, out, err = run(["info", str(path), "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["input"] == {"shapes": [[3, 32, 32]], "dtypes": ["float32"]}
    assert r["measurement"]["macs"] == count_macs(model, (3, 32, 32))[0] != count_macs(model, (3, 16, 16))[0]
    code, out, err = run(["info", str(path), "--input-size", "24", "--json"], capsys)
    assert json.loads(out)["measurement"]["macs"] == count_macs(model, (3, 24, 24))[0]
    code, out, err = run(["info", str(path)], capsys)
    assert "vgg_tiny, 3 classes, input 3x32x32" in out


def test_export_runs_at_the_recorded_input_and_any_batch(saved_at_32, tmp_path, capsys):
    import onnxruntime as ort

    model, path = saved_at_32
    onnx = tmp_path / "m.onnx"
    code, out, err = run(["export", str(path), "--onnx", str(onnx)], capsys)
    assert code == 0, err
    assert "input 3x32x32 (batch dynamic)" in out.splitlines()[0]
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [3, 32, 32]
    for batch in (1, 4):
        x = torch.randn(batch, 3, 32, 32)
        got = session.run(None, {"input": x.numpy()})[0]
        assert got.shape == (batch, 3) and np.abs(got - model(x).detach().numpy()).max() < 1e-4
    code, out, err = run(["export", str(path), "--onnx", str(onnx), "--input-size", "3x20x20"], capsys)
    assert code == 0, err
    assert ort.InferenceSession(str(onnx)).get_inputs()[0].shape[1:] == [3, 20, 20]


@pytest.mark.parametrize("flag", ["3*32*32", "axb"])
def test_a_bad_input_size_is_one_line(saved_at_32, capsys, flag):
    _, path = saved_at_32
    code, _, err = run(["export", str(path), "--input-size", flag], capsys)
    assert code == 2 and "--input-size" in one_line(err)


def test_a_plain_torchvision_model_pruned_in_python_goes_through_the_cli(tmp_path, capsys):
    torch.manual_seed(0)
    small = prunekit.prune(torchvision.models.resnet18(num_classes=5).eval(), torch.randn(1, 3, 48, 48), ratio=0.3)
    path = prunekit.save(small, tmp_path / "r.safetensors")
    code, _, err = run(["info", str(path)], capsys)
    assert code == 2 and "--model NAME" in one_line(err)
    code, out, err = run(["info", str(path), "--model", "torchvision/resnet18", "--json"], capsys)
    assert code == 0, err
    m = json.loads(out)["measurement"]
    assert m["macs"] == count_macs(small, (3, 48, 48))[0] and m["params"] == count_params(small)
    code, out, err = run(["export", str(path), "--model", "torchvision/resnet18", "--onnx", str(tmp_path / "r.onnx"),
                          "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["input"]["shapes"] == [[3, 48, 48]]


def _checkpoint_on(folder, tmp_path):
    ds = load_dataset(str(folder), image_size=16)
    return prunekit.save(prunekit.create_model("vgg_tiny", 3), tmp_path / "m.safetensors", data=data_section(ds))


def test_eval_uses_the_folder_the_checkpoint_records(tiny_folder, tmp_path, capsys):
    path = _checkpoint_on(tiny_folder, tmp_path)
    code, out, err = run(["eval", str(path), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["samples"] == 6  # the tiny folder's test split, not the embedded subset's 210


def test_eval_refuses_a_recorded_folder_that_is_gone(tiny_folder, tmp_path, capsys):
    path = _checkpoint_on(tiny_folder, tmp_path)
    tiny_folder.rename(tmp_path / "moved")
    for command in ("eval", "sensitivity"):
        code, _, err = run([command, str(path)], capsys)
        line = one_line(err)
        assert code == 2 and str(tiny_folder) in line and "pass --data" in line
    code, out, err = run(["eval", str(path), "--data", str(tmp_path / "moved"), "--json"], capsys)
    assert code == 0 and json.loads(out)["samples"] == 6, err


def test_the_embedded_subset_is_used_when_named_or_recorded_by_name(tmp_path, capsys):
    ds = load_dataset("embedded", image_size=16)
    section = data_section(ds)
    assert section["source"] == "embedded"  # not this install's absolute path
    path = prunekit.save(prunekit.create_model("vgg_tiny", 21), tmp_path / "e.safetensors", data=section)
    for argv in (["eval", str(path), "--json"], ["eval", str(path), "--data", "embedded", "--json"]):
        code, out, err = run(argv, capsys)
        assert code == 0 and json.loads(out)["samples"] == 210, err


def test_a_checkpoint_without_a_data_record_asks_for_data(tmp_path, capsys):
    path = prunekit.save(prunekit.create_model("vgg_tiny", 3), tmp_path / "m.safetensors")
    code, _, err = run(["eval", str(path)], capsys)
    assert code == 2 and "--data embedded" in one_line(err)
