"""How small a checkpoint gets: dense bytes, this format's compressed bytes and the lossless entropy bound
(``prunekit size``). Apart from the codec because it reads either file format."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from .checkpoint import declared_check, read
from .codec import SizeReport, entropy_bound_bytes, is_compressed, read_compressed, recorded_values, write_compressed


def size_report(source: Any, values: str = "fp32", level: int = 19) -> SizeReport:
    """Sizes for ``prunekit size``: ``source`` is a checkpoint path (either format), a model or a state dict.

    A compressed file reports its own size; anything else is compressed (to a temporary file) to measure.
    Dense size and bound count the model's tensors only (not ``@``-prefixed training state or masks).
    """
    compressed = None
    if isinstance(source, (str, Path)):
        if is_compressed(source):
            tensors, desc = read_compressed(source, check=declared_check(Path(source), header=False))
            compressed, values = Path(source).stat().st_size, recorded_values(source, values)
        else:
            tensors, _ = read(source)
    elif isinstance(source, torch.nn.Module):
        tensors = {k: v.detach().cpu() for k, v in source.state_dict().items()}
    elif isinstance(source, dict):
        tensors = source
    else:
        raise ConfigError(f"size_report needs a checkpoint path, a model or a state dict, not {type(source).__name__}")
    if compressed is None:
        with tempfile.TemporaryDirectory() as tmp:
            compressed = write_compressed(Path(tmp) / "probe.pks", tensors, {}, values=values, level=level)["bytes"]
    model_tensors = {k: v for k, v in tensors.items() if not k.startswith("@")}  # not training state / masks
    bound, nnz, numel = entropy_bound_bytes(model_tensors)
    dense = sum(t.numel() * t.element_size() for t in model_tensors.values())
    return SizeReport(dense, compressed, bound, nnz, numel, values)
