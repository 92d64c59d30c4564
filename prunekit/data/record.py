"""What a checkpoint remembers of the data it was trained on."""
from __future__ import annotations

from typing import Any, Dict

from .dataset import EMBEDDED, default_data_dir


def data_section(ds) -> Dict[str, Any]:
    """What a checkpoint must remember about its data to be used later: classes, normalization, input size, and
    the split (seed and fractions), so later commands test it on images it was not trained on. ``source`` is the
    folder (``"embedded"`` for the subset shipped with prunekit, which moves with the install): ``eval``, ``prune``
    and ``sensitivity`` on the checkpoint use it when no ``--data`` is given."""
    source = EMBEDDED if ds.root == default_data_dir() else str(ds.root)
    section = {"classes": list(ds.classes), "mean": list(ds.mean), "std": list(ds.std),
               "input_size": int(ds.images.shape[-1]), "source": source}
    if ds.split_seed is not None:  # None: splits made by hand, nothing to record
        section.update(split_seed=int(ds.split_seed), test_frac=float(ds.test_frac), val_frac=float(ds.val_frac))
    return section
