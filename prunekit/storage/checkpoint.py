"""Checkpoints without pickle: one safetensors file whose header metadata holds a JSON description.

The description names the architecture (so the model is rebuilt from code, never unpickled), the data it expects
(classes, normalization, input size), the input the model runs at (``input``: per-sample shapes without the batch
dimension and dtype names, e.g. ``{"shapes": [[3, 224, 224]], "dtypes": ["float32"]}``), what pruning changed
(``structure`` for physically removed channels, mask names for unstructured pruning), which tensors are one
(``tied``) and, for resumable training, the loop's state.

Any ``nn.Module`` saves: one prunekit did not build (a plain torchvision or Hugging Face model) is described by its
class name (``module``, for information: never imported) and its full pruned structure, and loads into a fresh,
unpruned instance the caller builds (``prunekit.storage.instance``). Tensors that are not model weights
live under ``@``-prefixed keys (``@mask/…``, ``@train/…``). Files are written to a temporary name and renamed, so an
interrupted write never leaves a broken checkpoint behind. Compressed sparse files (``prunekit.storage.codec``) are
recognised by their magic bytes and load through the same :func:`load`.

    prunekit.save(model, "model.safetensors", data={"classes": [...]})
    model = prunekit.load("model.safetensors")
    prunekit.save(pruned_resnet, "r50.safetensors")                      # any nn.Module
    prunekit.load("r50.safetensors", model=torchvision.models.resnet50())  # into a fresh instance
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

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
from ..measure.state import InputSpec
from .codec import is_compressed, read_compressed, write_compressed  # compressed sparse files: own magic bytes
from .instance import config_sizes, fit_instance, match_ties
from .savable import check_savable, module_qualname, tied_names
from .schema import check_description, check_structure
from .validate import check_against_tensors, shapes_model

FORMAT = "prunekit-checkpoint"
VERSION = 2  # 2: a model prunekit did not build ("module" instead of "arch"); arch files are still written as 1
META_KEY = "prunekit"
DEFAULT_INPUT_SIZE = 64  # what a file that records neither an input nor a data input_size is measured at


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


def build_description(model: nn.Module, input: Any = None, **sections: Any) -> Dict[str, Any]:
    """The JSON description saved in the file's metadata: architecture (or class name), pruned structure, tied
    tensors, the input (:func:`input_record`) and ``sections``."""
    check_savable(model)  # refuse to write a file that load() would refuse
    arch = getattr(model, "prunekit_arch", None)
    desc: Dict[str, Any] = {"format": FORMAT, "version": 1, "prunekit": __version__}
    if arch is not None:
        desc.update(arch=arch, structure=_structure_if_pruned(model, arch))
    else:  # no original to compare with: always the whole structure, which a fresh instance is given on load
        desc.update(version=VERSION, module={"qualname": module_qualname(model)}, structure=structure_of(model))
    check_structure(desc["structure"], "checkpoint")
    desc["tied"] = tied_names(model)
    sizes = config_sizes(model) if arch is None else None
    if sizes:
        desc["config"] = sizes
    record = input_record(model, input)
    if record is not None:
        desc["input"] = record
    desc.update({k: v for k, v in sections.items() if v is not None})
    return desc


def input_record(model: nn.Module, given: Any = None) -> Optional[Dict[str, Any]]:
    """The input a checkpoint records: ``given`` (an InputSpec, an example tensor or tuple of tensors, or a per-sample
    image shape such as ``(3, 224, 224)``), else that of the plan ``prunekit.prune`` left on the model
    (``model.prunekit_plan``), else None (readers then fall back to the data's ``input_size``)."""
    if given is not None:
        if isinstance(given, InputSpec):
            return given.to_dict()
        if isinstance(given, dict):
            return InputSpec.from_dict(given).to_dict()
        if isinstance(given, torch.Tensor) or (isinstance(given, (tuple, list)) and given
                                               and all(isinstance(g, torch.Tensor) for g in given)):
            return InputSpec.from_example(given).to_dict()
        return InputSpec.image(given).to_dict()
    plan = getattr(model, "prunekit_plan", None)
    shapes = getattr(plan, "input_shapes", None)
    if not shapes:
        return None
    dtypes = list(getattr(plan, "input_dtypes", None) or ["float32"] * len(shapes))
    return InputSpec(tuple(tuple(s[1:]) for s in shapes), tuple(dtypes)).to_dict()


def recorded_input(desc: Dict[str, Any]) -> InputSpec:
    """The input a checkpoint's model runs at: its ``input`` record; for files written before inputs were recorded,
    a 3-channel square image of the data's ``input_size`` (64 px when that is missing too)."""
    if desc.get("input"):
        return InputSpec.from_dict(desc["input"])
    size = (desc.get("data") or {}).get("input_size", DEFAULT_INPUT_SIZE)
    return InputSpec.image((3, size, size))


def save(model: nn.Module, path: str | Path, extras: Optional[Dict[str, torch.Tensor]] = None,
         codec: Optional[Dict[str, Any]] = None, input: Any = None, **sections: Any) -> Path:
    """Write ``model`` (and ``@``-keyed ``extras``) to ``path`` atomically. Any ``nn.Module`` saves (module doc).

    ``input`` records what the model is fed (an example tensor or tuple, an ``InputSpec`` or an image shape; default
    the plan's, see :func:`input_record`): ``prunekit info`` and ``export`` measure and export at it.
    ``sections`` are JSON-able parts of the description (``data=``, ``metrics=``, ``recipe=``, ``train=`` ...).
    ``codec={"values": "fp16"}`` (or any options of ``prunekit.storage.codec.write_compressed``) writes the
    compressed sparse format instead of plain safetensors. Anything a checkpoint cannot hold is refused before
    writing (:func:`prunekit.storage.savable.check_savable`, which a job calls before its work).
    """
    desc = build_description(model, input=input, **sections)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for k, v in (extras or {}).items():
        if not k.startswith("@"):
            raise ValueError(f"extra tensor names must start with '@', got {k!r}")
        tensors[k] = v.detach().cpu().contiguous()
    for alias, source in (desc.get("tied") or {}).items():  # one copy of a tied weight; read() restores the alias
        if source in tensors:
            tensors.pop(alias, None)
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
        tensors, desc = read_compressed(p, check=declared_check(p))
        return _with_ties(tensors, desc), desc
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
    return _with_ties(tensors, desc), desc


def declared_check(p: Path, header: bool = True) -> Callable[[Dict[str, torch.Tensor], Dict[str, Any]], None]:
    """For ``read_compressed``: a compressed file's header (unless ``header=False``: ``prunekit size`` reads any
    compressed file) and declared shapes (meta tensors: an all-zero tensor costs its file a few bytes, its reader
    gigabytes) checked against the described model before anything is decoded (``validate.check_against_tensors``;
    a file of a model prunekit does not build is shape-checked against the instance it is loaded into, later)."""
    def check(declared: Dict[str, torch.Tensor], desc: Dict[str, Any]) -> None:
        if header:
            _check_header(desc, p)
        if isinstance(desc.get("arch"), dict):
            check_against_tensors(desc, _with_ties(dict(declared), desc), p)
    return check


def _with_ties(tensors: Dict[str, torch.Tensor], desc: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """A tied weight is stored once (``save``); its aliases (``desc["tied"]``: alias -> stored name) read as it."""
    tied = desc.get("tied")
    if isinstance(tied, dict):
        for alias, source in tied.items():
            if isinstance(alias, str) and isinstance(source, str) and alias not in tensors and source in tensors:
                tensors[alias] = tensors[source]
    return tensors


def read_description(path: str | Path) -> Dict[str, Any]:
    """The description alone (a plain file's header only; a compressed file is read whole). Never unpickles."""
    p = Path(path)
    if p.is_file() and not is_compressed(p):
        try:
            with safe_open(str(p), framework="pt") as f:
                desc = json.loads((f.metadata() or {})[META_KEY])
        except Exception:  # unreadable, no description, bad JSON: read() says which, in its words
            return read(p)[1]
        _check_header(desc, p)
        return desc
    return read(p)[1]


def _check_header(desc: Any, p: Path) -> None:
    described = isinstance(desc, dict) and (isinstance(desc.get("arch"), dict) or
                                            ("arch" not in desc and isinstance(desc.get("module"), dict)))
    if not described or desc.get("format") != FORMAT:
        found = desc.get("format") if isinstance(desc, dict) else type(desc).__name__
        raise CheckpointError(f"{p} is not a prunekit checkpoint (format {found!r})")
    version = desc.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{p} has a corrupted prunekit description (version {version!r})")
    if version > VERSION:
        raise CheckpointError(f"{p} was written by a newer prunekit (format v{version}); upgrade prunekit")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", model: Optional[nn.Module] = None
                    ) -> Checkpoint:
    """Check the description against the file's tensors on the meta device (``prunekit.storage.validate``), then
    rebuild the architecture from code, replay structured pruning and load the tensors (strictly).

    ``model``: a fresh, unpruned instance to load into instead (required for a model prunekit does not build by
    name; changed in place): it gets the saved shapes and ties, then the weights (``prunekit.storage.instance``).
    """
    tensors, desc = read(path)
    weights = {k: v for k, v in tensors.items() if not k.startswith("@")}
    extras = {k: v for k, v in tensors.items() if k.startswith("@")}
    if model is not None:
        check_description(desc, str(path))
        model = fit_instance(model, desc, tensors, str(path))
    elif "arch" not in desc:
        check_description(desc, str(path))
        cls = desc["module"]["qualname"].rsplit(".", 1)[-1]
        raise CheckpointError(f"{path} holds a {desc['module']['qualname']}, which prunekit does not build by name; "
                              f"load it into a fresh, unpruned instance: prunekit.load(path, model={cls}(...)), or "
                              "on the command line --model NAME (e.g. torchvision/resnet50)")
    else:
        model = _rebuilt(desc, tensors, path)
        if "tied" in desc:
            match_ties(model, desc["tied"], str(path))
        load_tensors(model, weights, strict=True)
    masks = {k[len("@mask/"):]: v for k, v in extras.items() if k.startswith("@mask/")}
    if masks:
        model.prunekit_masks = masks  # the fine-tuning loop keeps these zero; see prunekit.sparse
    model.prunekit_description = desc
    return Checkpoint(model.to(device), desc, extras)


def _rebuilt(desc: Dict[str, Any], tensors: Dict[str, torch.Tensor], path: str | Path) -> nn.Module:
    """The described prunekit architecture built from code with its pruned structure (weights not yet loaded)."""
    check_against_tensors(desc, tensors, path)
    try:
        model = _fresh(desc["arch"])
    except ModelError as e:
        raise CheckpointError(f"{path}: cannot rebuild its model: {e}") from None
    if desc.get("structure"):
        restore_structure(model, desc["structure"])
    return model


def load(path: str | Path, device: str | torch.device = "cpu", sparse_kernels: bool = False,
         model: Optional[nn.Module] = None) -> nn.Module:
    """``prunekit.load``: the model saved at ``path``, in eval mode, with its description as ``.prunekit_description``.

    Built-in, ``torchvision/...`` and ``timm/...`` models are rebuilt by name. Any other model loads into a fresh,
    unpruned instance you build: ``prunekit.load(path, model=torchvision.models.resnet50())`` (it gets the pruned
    shapes, then the weights, strictly; tied weights stay tied).

    ``sparse_kernels=True`` replays the per-layer kernel decisions recorded at pruning time (``prunekit prune
    --sparse-kernels``): the layers measured faster as torch sparse kernels become CSR layers, for CPU inference
    only (no autograd through them). A checkpoint without decisions loads dense.
    """
    model = load_checkpoint(path, device, model=model).model.eval()
    decisions = model.prunekit_description.get("sparse_kernels")
    if sparse_kernels and decisions:
        if torch.device(device).type != "cpu":
            raise CheckpointError("sparse kernels run on the CPU; load with device='cpu' or sparse_kernels=False")
        apply_decisions(model, decisions)
    return model
