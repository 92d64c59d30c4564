"""Decode image files into square uint8 arrays, in parallel when there are many.

The default pool is threads: Pillow releases the GIL while it decodes and resizes, so threads scale like processes
here (measured in docs/data.md) without their costs: no re-import of the caller's ``__main__`` (scripts need no
``if __name__ == "__main__"`` guard), no fork of a process that holds CUDA or OpenMP threads, no copy of results
between processes. ``pool="process"`` (forkserver) remains for codecs that hold the GIL. This module imports no torch,
so process workers start fast.

    images, errors = decode_files(["a.jpg", "b.png"], size=64)   # images: uint8 [n_ok, 3, 64, 64]
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..errors import ConfigError

POOL_THRESHOLD = 256  # fewer files than this decode in-process: a pool's start-up would cost more than it saves
_CHUNK = 64


def decode_image(path: str, size: int) -> np.ndarray:
    """One image -> uint8 [3, size, size]: RGB, antialiased resize (non-square images are squashed, not cropped)."""
    with Image.open(path) as img:
        img.draft("RGB", (size, size))  # JPEG: let libjpeg decode at a reduced scale that is still >= size
        img.load()  # force a full decode so truncated files fail here, not later
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit/float rasters: stretch to 8 bit
            arr = np.asarray(img, dtype=np.float64)
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
            img = Image.fromarray(arr.round().astype(np.uint8), mode="L")
        rgb = img.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)
        return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))


def _decode_chunk(paths: Sequence[str], size: int) -> Tuple[np.ndarray, List[bool], Dict[int, str]]:
    """Decode ``paths``; return the good images stacked, an ok flag per path and the reason for each failure."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    ok: List[bool] = []
    errors: Dict[int, str] = {}
    n_ok = 0
    for i, path in enumerate(paths):
        try:
            out[n_ok] = decode_image(path, size)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            ok.append(False)
            errors[i] = _reason(path, exc)
            continue
        ok.append(True)
        n_ok += 1
    return out[:n_ok], ok, errors


def _reason(path: str, exc: BaseException) -> str:
    """Why ``path`` did not decode, in one short line; a broken symlink says so and where it points."""
    if os.path.islink(path) and not os.path.exists(path):
        return f"broken symlink to {os.readlink(path)}"[:200]
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


def default_workers() -> int:
    """CPUs this process may run on (respects taskset/cgroup affinity where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _executor(pool: str, workers: int) -> Executor:
    if pool == "thread":
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prunekit-decode")
    if pool == "process":
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))
    raise ConfigError(f"pool={pool!r} must be 'thread' or 'process'")


def decode_files(paths: Sequence[str], size: int, workers: Optional[int] = None, pool: str = "thread",
                 ) -> Tuple[np.ndarray, np.ndarray, Dict[int, str]]:
    """Decode every path to uint8 [3, size, size] with ``workers`` (default: all usable CPUs) threads or processes.

    Returns ``(images, ok, errors)``: ``images`` stacks the decodable files in order ([n_ok, 3, size, size]),
    ``ok`` is a bool array with one flag per path, ``errors`` maps the index of each bad path to a one-line reason.
    """
    workers = default_workers() if workers is None else max(1, int(workers))
    chunks = [list(paths[i:i + _CHUNK]) for i in range(0, len(paths), _CHUNK)]
    images = np.empty((len(paths), 3, size, size), dtype=np.uint8)  # filled as chunks arrive: one copy in memory
    ok = np.zeros(len(paths), dtype=bool)
    errors: Dict[int, str] = {}
    filled = 0

    def take(start: int, result: Tuple[np.ndarray, List[bool], Dict[int, str]]) -> None:
        nonlocal filled
        chunk_images, chunk_ok, chunk_errors = result
        images[filled:filled + len(chunk_images)] = chunk_images
        filled += len(chunk_images)
        ok[start:start + len(chunk_ok)] = chunk_ok
        errors.update({start + i: reason for i, reason in chunk_errors.items()})

    if workers == 1 or len(paths) < POOL_THRESHOLD:
        for c, chunk in enumerate(chunks):
            take(c * _CHUNK, _decode_chunk(chunk, size))
    else:
        with _executor(pool, workers) as ex:
            for c, result in enumerate(ex.map(_decode_chunk, chunks, [size] * len(chunks))):
                take(c * _CHUNK, result)
    return images[:filled], ok, errors
