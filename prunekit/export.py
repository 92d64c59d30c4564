"""ONNX export that proves itself: the file is checked by ``onnx.checker`` and run by onnxruntime against PyTorch.

Exporter paths (torch 2.14): the default exporter (``dynamo=True``, torch.export based) needs the extra
``onnxscript`` package and writes at least opset 18; the TorchScript exporter (``dynamo=False``) ships with
torch, honours the opset asked for, and is deprecated but working. ``exporter="auto"`` tries the default first
when onnxscript is installed and ``opset >= 18`` (below 18 the new exporter cannot honour the request: its
down-conversion fails and it silently writes 18), falling back to TorchScript on any failure; otherwise it goes
straight to TorchScript, which is what the default ``opset=17`` uses. The path actually used is returned, so a
report can say which one produced the file.

The input is a per-sample image shape ``(3, H, W)`` or an ``InputSpec`` (``prunekit.measure.InputSpec``: token
ids, several inputs); the graph's inputs are named ``input`` (one) or ``input_0``, ``input_1``, ... and every one
has a symbolic batch axis.

Example::

    info = export_onnx(model, "pruned.onnx", input_shape=(3, 224, 224))
    print(info["bytes"], info["max_abs_diff"])
"""
from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, PrunekitError
from .files import atomic_path
from .measure.state import InputLike, InputSpec, borrowed, dummy_inputs, input_spec

EXPORTERS = ("auto", "dynamo", "torchscript")


class ExportError(PrunekitError):
    """The model could not be exported, or the exported file does not compute what the PyTorch model computes."""


def input_names(count: int) -> List[str]:
    """The ONNX graph's input names: ``input`` for one input, ``input_0``, ``input_1``, ... for several."""
    return ["input"] if count == 1 else [f"input_{i}" for i in range(count)]


def _export(model: nn.Module, x: Tuple[torch.Tensor, ...], dest: Path, opset: int, dynamic_batch: bool,
            dynamo: bool) -> None:
    names = input_names(len(x))
    kwargs: dict[str, Any] = dict(input_names=names, output_names=["output"], opset_version=opset, dynamo=dynamo)
    if dynamo:
        kwargs.update(external_data=False, verbose=False)  # one self-contained file, renamed atomically
        if dynamic_batch:
            kwargs["dynamic_shapes"] = tuple({0: torch.export.Dim.DYNAMIC} for _ in x)
    elif dynamic_batch:
        kwargs["dynamic_axes"] = {**{n: {0: "batch"} for n in names}, "output": {0: "batch"}}
    with warnings.catch_warnings(), _output_kept_on_success():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript path announces its deprecation
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(model, tuple(x), str(dest), **kwargs)


@contextmanager
def _output_kept_on_success() -> Iterator[None]:
    """Hold what the exporter writes to the process's stdout and stderr (file descriptors 1 and 2: torch's C++ side
    prints the whole TorchScript graph of a failed export there) and pass it on only if the export succeeds; a
    failure is reported as one ExportError line instead."""
    streams = [(1, sys.stdout), (2, sys.stderr)]
    for _, stream in streams:
        stream.flush()
    saved = [os.dup(fd) for fd, _ in streams]
    held = [tempfile.TemporaryFile(mode="w+b") for _ in streams]
    ok = False
    try:
        for (fd, _), file in zip(streams, held):
            os.dup2(file.fileno(), fd)
        yield
        ok = True
    finally:
        for (fd, stream), copy_of, file in zip(streams, saved, held):
            stream.flush()
            os.dup2(copy_of, fd)
            os.close(copy_of)
            if ok:
                file.seek(0)
                text = file.read()
                if text:
                    stream.write(text.decode(errors="replace"))
            file.close()


def _brief(exc: Exception) -> str:
    """The first line of an exporter error: torch appends the whole TorchScript graph to some messages, and a
    user-facing error stays one line."""
    text = str(exc).split("Torch IR graph at exception")[0].strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:300]


def _export_any(model: nn.Module, x: Tuple[torch.Tensor, ...], dest: Path, opset: int, dynamic_batch: bool,
                exporter: str) -> str:
    """Run the chosen exporter; return the name of the one that produced ``dest``."""
    has_onnxscript = importlib.util.find_spec("onnxscript") is not None
    if exporter == "dynamo" or (exporter == "auto" and has_onnxscript and opset >= 18):
        try:
            _export(model, x, dest, opset, dynamic_batch, dynamo=True)
            return "dynamo"
        except Exception as exc:  # noqa: BLE001 - any failure of the new exporter means: try the old one
            if exporter == "dynamo":
                raise ExportError(f"dynamo ONNX export failed ({type(exc).__name__}: {_brief(exc)}); "
                                  "try exporter='torchscript'") from exc
    try:
        _export(model, x, dest, opset, dynamic_batch, dynamo=False)
    except Exception as exc:  # noqa: BLE001 - surface as one clear user-facing error
        raise ExportError(f"ONNX export of {type(model).__name__} failed ({type(exc).__name__}: {_brief(exc)}); "
                          "the model may use an op ONNX lacks, try another opset") from exc
    return "torchscript"


def _flat_outputs(out: Any) -> list[np.ndarray]:
    if isinstance(out, torch.Tensor):
        return [out.detach().float().cpu().numpy()]
    if isinstance(out, (list, tuple)):
        return [a for o in out for a in _flat_outputs(o)]
    if isinstance(out, dict):
        return [a for o in out.values() for a in _flat_outputs(o)]
    return []


def ort_feed(session: Any, x: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    """onnxruntime's input dict for positional inputs ``x`` (floats as float32); an input the exporter dropped
    because the graph never reads it is left out."""
    wanted = {i.name for i in session.get_inputs()}
    arrays = [t.detach().cpu().float().numpy() if t.is_floating_point() else t.detach().cpu().numpy() for t in x]
    return {n: a for n, a in zip(input_names(len(x)), arrays) if n in wanted}


def _verify(model: nn.Module, onnx_path: Path, batches: Sequence[int], spec: InputSpec,
            atol: float, rtol: float) -> float:
    """Largest |onnxruntime - PyTorch| over the given batch sizes; raise if any exceeds atol + rtol * max|ref|."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in batches:
        made = dummy_inputs(model, batch, spec, torch.device("cpu"))
        x = tuple(t.float() if t.is_floating_point() else t for t in made)
        with torch.inference_mode():
            expected = _flat_outputs(model(*x))
        got = session.run(None, ort_feed(session, x))
        if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected)):
            raise ExportError(f"ONNX outputs at batch {batch} have shapes {[g.shape for g in got]}, "
                              f"PyTorch gives {[e.shape for e in expected]}; export with dynamic_batch=False")
        for g, e in zip(got, expected):
            diff = float(np.max(np.abs(g.astype(np.float32) - e))) if e.size else 0.0
            bound = atol + rtol * (float(np.max(np.abs(e))) if e.size else 0.0)
            if not diff <= bound:  # also catches NaN
                raise ExportError(f"ONNX output differs from PyTorch by {diff:.3g} at batch {batch} (allowed "
                                  f"{bound:.3g}); the exporter mistranslated an op, try exporter='torchscript'")
            worst = max(worst, diff)
    return worst


def _file_opset(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx"))


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_shape: InputLike = (3, 64, 64),
    opset: int = 17,
    dynamic_batch: bool = True,
    verify: bool = True,
    exporter: str = "auto",
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> dict[str, Any]:
    """Export ``model`` (eval mode, on CPU) to ONNX at ``path`` and check it.

    ``input_shape`` is a per-sample image shape ``(3, H, W)`` or an ``InputSpec`` (the input a checkpoint records:
    ``prunekit.storage.checkpoint.recorded_input``). With ``dynamic_batch`` every input's batch axis is symbolic and
    verification runs at batch 2 and 1, so a batch size baked into the graph is caught. The file appears under
    ``path`` only once checking passed. Returns ``{"path", "bytes", "max_abs_diff" (None without verify), "opset"
    (as written), "exporter", "input" (the exported input spec, per-sample shapes and dtypes)}``.
    """
    import onnx

    spec = input_spec(input_shape)
    if exporter not in EXPORTERS:
        raise ConfigError(f"exporter={exporter!r} is unknown; use one of {', '.join(EXPORTERS)}")
    if not isinstance(opset, int) or opset < 11:
        raise ConfigError(f"opset={opset!r} is too old or not an int; use 17 (or any >= 11)")
    final = Path(path)
    batches = (2, 1) if dynamic_batch else (1,)
    with borrowed(model, "cpu"), atomic_path(final) as tmp:
        x = dummy_inputs(model, batches[0], spec, torch.device("cpu"))
        used = _export_any(model, x, tmp, opset, dynamic_batch, exporter)
        try:
            onnx.checker.check_model(str(tmp))
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"exported ONNX file fails onnx.checker: {exc}") from exc
        max_diff = _verify(model, tmp, batches, spec, atol, rtol) if verify else None
        written_opset = _file_opset(tmp)
    return {"path": str(final), "bytes": final.stat().st_size, "max_abs_diff": max_diff,
            "opset": written_opset, "exporter": used, "input": spec.to_dict()}


class OrtModule(nn.Module):
    """``model`` exported to ONNX and run by onnxruntime on the CPU, called like the PyTorch model.

    For timing the deployed form of a pruned model (ONNX Runtime fuses BatchNorm and activations into the
    convolutions and has no Python overhead per op, so per-op fixed costs that eager PyTorch pays do not hide
    the savings of pruning). The graph is exported at ``input_shape`` with a dynamic batch axis;
    ``threads`` defaults to torch's intra-op thread count so both runtimes are timed alike.
    """

    def __init__(self, model: nn.Module, input_shape: InputLike, threads: int | None = None, opset: int = 17):
        super().__init__()
        import tempfile

        import onnxruntime as ort

        self.spec = input_spec(input_shape)
        self.input_shape = self.spec.shapes[0]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        with tempfile.TemporaryDirectory(prefix="prunekit-ort-") as tmp:
            path = Path(tmp) / "model.onnx"
            export_onnx(model, path, self.spec, opset=opset, dynamic_batch=True, verify=False)
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, *x: torch.Tensor) -> torch.Tensor:
        """Run ``x`` through the ONNX Runtime session on the CPU; raises ConfigError for another input shape."""
        got = tuple(tuple(t.shape[1:]) for t in x)
        if got != self.spec.shapes:
            raise ConfigError(f"OrtModule was exported for inputs of shape {self.spec.label()}, got "
                              f"{[list(s) for s in got]}; build another OrtModule for that shape")
        out = self.session.run(None, ort_feed(self.session, x))[0]
        return torch.from_numpy(out)
