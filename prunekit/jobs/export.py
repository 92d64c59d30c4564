"""``prunekit export``: a checkpoint as ONNX, verified against PyTorch with onnxruntime."""
from __future__ import annotations

from typing import Any, Dict

from ..config import ExportOptions
from ..export import export_onnx
from .common import load_given, model_input


def export_job(opts: ExportOptions) -> Dict[str, Any]:
    """ONNX export of a checkpoint at the input it records (or ``--input-size``) with a dynamic batch axis, verified
    against PyTorch with onnxruntime."""
    loaded = load_given(opts)
    return export_onnx(loaded.model.eval(), opts.onnx, input_shape=model_input(opts, loaded.description),
                       opset=opts.opset)
