"""Scene-classification data: ImageFolder-layout folders -> decoded, cached uint8 tensors -> splits -> loaders.

    from prunekit.data import load_dataset, make_loader
    ds = load_dataset()                                     # embedded UC Merced subset, 21 classes
    for x, y in make_loader(ds, "train", batch_size=64, seed=0, epoch=0):
        ...

Names are imported on first use, so decode worker processes (which import only ``prunekit.data.decode``) and
``import prunekit`` stay light.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .augment import Augment, apply_augment, draw_params
    from .dataset import EMBEDDED, SceneDataset, channel_stats, default_data_dir, is_embedded, load_dataset
    from .folder import IMAGE_EXTENSIONS, FolderScan, scan_folder
    from .loader import SceneLoader, calibration_batches, make_loader
    from .record import data_section
    from .splits import stratified_split

_WHERE = {
    "SceneDataset": "dataset", "load_dataset": "dataset", "default_data_dir": "dataset", "channel_stats": "dataset",
    "EMBEDDED": "dataset", "is_embedded": "dataset",
    "make_loader": "loader", "SceneLoader": "loader", "calibration_batches": "loader",
    "Augment": "augment", "apply_augment": "augment", "draw_params": "augment",
    "scan_folder": "folder", "FolderScan": "folder", "IMAGE_EXTENSIONS": "folder",
    "stratified_split": "splits", "data_section": "record",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
