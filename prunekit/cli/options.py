"""CLI flags and YAML recipes parse into the same validated pydantic model.

Each command declares one options model; :func:`add_options` turns its fields into ``--flags`` (help text from the
field description), and :func:`parse_options` merges ``--config recipe.yaml`` with the flags actually typed (flags
win) and validates the result, so a recipe and a command line can never mean different things.
"""
from __future__ import annotations

import argparse
import typing
from pathlib import Path
from typing import Any, Dict, Type, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ..config import load_yaml
from ..errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation: Any) -> Any:
    """Strip Optional[...] to the inner type."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        return args[0]
    return annotation


def _none_or(conv):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "off") else conv(text)

    parse.__name__ = getattr(conv, "__name__", "value")
    return parse


def _declared_in(model: Type[BaseModel], name: str) -> type:
    """The class of ``model``'s hierarchy whose own body declares field ``name`` (the most derived one); ``model``
    itself for a shared field marked ``cli_main`` (e.g. ``--schedule``: a main choice, not a detail of its class)."""
    extra = model.model_fields[name].json_schema_extra
    if isinstance(extra, dict) and extra.get("cli_main"):
        return model
    for cls in model.__mro__:
        if name in cls.__dict__.get("__annotations__", {}):
            return cls
    return model


def _group_title(cls: type) -> str:
    """A shared options class's ``cli_group``, else the first line of its docstring."""
    return getattr(cls, "cli_group", None) or (cls.__doc__ or cls.__name__).strip().splitlines()[0]


def add_options(parser: argparse.ArgumentParser, model: Type[BaseModel]) -> None:
    """One ``--flag`` per field; defaults are suppressed so only typed flags reach :func:`parse_options`.

    The command's own fields come first; fields it shares with other commands (run, data, schedule, ...) are listed
    under one heading per options class, so a 60-flag ``--help`` reads by topic."""
    groups: Dict[type, Any] = {}
    fields = sorted(model.model_fields.items(), key=lambda kv: _declared_in(model, kv[0]) is not model)
    for name, field in fields:
        cls = _declared_in(model, name)
        if cls is model:
            target: Any = parser
        else:
            target = groups.get(cls) or groups.setdefault(cls, parser.add_argument_group(_group_title(cls)))
        _add_field(target, name, field)
    for old in getattr(model, "renamed", {}):  # hidden: typed, the model refuses it naming the new flag
        parser.add_argument(_flag(old), dest=old, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, default=None, help="YAML recipe with the same keys as these flags")


def _add_field(parser: Any, name: str, field: Any) -> None:
    """``field`` as a flag (or a positional) of ``parser`` or of one of its argument groups."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if extra.get("positional"):
        parser.add_argument(name, nargs="?", default=argparse.SUPPRESS, help=field.description)
        return
    flag = extra.get("flag", _flag(name))
    kind = _base_type(field.annotation)
    help_text = _help(field)
    optional = kind is not field.annotation
    if kind is bool:
        parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                            help=help_text)
    elif typing.get_origin(kind) is typing.Literal:
        choices = [str(c) for c in typing.get_args(kind)]
        old = list(extra.get("renamed_values", {}))  # accepted here so the model can name the new value
        parser.add_argument(flag, dest=name, choices=choices + old, metavar="{" + ",".join(choices) + "}",
                            default=argparse.SUPPRESS, help=help_text)
    elif typing.get_origin(kind) in (list, typing.List):
        parser.add_argument(flag, dest=name, nargs="*", default=argparse.SUPPRESS, help=help_text)
    else:
        conv = kind if kind in (int, float) else str
        parser.add_argument(flag, dest=name, type=_none_or(conv) if optional else conv,
                            default=argparse.SUPPRESS, help=help_text)
    for alias, const in extra.get("consts", {}).items():
        parser.add_argument(alias, dest=name, action="store_const", const=const, default=argparse.SUPPRESS,
                            help=f"same as {_flag(name)} {const}")


def _help(field: Any) -> str:
    """The field's description with its one default: appended unless the description already says it."""
    text = field.description or ""
    if "default" in text:
        return text
    default = field.default if field.default is not None else "none"
    if isinstance(default, list):
        default = " ".join(map(str, default)) or "none"
    return f"{text} (default: {default})".strip()


def read_recipe(path: Path) -> Dict[str, Any]:
    """The mapping in a YAML recipe (``--config``); a missing file, a folder or malformed YAML is a ConfigError."""
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"recipe {str(path)!r} {state}; pass the path of a YAML file to --config")
    try:
        data = load_yaml(path) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"recipe {path} is not valid YAML{where}; fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of option: value, not a {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def validate(model: Type[M], values: Dict[str, Any], source: str = "options") -> M:
    """``values`` as the options model, its first validation error turned into one line naming the flag."""
    try:
        return model(**values)
    except ValidationError as e:
        err = e.errors()[0]
        loc = _flag(".".join(str(p) for p in err["loc"])) if err["loc"] else "options"
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"unknown option {loc.lstrip('-')!r} in {source}; see --help for the valid ones") from None
        if err["type"] == "value_error":  # our own validators already name the value and the fix
            raise ConfigError(err["msg"].removeprefix("Value error, ")) from None
        raise ConfigError(f"{loc}: {err['msg']} (got {err.get('input')!r})") from None


def parse_options(model: Type[M], ns: argparse.Namespace) -> M:
    """Recipe values first, then the flags typed on the command line on top."""
    known = set(model.model_fields) | set(getattr(model, "renamed", {}))
    typed = {k: v for k, v in vars(ns).items() if k in known}
    recipe = read_recipe(ns.config) if getattr(ns, "config", None) else {}
    return validate(model, {**recipe, **typed}, source=str(ns.config) if recipe else "options")


def recipe_of(opts: BaseModel) -> Dict[str, Any]:
    """The options as a JSON/YAML-able recipe, stored beside every result."""
    return opts.model_dump(mode="json")
