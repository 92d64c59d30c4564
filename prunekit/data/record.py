"""What a checkpoint remembers of the data it was trained on."""
from __future__ import annotations

from typing import Any, Dict


def data_section(ds) -> Dict[str, Any]:
    """What a checkpoint must remember about its data to be used later: classes, normalization, input size, and
    the split (seed and fractions), so later commands test it on images it was not trained on."""
    section = {"classes": list(ds.classes), "mean": list(ds.mean), "std": list(ds.std),
               "input_size": int(ds.images.shape[-1]), "source": str(ds.root)}
    if ds.split_seed is not None:  # None: splits made by hand, nothing to record
        section.update(split_seed=int(ds.split_seed), test_frac=float(ds.test_frac), val_frac=float(ds.val_frac))
    return section
