"""On-disk cache of decoded images: one safetensors file per (folder content, image size), written atomically.

Decoding thousands of JPEGs on two cores takes many seconds; reading the decoded uint8 tensor back takes a fraction of
one. The file name carries the folder fingerprint (paths + sizes + mtimes) and the size, so a changed folder never
reads an old cache; a file that fails to read or validate is rebuilt, never trusted.

    path = cache_file(scan, 64, cache_dir=None)     # $PRUNEKIT_CACHE or ~/.cache/prunekit, under data/
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..files import atomic_path, cache_root
from .folder import FolderScan

FORMAT = "prunekit-decoded-images"
VERSION = 1  # bump when decoding changes (resampling filter, colour handling) so old caches are not reused

log = logging.getLogger("prunekit.data")

Cached = Tuple[torch.Tensor, torch.Tensor, Dict[int, str]]  # images uint8 [n_ok,3,S,S], ok bool [n_files], errors


def cache_file(scan: FolderScan, image_size: int, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache path for this folder content at this size (folder name kept in it so people can tell files apart)."""
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", scan.root.name)[:40] or "data"
    return cache_root(cache_dir) / "data" / f"{label}-{image_size}px-v{VERSION}-{scan.fingerprint[:24]}.safetensors"


def _meta(scan: FolderScan, image_size: int) -> Dict[str, str]:
    return {"format": FORMAT, "version": str(VERSION), "fingerprint": scan.fingerprint,
            "image_size": str(image_size), "num_files": str(len(scan.files))}


def read_cache(path: Path, scan: FolderScan, image_size: int) -> Optional[Cached]:
    """Return the cached decode, or ``None`` when absent, stale or unreadable (logged, then rebuilt by the caller)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            want = _meta(scan, image_size)
            if any(meta.get(k) != v for k, v in want.items()):
                raise ValueError("it was written for other files or another size")
            images, ok = f.get_tensor("images"), f.get_tensor("ok")
        errors = {int(k): str(v) for k, v in json.loads(meta.get("errors", "{}")).items()}
        n_ok = int(ok.sum())
        if images.dtype != torch.uint8 or tuple(images.shape) != (n_ok, 3, image_size, image_size):
            raise ValueError(f"images have shape {tuple(images.shape)} {images.dtype}")
        if ok.dtype != torch.bool or ok.shape != (len(scan.files),) or set(errors) != set(
                torch.nonzero(~ok).flatten().tolist()):
            raise ValueError("its per-file flags do not match the folder")
    except Exception as exc:  # any failure to read or validate means: decode again
        log.warning("cache %s is stale or corrupt (%s); decoding the images again", path, exc)
        return None
    return images, ok, errors


def write_cache(path: Path, cached: Cached, scan: FolderScan, image_size: int) -> bool:
    """Write atomically; an unwritable cache folder is a warning (the run goes on, just without a cache)."""
    images, ok, errors = cached
    meta = dict(_meta(scan, image_size), errors=json.dumps({str(k): v for k, v in errors.items()}))
    try:
        with atomic_path(path) as tmp:
            save_file({"images": images.contiguous(), "ok": ok.contiguous()}, str(tmp), metadata=meta)
            os.chmod(tmp, 0o644)  # the temporary file is private (0600); a cache is shareable like any other file
    except OSError as exc:
        log.warning("could not write the image cache %s (%s); set PRUNEKIT_CACHE to a writable folder", path, exc)
        return False
    return True
