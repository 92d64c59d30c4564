"""Checkpoints without pickle: one safetensors file whose header metadata holds a JSON description.

The description names the architecture (so the model is rebuilt from code, never unpickled), the data it expects
(classes, normalization, input size), what pruning changed (``structure`` for physically removed channels, mask
names for unstructured pruning) and, for resumable training, the loop's state. Tensors that are not model weights
live under ``@``-prefixed keys (``@mask/…``, ``@train/…``). Files are written to a temporary name and renamed, so an
interrupted write never leaves a broken checkpoint behind. Compressed sparse files (``prunekit.storage.codec``) are
recognised by their magic bytes and load through the same :func:`load`.

    prunekit.save(model, "model.safetensors", data={"classes": [...]})
    model = prunekit.load("model.safetensors")
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .. import __version__
from ..apply.structured_state import restore_structure, structure_of
from ..errors import CheckpointError, ModelError
from ..files import atomic_path
from ..models import create_model
from ..models.state_load import load_tensors
from ..sparse.kernels import apply_decisions
from .codec import is_compressed, read_compressed, write_compressed  # compressed sparse files: own magic bytes
from .schema import check_arch
from .validate import check_against_tensors, shapes_model

FORMAT = "prunekit-checkpoint"
VERSION = 1
META_KEY = "prunekit"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model, its description, and the non-model tensors by ``@`` key."""

    model: nn.Module
    description: Dict[str, Any]
    extras: Dict[str, torch.Tensor] = field(default_factory=dict)

    def extras_under(self, prefix: str) -> Dict[str, torch.Tensor]:
        """Extra tensors saved beside the weights under ``prefix`` (e.g. ``@mask/`` for the sparse masks)."""
        return {k: v for k, v in self.extras.items() if k.startswith(prefix)}


def architecture_of(model: nn.Module) -> Dict[str, Any]:
    """How ``create_model`` built ``model`` (name, classes, kwargs): what a checkpoint needs to rebuild it."""
    arch = getattr(model, "prunekit_arch", None)
    if arch is None:
        raise CheckpointError("this model was not built by prunekit.create_model, so a checkpoint could not say how to "
                              "rebuild it; build it with prunekit.create_model(name, num_classes)")
    return arch


def _fresh(arch: Dict[str, Any], meta: bool = False) -> nn.Module:
    """The architecture as built from code; ``meta=True``: for its shapes only (``validate.shapes_model``)."""
    if meta:
        return shapes_model(arch, trusted=True)  # the model being saved: its own kwargs
    return create_model(arch["name"], arch["num_classes"], **arch.get("kwargs", {}))


def _structure_if_pruned(model: nn.Module, arch: Dict[str, Any]) -> Optional[Any]:
    """The structured-pruning record, only when shapes differ from the original architecture."""
    fresh = {k: v.shape for k, v in _fresh(arch, meta=True).state_dict().items()}
    own = {k: v.shape for k, v in model.state_dict().items()}
    if fresh == own:
        return None
    return structure_of(model)


def build_description(model: nn.Module, **sections: Any) -> Dict[str, Any]:
    """The JSON description saved in the file's metadata: architecture, pruned structure and ``sections``."""
    arch = architecture_of(model)
    check_arch(arch, "checkpoint")  # refuse to write a file that load() would refuse
    desc: Dict[str, Any] = {"format": FORMAT, "version": VERSION, "prunekit": __version__, "arch": arch,
                            "structure": _structure_if_pruned(model, arch)}
    desc.update({k: v for k, v in sections.items() if v is not None})
    return desc


def save(model: nn.Module, path: str | Path, extras: Optional[Dict[str, torch.Tensor]] = None,
         codec: Optional[Dict[str, Any]] = None, **sections: Any) -> Path:
    """Write ``model`` (and ``@``-keyed ``extras``) to ``path`` atomically.

    ``sections`` are JSON-able parts of the description (``data=``, ``metrics=``, ``recipe=``, ``train=`` ...).
    ``codec={"values": "fp16"}`` (or any options of ``prunekit.storage.codec.write_compressed``) writes the
    compressed sparse format instead of plain safetensors.
    """
    desc = build_description(model, **sections)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for k, v in (extras or {}).items():
        if not k.startswith("@"):
            raise ValueError(f"extra tensor names must start with '@', got {k!r}")
        tensors[k] = v.detach().cpu().contiguous()
    path = Path(path)
    with atomic_path(path) as tmp:
        if codec is not None:
            write_compressed(tmp, tensors, desc, **codec)
        else:
            _dedupe_shared(tensors)
            save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(desc)})
    return path


def _dedupe_shared(tensors: Dict[str, torch.Tensor]) -> None:
    """safetensors refuses tensors sharing memory (tied weights): give each its own copy."""
    seen: Dict[Tuple[int, int], str] = {}
    for k, v in tensors.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else (id(v), 0)
        if key in seen:
            tensors[k] = v.clone()
        else:
            seen[key] = k


def read(path: str | Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Read tensors and description without building a model. Never unpickles."""
    p = Path(path)
    if p.is_dir():
        inside = p / "model.safetensors"
        hint = f" (did you mean {inside}?)" if inside.is_file() else ""
        raise CheckpointError(f"checkpoint {str(p)!r} is a folder; pass the path of a .safetensors file written by "
                              f"prunekit{hint}")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist; pass the path of a .safetensors file "
                              "written by prunekit")
    if is_compressed(p):
        tensors, desc = read_compressed(p)
        _check_header(desc, p)
        return tensors, desc
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(p))
    except Exception as e:
        raise CheckpointError(f"{p} is not a readable safetensors checkpoint (truncated or corrupted? {e})") from None
    if META_KEY not in meta:
        raise CheckpointError(f"{p} is a safetensors file without a prunekit description; to load plain weights "
                              "use --weights with --model NAME")
    try:
        desc = json.loads(meta[META_KEY])
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{p} has a corrupted prunekit description") from None
    _check_header(desc, p)
    return tensors, desc


def _check_header(desc: Any, p: Path) -> None:
    if not isinstance(desc, dict) or desc.get("format") != FORMAT or not isinstance(desc.get("arch"), dict):
        found = desc.get("format") if isinstance(desc, dict) else type(desc).__name__
        raise CheckpointError(f"{p} is not a prunekit checkpoint (format {found!r})")
    version = desc.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{p} has a corrupted prunekit description (version {version!r})")
    if version > VERSION:
        raise CheckpointError(f"{p} was written by a newer prunekit (format v{version}); upgrade prunekit")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Check the description against the file's tensors on the meta device (``prunekit.storage.validate``), then
    rebuild the architecture from code, replay structured pruning and load the tensors (strictly)."""
    tensors, desc = read(path)
    check_against_tensors(desc, tensors, path)
    try:
        model = _fresh(desc["arch"])
    except ModelError as e:
        raise CheckpointError(f"{path}: cannot rebuild its model: {e}") from None
    if desc.get("structure"):
        restore_structure(model, desc["structure"])
    weights = {k: v for k, v in tensors.items() if not k.startswith("@")}
    extras = {k: v for k, v in tensors.items() if k.startswith("@")}
    load_tensors(model, weights, strict=True)
    masks = {k[len("@mask/"):]: v for k, v in extras.items() if k.startswith("@mask/")}
    if masks:
        model.prunekit_masks = masks  # the fine-tuning loop keeps these zero; see prunekit.sparse
    model.prunekit_description = desc
    return Checkpoint(model.to(device), desc, extras)


def load(path: str | Path, device: str | torch.device = "cpu", sparse_kernels: bool = False) -> nn.Module:
    """``prunekit.load``: the model saved at ``path``, in eval mode, with its description as ``.prunekit_description``.

    ``sparse_kernels=True`` replays the per-layer kernel decisions recorded at pruning time (``prunekit prune
    --sparse-kernels``): the layers measured faster as torch sparse kernels become CSR layers, for CPU inference
    only (no autograd through them). A checkpoint without decisions loads dense.
    """
    model = load_checkpoint(path, device).model.eval()
    decisions = model.prunekit_description.get("sparse_kernels")
    if sparse_kernels and decisions:
        if torch.device(device).type != "cpu":
            raise CheckpointError("sparse kernels run on the CPU; load with device='cpu' or sparse_kernels=False")
        apply_decisions(model, decisions)
    return model
