"""Deterministic stratified train/val/test splits.

Per class, ``test_frac`` of the images go to test (UC Merced protocol: 80/20) and ``val_frac`` of the remaining train
part go to val, which is what pruning decisions and early stopping look at, so test never chooses anything. Each class
is shuffled by a generator seeded from (seed, class name): the split depends only on the sorted file list and the
seed, never on the cache, and adding a class leaves the other classes' splits unchanged.

    splits = stratified_split(labels, classes, seed=0, test_frac=0.2, val_frac=0.1)   # {"train","val","test"}
"""
from __future__ import annotations

import hashlib
import math
from typing import Dict, Optional, Sequence

import torch

from ..errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


def check_fractions(test_frac: float, val_frac: float) -> None:
    """Reject fractions that cannot make a split, naming the value and the allowed range."""
    if not isinstance(test_frac, (int, float)) or not 0.0 < float(test_frac) < 1.0:
        raise ConfigError(f"test_frac={test_frac!r} must be a number strictly between 0 and 1 (e.g. 0.2)")
    if not isinstance(val_frac, (int, float)) or not 0.0 <= float(val_frac) < 1.0:
        raise ConfigError(f"val_frac={val_frac!r} must be a number in [0, 1) (0 disables the val split)")


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))  # round half up: 0.5 -> 1 (Python's round() would give 0)


def split_counts(n: int, test_frac: float, val_frac: float) -> Dict[str, int]:
    """How many of a class's ``n`` images go to each split (at least one in test, and in val when val_frac > 0)."""
    n_test = max(1, _round(n * test_frac))
    n_val = max(1, _round((n - n_test) * val_frac)) if val_frac > 0 else 0
    return {"train": n - n_test - n_val, "val": n_val, "test": n_test}


def class_seed(seed: int, class_name: str) -> int:
    """A 63-bit generator seed from (seed, class name), stable across Python runs (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{class_name}".encode()).digest()[:8], "little") >> 1


def stratified_split(labels: Sequence[int] | torch.Tensor, classes: Sequence[str], seed: int = 0,
                     test_frac: float = 0.2, val_frac: float = 0.1,
                     class_dirs: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
    """Indices (sorted int64) into ``labels`` for "train", "val" and "test".

    ``class_dirs`` (one per class) only improves the error for a class too small to fill every split.
    """
    check_fractions(test_frac, val_frac)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    parts: Dict[str, list] = {name: [] for name in SPLITS}
    for label, name in enumerate(classes):
        members = torch.nonzero(labels == label).flatten()
        counts = split_counts(len(members), test_frac, val_frac)
        if counts["train"] < 1:
            need = 3 if val_frac > 0 else 2
            where = class_dirs[label] if class_dirs is not None else repr(name)
            raise DataError(f"class {where} has {len(members)} usable image(s), too few to put one in each of "
                            f"{need} splits (test_frac={test_frac}, val_frac={val_frac}); add images"
                            + (" or set val_frac=0" if val_frac > 0 else ""))
        gen = torch.Generator().manual_seed(class_seed(seed, name))
        shuffled = members[torch.randperm(len(members), generator=gen)]
        n_test, n_val = counts["test"], counts["val"]
        parts["test"].append(shuffled[:n_test])
        parts["val"].append(shuffled[n_test:n_test + n_val])
        parts["train"].append(shuffled[n_test + n_val:])
    return {name: torch.sort(torch.cat(chunks))[0] if chunks else torch.empty(0, dtype=torch.int64)
            for name, chunks in parts.items()}
