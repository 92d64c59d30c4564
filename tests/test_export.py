"""ONNX export: checked file, onnxruntime agrees with PyTorch, dynamic batch, atomic and typed failures."""
from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError, PrunekitError
from prunekit.export import ExportError, export_onnx


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )


def run_ort(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def test_export_matches_pytorch_with_dynamic_batch(tmp_path):
    model = small_cnn().train()
    info = export_onnx(model, tmp_path / "m.onnx", input_shape=(3, 16, 16))
    assert info["path"] == str(tmp_path / "m.onnx") and info["bytes"] == (tmp_path / "m.onnx").stat().st_size
    assert info["opset"] == 17 and info["exporter"] in ("torchscript", "dynamo")
    assert info["max_abs_diff"] is not None and info["max_abs_diff"] < 1e-4
    onnx.checker.check_model(info["path"])
    assert model.training  # mode restored
    model.eval()
    for batch in (1, 5):
        x = torch.randn(batch, 3, 16, 16)
        got = run_ort(info["path"], x)
        with torch.no_grad():
            expected = model(x).numpy()
        assert got.shape == (batch, 4)
        assert np.abs(got - expected).max() < 1e-4


def test_static_batch_export_fixes_batch_one(tmp_path):
    info = export_onnx(small_cnn(), tmp_path / "s.onnx", input_shape=(3, 16, 16), dynamic_batch=False)
    dims = onnx.load(info["path"]).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 16, 16]


def test_failed_verification_raises_and_leaves_no_file(tmp_path):
    target = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(small_cnn(), target, input_shape=(3, 16, 16), atol=-1.0, rtol=0.0)  # impossible tolerance
    assert not target.exists() and list(tmp_path.iterdir()) == []
    assert issubclass(ExportError, PrunekitError)


def test_bad_arguments_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="exporter"):
        export_onnx(small_cnn(), tmp_path / "x.onnx", exporter="tflite")
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(small_cnn(), tmp_path / "x.onnx", opset=7)


def test_skip_verify_returns_no_diff(tmp_path):
    info = export_onnx(small_cnn(), tmp_path / "v.onnx", input_shape=(3, 8, 8), verify=False, exporter="torchscript")
    assert info["max_abs_diff"] is None and info["exporter"] == "torchscript"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None,
                    reason="the dynamo exporter needs onnxscript: pip install -e .[dev]")
def test_dynamo_exporter_path(tmp_path):
    info = export_onnx(small_cnn(), tmp_path / "d.onnx", input_shape=(3, 16, 16), opset=18, exporter="dynamo")
    assert info["exporter"] == "dynamo" and info["opset"] >= 18 and info["max_abs_diff"] < 1e-4
    assert run_ort(info["path"], torch.randn(5, 3, 16, 16)).shape == (5, 4)


def test_ort_module_runs_the_exported_model_like_torch():
    from prunekit.export import OrtModule

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 4)).eval()
    runner = OrtModule(model, (3, 16, 16), threads=1)
    for batch in (1, 5):  # dynamic batch axis
        x = torch.randn(batch, 3, 16, 16)
        with torch.no_grad():
            assert torch.allclose(runner(x), model(x), atol=1e-5)
    with pytest.raises(ConfigError, match="exported for inputs of shape"):
        runner(torch.randn(1, 3, 8, 8))


def test_a_failed_export_is_one_line_and_prints_no_graph_dump(tmp_path, capfd):
    """torch prints the whole TorchScript graph to stdout when an op has no ONNX form; none of it may leak."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(196, 2))
    with pytest.raises(ExportError) as err:
        export_onnx(model.eval(), tmp_path / "m.onnx", input_shape=(3, 4, 4), exporter="torchscript")
    out, errs = capfd.readouterr()
    assert "adaptive_avg_pool2d" in str(err.value) and len(str(err.value).splitlines()) == 1
    assert "Torch IR graph" not in out + errs and "aten::" not in out + errs
    export_onnx(small_cnn().eval(), tmp_path / "ok.onnx", input_shape=(3, 16, 16))  # a good export still works
    assert (tmp_path / "ok.onnx").is_file()
