"""Typed errors. Library code raises these; the CLI turns them into one line on stderr and exit code 2.

A ``PrunekitError`` is a *user* mistake (bad path, bad value, wrong checkpoint): its message must name what is
wrong and how to fix it. Anything else escaping is a bug and keeps its traceback.
"""
from __future__ import annotations


class PrunekitError(Exception):
    """Base class for errors caused by user input; the message is shown as-is."""


class ConfigError(PrunekitError, ValueError):
    """A flag, recipe field or argument has a bad value."""


class DataError(PrunekitError):
    """A dataset folder is missing, empty, or holds unreadable images."""


class ModelError(PrunekitError):
    """Unknown model name, or weights that do not fit the model."""


class CheckpointError(PrunekitError):
    """A checkpoint file is missing, truncated, corrupted or of another architecture."""


class UnsupportedOpError(PrunekitError):
    """The pruning engine met an operation it cannot handle; the message names the module and suggests ignoring it."""


class NothingPrunedError(PrunekitError):
    """A structured plan asked to remove channels but none could go; the message says why (groups left whole)."""


class PruningWarning(UserWarning):
    """Pruning did less than asked, or otherwise than asked (groups left whole, heads removed whole); the CLI prints
    it as one line on stderr."""
