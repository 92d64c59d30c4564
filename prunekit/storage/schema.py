"""The shape of a checkpoint's JSON description, checked field by field before any of it is acted on.

A checkpoint is untrusted input: its description decides which constructor runs with which arguments, how many
channels get allocated and what input size later commands feed the model. Only fields prunekit itself writes, of
the types it writes, pass; constructor kwargs come from an allow-list (:data:`ARCH_KWARGS`), so a file cannot ask
for a hub download, a pretrained file path or any other argument prunekit never records.

A model prunekit did not build is described by ``module`` (its class name, for information: nothing is imported
from it) instead of ``arch``; the caller hands ``load`` the instance. Module attributes a file may set are the
shape attributes structured pruning changes (``SHAPE_ATTRS``), to ints or lists of ints, and nothing else.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

from ..apply.structured_fix import SHAPE_ATTRS
from ..apply.structured_state import STRUCTURE_FORMAT
from ..errors import CheckpointError, ConfigError
from ..measure.state import InputSpec

MAX_DIM = 1 << 20  # no channel count, width or tensor dimension prunekit builds comes near a million
MAX_NAME = 4096  # a class name, module name or dataset path


def _int(lo: int, hi: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _ints(lo: int, hi: int, max_len: int) -> Callable[[Any], bool]:
    one = _int(lo, hi)
    return lambda v: isinstance(v, (list, tuple)) and 1 <= len(v) <= max_len and all(one(x) for x in v)


def _fraction(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < 1.0


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e30


def _text(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= MAX_NAME


# Constructor kwargs a description may carry, per model source (built-in name, torchvision/..., timm/...): shape
# arguments only. Anything else (weights, pretrained, pretrained_cfg, checkpoint_path, ...) is refused.
ARCH_KWARGS: Dict[str, Dict[str, Callable[[Any], bool]]] = {
    "builtin": {"widths": _ints(1, 4096, 16), "blocks": _ints(1, 64, 16), "convs_per_stage": _int(1, 64),
                "dropout": _fraction, "in_chans": _int(1, 256)},
    "torchvision": {"dropout": _fraction, "aux_logits": lambda v: v is False, "init_weights": lambda v: v is True,
                    "width_mult": lambda v: _finite(v) and 0 < v <= 4, "stochastic_depth_prob": _fraction,
                    "groups": _int(1, 256), "width_per_group": _int(1, 4096), "image_size": _int(8, 4096)},
    "timm": {"in_chans": _int(1, 256), "drop_rate": _fraction, "drop_path_rate": _fraction,
             "img_size": _int(8, 4096), "global_pool": lambda v: v in ("", "avg", "max", "token", "map")},
}

# The data section later commands act on (input size of the measurement, normalization, the split).
DATA_FIELDS: Dict[str, Callable[[Any], bool]] = {
    "input_size": _int(8, 4096), "classes": lambda v: isinstance(v, list) and all(_text(c) for c in v),
    "mean": lambda v: isinstance(v, list) and 1 <= len(v) <= 256 and all(_finite(x) for x in v),
    "std": lambda v: isinstance(v, list) and 1 <= len(v) <= 256 and all(_finite(x) and x > 0 for x in v),
    "source": _text, "split_seed": _int(-2**63, 2**63 - 1), "test_frac": _fraction, "val_frac": _fraction,
}


def source_of(name: str) -> str:
    """``torchvision``, ``timm`` or ``builtin``: which kwargs allow-list a model name falls under."""
    source, _, arch = name.partition("/")
    return source if arch and source in ("torchvision", "timm") else "builtin"


def check_description(desc: Any, where: str) -> None:
    """Raise :class:`CheckpointError` unless ``desc`` has the fields and types prunekit writes (module doc)."""
    if not isinstance(desc, dict):
        raise CheckpointError(f"{where}: the prunekit description is a {type(desc).__name__}, not an object; "
                              "the file was edited or damaged, re-create it with prunekit")
    if "arch" in desc:
        check_arch(desc.get("arch"), where)
    else:
        check_module(desc.get("module"), where)
        if desc.get("structure") is None:
            raise CheckpointError(f"{where}: the description of a {desc['module']['qualname']} has no pruned-structure "
                                  "record; the file was edited, re-create it with prunekit.save")
    check_structure(desc.get("structure"), where)
    check_tied(desc.get("tied", {}), where)
    if not _mapping(desc.get("config", {}), _int(-2**63, 2**63 - 1)):
        raise CheckpointError(f"{where}: the description's 'config' must map names to ints (the file was edited?)")
    if desc.get("input") is not None:
        check_input(desc["input"], where)
    data = desc.get("data")
    if data is not None:
        check_data(data, desc["arch"]["num_classes"] if "arch" in desc else None, where)


def check_module(module: Any, where: str) -> None:
    """The record of a model prunekit did not build: ``{"qualname": "package.module.Class"}`` (information only)."""
    if not isinstance(module, dict) or not _text(module.get("qualname")) or not module["qualname"]:
        raise CheckpointError(f"{where}: the description names neither a prunekit architecture ('arch') nor the "
                              "saved model's class ('module'); re-create the checkpoint with prunekit.save")


def check_tied(tied: Any, where: str) -> None:
    """Tied tensors: ``{alias: source}`` names, e.g. ``{"lm_head.weight": "transformer.wte.weight"}``."""
    if not _mapping(tied, lambda v: _text(v) and bool(v)):
        raise CheckpointError(f"{where}: the description's 'tied' must map tensor names to tensor names (the file "
                              "was edited?)")


def check_input(record: Any, where: str) -> None:
    """The recorded model input: ``{"shapes": [[per-sample sizes]], "dtypes": [names]}`` (``InputSpec.to_dict``)."""
    try:
        spec = InputSpec.from_dict(record)
    except ConfigError as e:
        raise CheckpointError(f"{where}: the description's input record is malformed ({e}); the file was edited, "
                              "re-create it") from None
    if any(d > MAX_DIM for s in spec.shapes for d in s):
        raise CheckpointError(f"{where}: the description's input {spec.label()} has a size above {MAX_DIM}; the "
                              "file was edited")


def check_arch(arch: Any, where: str) -> None:
    """Refuse (CheckpointError) an architecture record a file could abuse: no name, huge class counts, kwargs off
    the allow-list."""
    if not isinstance(arch, dict) or not _text(arch.get("name")) or not arch["name"]:
        raise CheckpointError(f"{where}: the description's 'arch' does not name a model; re-create the checkpoint")
    n = arch.get("num_classes")
    if not _int(1, MAX_DIM)(n):
        raise CheckpointError(f"{where}: the description asks for {n!r} classes; a checkpoint's class count must be "
                              f"an integer in 1..{MAX_DIM} matching its classifier (the file was edited?)")
    kwargs = arch.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{where}: the description's model kwargs are a {type(kwargs).__name__}, not an "
                              "object; re-create the checkpoint")
    allowed = ARCH_KWARGS[source_of(arch["name"])]
    for key, value in kwargs.items():
        if key not in allowed:
            raise CheckpointError(f"{where}: the description passes {key!r} to {arch['name']}, which a checkpoint "
                                  f"may not set (allowed: {', '.join(sorted(allowed)) or 'none'})")
        if not allowed[key](value):
            raise CheckpointError(f"{where}: the description's {arch['name']} argument {key}={_short(value)} is "
                                  "out of range or of the wrong type (the file was edited?)")


def check_structure(structure: Any, where: str) -> None:
    """None, or the per-tensor record ``structure_of(model)`` writes (a checkpoint never stores the plan form)."""
    if structure is None:
        return
    bad = f"{where}: the description's pruned-structure record is malformed"
    if not isinstance(structure, dict) or structure.get("format") != STRUCTURE_FORMAT or "plan" in structure:
        raise CheckpointError(f"{bad} (expected format {STRUCTURE_FORMAT!r} as prunekit writes it); re-create it")
    shape = _ints(0, MAX_DIM, 8)
    for table in ("params", "buffers"):
        if not _mapping(structure.get(table, {}), lambda v: v == [] or shape(v)):
            raise CheckpointError(f"{bad}: '{table}' must map tensor names to shapes (lists of sizes)")
    if not _mapping(structure.get("attrs", {}), lambda v: _mapping(v, _attr_value)):
        raise CheckpointError(f"{bad}: 'attrs' must map module names to {{attribute: size}}")
    for attrs in structure.get("attrs", {}).values():
        off = sorted(set(attrs) - set(SHAPE_ATTRS))
        if off:
            raise CheckpointError(f"{bad}: it sets attribute {off[0]!r}, which is not a shape attribute a checkpoint "
                                  f"may set ({', '.join(SHAPE_ATTRS)})")
    identity = structure.get("identity", [])
    if not isinstance(identity, list) or not all(_text(n) and n for n in identity):
        raise CheckpointError(f"{bad}: 'identity' must list module names")


def check_data(data: Any, num_classes: int | None, where: str) -> None:
    """Refuse a data section whose fields have the wrong types or disagree with the class count (when known)."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: the description's data section is a {type(data).__name__}, not an object")
    for key, ok in DATA_FIELDS.items():
        if key in data and not ok(data[key]):
            raise CheckpointError(f"{where}: the description's data {key}={_short(data[key])} is out of range or of "
                                  "the wrong type (the file was edited?)")
    classes = data.get("classes")
    if classes is not None and num_classes is not None and len(classes) != num_classes:
        raise CheckpointError(f"{where}: the description lists {len(classes)} class names but a model of "
                              f"{num_classes} classes; the file was edited, re-create it")


def _attr_value(v: Any, depth: int = 0) -> bool:
    """A shape attribute's value as ``structure_of`` records it: an int (a bool is one too), or a list of at most 64
    such values, nested at most twice (``normalized_shape``, ``kernel_size``-like tuples)."""
    if isinstance(v, bool) or (isinstance(v, int) and -MAX_DIM <= v <= MAX_DIM):
        return True
    return isinstance(v, list) and depth < 2 and len(v) <= 64 and all(_attr_value(x, depth + 1) for x in v)


def _mapping(v: Any, ok: Callable[[Any], bool]) -> bool:
    return isinstance(v, Mapping) and all(_text(k) and ok(x) for k, x in v.items())


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
