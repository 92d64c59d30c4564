"""What every job shares: the data a run uses (and what a checkpoint remembers of it), and atomic JSON output."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..config import DataOptions
from ..data import EMBEDDED, is_embedded, load_dataset
from ..errors import ConfigError, DataError
from ..files import atomic_path
from ..measure import InputSpec
from ..measure.state import parse_input_size
from ..models import create_model
from ..storage import checkpoint as ckpt

IMAGENET_CLASSES = 1000  # what torchvision/timm constructors build by default; the saved structure resizes it


def load_data(opts: DataOptions, seed: int, image_size: Optional[int] = None,
              fractions: Optional[Tuple[float, float]] = None, root: Optional[str] = None):
    """The dataset (``root``, default ``--data``) split by ``seed`` and ``fractions`` (test, val; default the
    options')."""
    test_frac, val_frac = fractions or (opts.test_frac, opts.val_frac)
    return load_dataset(root or opts.data, image_size=image_size or opts.image_size, seed=seed, test_frac=test_frac,
                        val_frac=val_frac, on_bad_image=opts.on_bad_image)


def checkpoint_data_root(opts: DataOptions, desc: Dict[str, Any], path: Any) -> str:
    """The folder a trained checkpoint is used with: ``--data`` when given (``embedded``: the subset shipped with
    prunekit), else the folder the checkpoint records, when it still exists; otherwise one line naming the recorded
    folder. Never the embedded subset unless asked for or recorded."""
    if opts.data is not None:
        return opts.data
    source = (desc.get("data") or {}).get("source")
    if not source:
        raise DataError(f"checkpoint {path} records no data folder; pass --data FOLDER (or --data {EMBEDDED} for the "
                        "subset shipped with prunekit)")
    if is_embedded(source):
        return EMBEDDED
    if not Path(source).is_dir():
        raise DataError(f"checkpoint {path} was trained on {source}, which does not exist here; pass --data with "
                        "that dataset's folder")
    return source


def checkpoint_split(opts: DataOptions, desc: Dict[str, Any], path: Any) -> Tuple[int, Tuple[float, float]]:
    """``(split seed, (test_frac, val_frac))`` to load the data for a trained checkpoint with: the split it recorded,
    whatever ``opts.seed`` is (``--seed`` then only sets init, batch order and fine-tuning), so its test split holds
    no image it was trained on.

    A fraction given explicitly (``--test-frac``/``--val-frac`` typed or in a recipe, i.e. in the options'
    ``model_fields_set``) that differs from the recorded one is refused with one line; an unset one takes the
    checkpoint's value.
    """
    data = desc.get("data") or {}
    if "split_seed" not in data:
        # Written before checkpoints recorded their split: nothing to reuse, so split from --seed as before.
        return opts.seed, (opts.test_frac, opts.val_frac)
    recorded = (float(data["test_frac"]), float(data["val_frac"]))
    for name, value in zip(("test_frac", "val_frac"), recorded):
        asked = getattr(opts, name)
        if name in opts.model_fields_set and not math.isclose(asked, value):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"checkpoint {path} was split with {flag} {value:g}, but {flag} {asked:g} was given; "
                              f"drop {flag} (the checkpoint's split is reused so its test images stay unseen)")
    return int(data["split_seed"]), recorded


def load_given(opts: Any, device: Any = "cpu") -> ckpt.Checkpoint:
    """``opts.checkpoint`` loaded; with ``--model NAME`` into a fresh ``create_model(NAME)`` (a checkpoint saved from a
    model prunekit does not build by name needs one; the saved structure gives it the pruned shapes)."""
    if not getattr(opts, "model", None):
        return ckpt.load_checkpoint(opts.checkpoint, device)
    classes = (ckpt.read_description(opts.checkpoint).get("data") or {}).get("classes")
    instance = create_model(opts.model, len(classes) if classes else IMAGENET_CLASSES)
    return ckpt.load_checkpoint(opts.checkpoint, device, model=instance)


def model_input(opts: Any, desc: Dict[str, Any]) -> InputSpec:
    """The input a checkpoint's model is measured / exported at: ``--input-size`` when given (in the recorded
    dtypes), else the one the checkpoint records (``recorded_input``)."""
    recorded = ckpt.recorded_input(desc)
    return parse_input_size(opts.input_size, recorded) if getattr(opts, "input_size", None) else recorded


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON, written atomically (a killed run never leaves half a file)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str))


def _check_classes(model_desc: Dict[str, Any], ds, path: str) -> None:
    classes = (model_desc.get("data") or {}).get("classes")
    if classes is not None and list(classes) != list(ds.classes):
        raise ConfigError(f"checkpoint {path} was trained on classes {classes[:3]}... but the dataset has "
                          f"{list(ds.classes)[:3]}...; evaluate it on the dataset it was trained on")


def data_for_checkpoint(opts: Any, loaded: Any, path: Any):
    """The dataset a trained checkpoint is used with: its folder (:func:`checkpoint_data_root`), at its input size,
    normalization and split (:func:`checkpoint_split`, so its test images stay unseen whatever ``--seed``), refused
    with one line when its classes differ."""
    size = (loaded.description.get("data") or {}).get("input_size", opts.image_size)
    root = checkpoint_data_root(opts, loaded.description, path)
    seed, fractions = checkpoint_split(opts, loaded.description, path)
    ds = load_data(opts, seed, image_size=size, fractions=fractions, root=root)
    _check_classes(loaded.description, ds, path)
    _use_checkpoint_normalization(ds, loaded.description)
    return ds


def checkpoint_with_data(opts: Any, device: Any) -> Tuple[Any, Any]:
    """``(loaded checkpoint, dataset)`` for a command that works on a trained checkpoint
    (:func:`data_for_checkpoint`)."""
    loaded = ckpt.load_checkpoint(opts.checkpoint, device)
    return loaded, data_for_checkpoint(opts, loaded, opts.checkpoint)


def _use_checkpoint_normalization(ds, desc: Dict[str, Any]) -> None:
    data = desc.get("data") or {}
    if data.get("mean") and data.get("std"):
        ds.mean, ds.std = tuple(data["mean"]), tuple(data["std"])


def brief(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """The headline of an evaluation (accuracy, loss, count) for a checkpoint's description."""
    return {k: metrics[k] for k in ("accuracy", "loss", "samples") if k in metrics}
