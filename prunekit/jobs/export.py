"""``prunekit export``: a checkpoint as ONNX, verified against PyTorch with onnxruntime."""
from __future__ import annotations

from typing import Any, Dict

from ..config import ExportOptions
from ..export import export_onnx
from ..storage import checkpoint as ckpt


def export_job(opts: ExportOptions) -> Dict[str, Any]:
    """ONNX export of a checkpoint, verified against PyTorch with onnxruntime."""
    model = ckpt.load(opts.checkpoint)
    size = (model.prunekit_description.get("data") or {}).get("input_size", 64)
    return export_onnx(model, opts.onnx, input_shape=(3, size, size), opset=opts.opset)
