"""``prunekit size``: how small a (sparse) checkpoint really gets on disk."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from ..config import SizeOptions
from ..storage.size import size_report


def size_job(opts: SizeOptions) -> Dict[str, Any]:
    """Dense size, compressed size and the lossless entropy bound of a checkpoint's weights."""
    rep = size_report(opts.checkpoint, values=opts.values)
    return {"checkpoint": opts.checkpoint, "file_bytes": Path(opts.checkpoint).stat().st_size, **rep.as_dict(),
            "text": str(rep)}
