"""Latency measurements kept per device and architecture, so a latency-aware prune times a model only once.

Timing every prunable group of a network (``prunekit.allocate.latency``) takes tens of seconds; its results depend only
on the device, the runtime that executes the model and the layer shapes, not on the weights. So they are stored
in one small JSON file per (device, runtime, architecture, input shape) and reused: re-pruning another checkpoint
of the same architecture, another criterion or the same target again costs a lookup instead of a timing run
(the NetAdapt idea of a per-device lookup table, kept at the granularity the allocation measures).

The device part of the key names the CPU model, logical cores, torch threads and torch version (and for CUDA the GPU
model, driver, CUDA and cuDNN versions); the architecture part hashes the module tree's ``repr`` (every layer with
its shapes) and the class name.
A file is written atomically; a damaged or foreign file is ignored and rewritten, never trusted.

    cache = LatencyCache.resolve("auto")          # $PRUNEKIT_CACHE/latency or ~/.cache/prunekit/latency
    entry = cache.load(key)                       # {} on a miss
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from ..files import atomic_path, cache_root
from .state import InputLike, input_spec

FORMAT = 1
log = logging.getLogger(__name__)


def cpu_name() -> str:
    """The CPU model as the OS reports it (``/proc/cpuinfo`` on Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_fingerprint(device: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """What a latency number depends on besides the model: processor, parallelism, library versions."""
    device = torch.device(device)
    out: Dict[str, Any] = {"device": device.type, "cpu": cpu_name(), "cores": os.cpu_count(),
                           "threads": torch.get_num_threads(), "torch": torch.__version__}
    if device.type == "cuda":
        out.update(gpu_fingerprint(device))
    return out


def gpu_fingerprint(device: torch.device) -> Dict[str, Any]:
    """The GPU model, its driver, and the CUDA / cuDNN versions torch runs: each changes which kernels run."""
    return {"gpu": torch.cuda.get_device_name(device), "driver": gpu_driver(), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version()}


def gpu_driver() -> str:
    """The NVIDIA driver version (NVML, else nvidia-smi), ``"unknown"`` where neither answers."""
    try:
        import pynvml  # ships with torch's CUDA wheels as nvidia-ml-py

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # noqa: BLE001 - no NVML: fall back to the command line tool
        pass
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=True)
        return done.stdout.splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def arch_fingerprint(model: nn.Module, input_shape: InputLike) -> str:
    """Hash of the layer structure and input (an image shape or an InputSpec): two checkpoints of one architecture
    share it. One float32 input hashes as its shape alone, as entries written before InputSpec did."""
    spec = input_spec(input_shape)
    inputs = tuple(spec.shapes[0]) if spec.dtypes == ("float32",) else spec.to_dict()
    text = f"{type(model).__module__}.{type(model).__qualname__}\n{inputs}\n{model!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class LatencyCache:
    """A folder of JSON entries, one per key (a dict of the settings that determine the measurement)."""

    def __init__(self, folder: Union[str, Path]):
        self.folder = Path(folder).expanduser()

    @classmethod
    def resolve(cls, where: Optional[Union[str, Path, "LatencyCache"]]) -> Optional["LatencyCache"]:
        """``None``/``"none"``: no cache; ``"auto"``: the default folder; anything else: that folder."""
        if where is None or isinstance(where, LatencyCache):
            return where
        if str(where).lower() in ("none", "off", ""):
            return None
        if str(where) == "auto":
            return cls(cache_root() / "latency")
        return cls(where)

    @staticmethod
    def canonical(key: Dict[str, Any]) -> str:
        """The key as sorted JSON (non-JSON values as text): what is hashed into the file name and stored in it."""
        return json.dumps(key, sort_keys=True, default=str)

    @classmethod
    def digest(cls, key: Dict[str, Any]) -> str:
        """Short sha256 of the canonical key: the entry's file name stem."""
        return hashlib.sha256(cls.canonical(key).encode()).hexdigest()[:24]

    def path(self, key: Dict[str, Any]) -> Path:
        """The JSON file that holds (or will hold) the entry for ``key``."""
        return self.folder / f"{self.digest(key)}.json"

    def load(self, key: Dict[str, Any]) -> Dict[str, Any]:
        """The stored entry for ``key``, or ``{}`` when absent, unreadable or stored under another key."""
        try:
            entry = json.loads(self.path(key).read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(entry, dict) or entry.get("format") != FORMAT or \
                json.dumps(entry.get("key"), sort_keys=True) != self.canonical(key):
            return {}
        return entry

    def store(self, key: Dict[str, Any], entry: Dict[str, Any]) -> Optional[Path]:
        """Write ``entry`` under ``key`` atomically (a crash leaves the old file or none, never half of one).

        A folder that cannot be written (read-only home, full disk) is not an error: the measurement was made and
        is used; it is only measured again next time. Returns the path, or None when nothing could be written."""
        path = self.path(key)
        body = {**entry, "format": FORMAT, "key": json.loads(self.canonical(key))}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(body, indent=1, sort_keys=True))
        except OSError as exc:
            log.warning("could not write the latency cache %s (%s); set PRUNEKIT_CACHE to a writable folder",
                        path, exc)
            return None
        return path
