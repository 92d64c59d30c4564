"""prunekit: make neural networks smaller and faster by pruning, and prove it with measurements."""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import PrunekitError  # noqa: E402

__all__ = ["__version__", "PrunekitError", "load", "save", "create_model"]


def __getattr__(name: str):
    # Lazy imports keep `import prunekit` (and the CLI's --help) fast.
    if name in ("load", "save"):
        from .storage import checkpoint

        return getattr(checkpoint, name)
    if name == "create_model":
        from .models import create_model

        return create_model
    raise AttributeError(name)
