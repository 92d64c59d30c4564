"""Checkpoints without pickle: one safetensors file whose header metadata holds a JSON description.

The description names the architecture (so the model is rebuilt from code, never unpickled), the data it expects
(classes, normalization, input size), what pruning changed (``structure`` for physically removed channels, mask
names for unstructured pruning) and, for resumable training, the loop's state. Tensors that are not model weights
live under ``@``-prefixed keys (``@mask/…``, ``@train/…``). Files are written to a temporary name and renamed, so an
interrupted write never leaves a broken checkpoint behind. Compressed sparse files (``prunekit.sparse.codec``) are
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
from torch import nn

from .. import __version__
from ..errors import CheckpointError, ModelError
from ..models.state_load import load_tensors
from ..runtime import atomic_path

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
        return {k: v for k, v in self.extras.items() if k.startswith(prefix)}


def architecture_of(model: nn.Module) -> Dict[str, Any]:
    arch = getattr(model, "prunekit_arch", None)
    if arch is None:
        raise CheckpointError("this model was not built by prunekit.create_model, so a checkpoint could not say how to "
                              "rebuild it; build it with prunekit.create_model(name, num_classes)")
    return arch


def _fresh(arch: Dict[str, Any], meta: bool = False) -> nn.Module:
    """The architecture as built from code; ``meta=True`` tries the meta device first (shapes only, no init)."""
    from ..models import create_model

    if meta:
        try:
            with torch.device("meta"):
                return create_model(arch["name"], arch["num_classes"], **arch.get("kwargs", {}))
        except NotImplementedError:  # a constructor that reads tensor values (torchvision RegNet's widths: .tolist())
            pass  # "Cannot copy out of meta tensor": build it for real
    return create_model(arch["name"], arch["num_classes"], **arch.get("kwargs", {}))


def _structure_if_pruned(model: nn.Module, arch: Dict[str, Any]) -> Optional[Any]:
    """The structured-pruning record, only when shapes differ from the original architecture."""
    fresh = {k: v.shape for k, v in _fresh(arch, meta=True).state_dict().items()}
    own = {k: v.shape for k, v in model.state_dict().items()}
    if fresh == own:
        return None
    from ..apply.structured import structure_of

    return structure_of(model)


def build_description(model: nn.Module, **sections: Any) -> Dict[str, Any]:
    arch = architecture_of(model)
    desc: Dict[str, Any] = {"format": FORMAT, "version": VERSION, "prunekit": __version__, "arch": arch,
                            "structure": _structure_if_pruned(model, arch)}
    desc.update({k: v for k, v in sections.items() if v is not None})
    return desc


def save(model: nn.Module, path: str | Path, extras: Optional[Dict[str, torch.Tensor]] = None,
         codec: Optional[Dict[str, Any]] = None, **sections: Any) -> Path:
    """Write ``model`` (and ``@``-keyed ``extras``) to ``path`` atomically.

    ``sections`` are JSON-able parts of the description (``data=``, ``metrics=``, ``recipe=``, ``train=`` ...).
    ``codec={"values": "fp16"}`` (or any options of ``prunekit.sparse.codec.write_compressed``) writes the
    compressed sparse format instead of plain safetensors.
    """
    from safetensors.torch import save_file

    desc = build_description(model, **sections)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for k, v in (extras or {}).items():
        if not k.startswith("@"):
            raise ValueError(f"extra tensor names must start with '@', got {k!r}")
        tensors[k] = v.detach().cpu().contiguous()
    path = Path(path)
    with atomic_path(path) as tmp:
        if codec is not None:
            from ..sparse.codec import write_compressed

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
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist; pass the path of a .safetensors file "
                              "written by prunekit")
    from ..sparse import codec as sparse_codec  # the compressed sparse format has its own magic bytes

    if sparse_codec.is_compressed(p):
        return sparse_codec.read_compressed(p)
    from safetensors import safe_open
    from safetensors.torch import load_file

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
    except json.JSONDecodeError:
        raise CheckpointError(f"{p} has a corrupted prunekit description") from None
    if desc.get("format") != FORMAT or not isinstance(desc.get("arch"), dict):
        raise CheckpointError(f"{p} is not a prunekit checkpoint (format {desc.get('format')!r})")
    if desc.get("version", 0) > VERSION:
        raise CheckpointError(f"{p} was written by a newer prunekit (format v{desc['version']}); upgrade prunekit")
    return tensors, desc


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the architecture from code, replay structured pruning, then load the tensors (strictly)."""
    tensors, desc = read(path)
    try:
        model = _fresh(desc["arch"])
    except ModelError as e:
        raise CheckpointError(f"{path}: cannot rebuild its model: {e}") from None
    if desc.get("structure"):
        from ..apply.structured import restore_structure

        restore_structure(model, desc["structure"])
    weights = {k: v for k, v in tensors.items() if not k.startswith("@")}
    extras = {k: v for k, v in tensors.items() if k.startswith("@")}
    check_fits(model, weights, path)
    load_tensors(model, weights, strict=True)
    masks = {k[len("@mask/"):]: v for k, v in extras.items() if k.startswith("@mask/")}
    if masks:
        model.prunekit_masks = masks  # the fine-tuning loop keeps these zero; see prunekit.sparse
    model.prunekit_description = desc
    return Checkpoint(model.to(device), desc, extras)


def check_fits(model: nn.Module, weights: Dict[str, torch.Tensor], path: str | Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit {model.prunekit_arch['name']}: "
                              f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    for k, v in weights.items():
        if own[k].shape != v.shape:
            raise CheckpointError(f"{path} does not fit {model.prunekit_arch['name']}: {k} is {tuple(v.shape)} in the "
                                  f"file but {tuple(own[k].shape)} in the model")


def load(path: str | Path, device: str | torch.device = "cpu", sparse_kernels: bool = False) -> nn.Module:
    """``prunekit.load``: the model saved at ``path``, in eval mode, with its description as ``.prunekit_description``.

    ``sparse_kernels=True`` replays the per-layer kernel decisions recorded at pruning time (``prunekit prune
    --sparse-kernels``): the layers measured faster as torch sparse kernels become CSR layers, for CPU inference
    only (no autograd through them). A checkpoint without decisions loads dense.
    """
    model = load_checkpoint(path, device).model.eval()
    decisions = model.prunekit_description.get("sparse_kernels")
    if sparse_kernels and decisions:
        from ..sparse.kernels import apply_decisions

        if torch.device(device).type != "cpu":
            raise CheckpointError("sparse kernels run on the CPU; load with device='cpu' or sparse_kernels=False")
        apply_decisions(model, decisions)
    return model
