"""The process's compute: which device runs it and the seeds that make a run repeat."""
from __future__ import annotations

import random

import numpy as np
import torch

from .errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU. An unavailable device is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for CUDA but none is available; use --device cpu")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so runs repeat."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
