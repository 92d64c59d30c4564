"""The settings that mattered to a run, and the command that reproduces it.

An options model holds every flag of its command (about 70 for ``prune``); a report that lists them all buries the
few that changed anything (and shows ``ratio 0.5`` beside the ratio a ``--reduce`` target actually chose). Shown are
the identity of the run (model, data, size, seed), every option typed or set away from its default, with values
the run record says were actually used (``used``) in place of the asked ones. All options stay in ``report.json``.

Works on any pydantic options model (duck-typed: this layer does not import ``config``).

Example::

    used = settings_that_mattered(opts, used={"ratio": 0.3034})
    print(command_line("prune", opts))   # prunekit prune --method structured --reduce macs=0.5 ...
"""
from __future__ import annotations

import shlex
from typing import Any, Dict, Optional

ALWAYS = ("model", "checkpoint", "data", "image_size", "seed", "method")
RUN_ONLY = ("out", "json_output", "progress")  # how a run is shown and stored, not what it computes


def _defaults(opts: Any) -> Dict[str, Any]:
    return {k: f.get_default(call_default_factory=True) for k, f in type(opts).model_fields.items()}


def _changed(opts: Any, typed_too: bool = True) -> list:
    """Names of the options away from their defaults (``typed_too``: or typed, or in a recipe, unless typed as
    None), in declaration order."""
    defaults, typed = _defaults(opts), set(opts.model_fields_set) if typed_too else set()
    return [k for k in type(opts).model_fields
            if (k in typed and getattr(opts, k) is not None) or getattr(opts, k) != defaults[k]]


def settings_that_mattered(opts: Any, used: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """``{option: value}`` of :data:`ALWAYS` and the changed options (not :data:`RUN_ONLY`); an option in ``used``
    shows the value the run used (``None`` there: the option played no part, so it is left out)."""
    values = opts.model_dump(mode="json")
    keys = [k for k in values if k in ALWAYS and values[k] is not None] + _changed(opts)
    shown: Dict[str, Any] = {}
    for k in dict.fromkeys(keys):
        if k not in RUN_ONLY:
            shown[k] = values[k]
    for k, v in (used or {}).items():
        if v is None:
            shown.pop(k, None)
        else:
            shown[k] = v
    return shown


def _flag_words(name: str, field: Any, value: Any) -> list:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if extra.get("positional"):
        return [str(value)]
    flag = extra.get("flag", "--" + name.replace("_", "-"))
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    if isinstance(value, list):
        return [flag, *(str(v) for v in value)]
    return [flag, "none" if value is None else str(value)]


def command_line(command: str, opts: Any) -> str:
    """The ``prunekit`` command that gives these options: those away from their defaults as flags (the CLI's flag
    names), ``--out`` included, ``--json``/progress left out."""
    fields = type(opts).model_fields
    values = opts.model_dump(mode="json")
    words = ["prunekit", command]
    for k in _changed(opts, typed_too=False):  # a default typed out adds nothing to the command
        if k not in ("json_output", "progress"):
            words += _flag_words(k, fields[k], values[k])
    return " ".join(shlex.quote(w) for w in words)


def run_settings(command: str, opts: Any, used: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A report's settings items: ``settings`` (those that mattered), ``all_settings`` (every option, for tools)
    and ``reproduce`` (the command line)."""
    return {"settings": settings_that_mattered(opts, used), "all_settings": opts.model_dump(mode="json"),
            "reproduce": [command_line(command, opts)]}
