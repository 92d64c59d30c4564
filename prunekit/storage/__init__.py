"""Checkpoints without pickle (``checkpoint``), compressed sparse files (``codec``), and what can be saved
(``check_savable``: called before a job's work, so nothing is refused after it)."""
from .savable import check_savable

__all__ = ["check_savable"]
