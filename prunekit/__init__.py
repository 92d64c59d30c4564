"""prunekit: make neural networks smaller and faster by pruning, and prove it with measurements.

    import prunekit
    small = prunekit.prune(model, x, criterion="fpgm", reduce="macs=2x")   # structured: a smaller dense model
    print(prunekit.plan_preview(model, x, reduce="macs=2x")["macs"])        # the same plan, shown, nothing pruned
    masks = prunekit.sparsify(model, ratio=0.9, scope="global")             # unstructured: masks
    prunekit.save(small, "small.safetensors"); prunekit.load("small.safetensors")
"""
from __future__ import annotations

__version__ = "0.1.0"

from importlib import import_module  # noqa: E402
from typing import Any  # noqa: E402

from .errors import PrunekitError  # noqa: E402

# name -> module: loaded on first use, so `import prunekit` (and the CLI's --help) stays fast and the pipeline's
# layers can import the package root without pulling in the front door above them.
_WHERE = {"prune": "api", "plan_preview": "api", "sparsify": "api", "compare": "api", "load": "storage.checkpoint",
          "save": "storage.checkpoint", "create_model": "models"}
__all__ = ["__version__", "PrunekitError", *_WHERE]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
