"""``prunekit`` command line: parse, call the library, print. User mistakes end in one line and exit code 2."""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Collection, Dict, List, Optional

from .. import __version__
from ..errors import PruningWarning, PrunekitError
from . import commands

PROG = "prunekit"
MAX_MESSAGE = 400  # an error line echoes user input (a recipe value, a path): never more than this many characters
# The OS refusing a write (read-only or full disk, no permission) is the user's setup, not a bug: one line, exit 2.
_WRITE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def build_parser(with_options: Optional[Collection[str]] = None) -> argparse.ArgumentParser:
    """One subcommand per entry of the command table, its flags generated from the command's options model.

    ``with_options``: the commands whose flags are added (None: all). The options models import the library (and
    torch), so ``main`` adds only the flags of the command typed: ``prunekit --help`` imports neither."""
    parser = argparse.ArgumentParser(prog=PROG, description="Make neural networks smaller and faster by pruning, "
                                     "and prove it with measurements.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in commands.COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        if with_options is None or cmd.name in with_options:
            from .options import add_options  # pydantic and the models: only for a command being parsed
            add_options(p, cmd.options)
        p.set_defaults(_cmd=cmd)
    return parser


HELP_WIDTH = 100  # --help is rendered at this width, so the stored text (help.json) is the same everywhere


def render_help(command: str) -> str:
    """``prunekit <command> --help`` as the options models render it now (imports them, and torch)."""
    os.environ["COLUMNS"] = str(HELP_WIDTH + 2)  # argparse wraps at COLUMNS - 2
    parser = build_parser(with_options=[command])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    return sub.choices[command].format_help()


def _stored_help(argv: List[str]) -> Optional[str]:
    """The stored --help of the command typed, when help is what was asked: printed without importing torch."""
    if not ({"-h", "--help"} & set(argv)):
        return None
    return stored_help().get(_typed_command(argv)[0])


def stored_help() -> Dict[str, str]:
    """Each command's --help as scripts/gen_help.py rendered it from the options models (tests check it is current)."""
    return json.loads((Path(__file__).with_name("help.json")).read_text(encoding="utf-8"))


def _typed_command(argv: List[str]) -> List[str]:
    """The command typed (argv's first word that is not a flag): the one whose flags the parser needs."""
    return [next((a for a in argv if not a.startswith("-")), "")]


def main(argv: Optional[List[str]] = None) -> int:
    """Parse, run the job, print; a library error (bad input) is one line on stderr and exit code 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    stored = _stored_help(argv)
    if stored is not None:
        print(stored, end="")
        raise SystemExit(0)  # as argparse ends a --help (the top-level one too)
    parser = build_parser(with_options=_typed_command(argv))
    ns = parser.parse_args(argv)  # argparse itself exits 2 with a usage line on bad flags
    cmd = getattr(ns, "_cmd", None)
    if cmd is None:
        parser.print_help()
        return 2
    _warnings_as_lines(cmd.name)
    try:
        from .options import parse_options
        opts = parse_options(cmd.options, ns)
        result = cmd.job(opts)
    except PrunekitError as e:
        print(f"{PROG} {cmd.name}: error: {_short(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS:
            raise
        print(f"{PROG} {cmd.name}: error: {e.strerror}: {e.filename or 'an output file'}; give a folder you can "
              "write to (--out, --onnx) or free some space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {cmd.name}: interrupted; run the same command again to resume from the last finished epoch",
              file=sys.stderr)
        return 130
    if result is not None:
        try:
            emit(result, json_output=getattr(opts, "json_output", False), render=cmd.render)
            sys.stdout.flush()
        except BrokenPipeError:  # the reader (e.g. `| head`) left early: the job is done, say nothing more
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 30] + f" ... ({len(text):,} characters)"


def _warnings_as_lines(command: str) -> None:
    """A library warning (pruning did less than asked, a plan not verified) is one line on stderr, not a
    file:line report."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001  (warnings' signature)
        if issubclass(category, PruningWarning):
            print(f"{PROG} {command}: warning: {message}", file=sys.stderr)
        else:  # other libraries' warnings keep their own form: they are not prunekit's to word
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    _LOG_LINES.setFormatter(logging.Formatter(f"{PROG} {command}: warning: %(message)s"))
    library = logging.getLogger("prunekit")
    if _LOG_LINES not in library.handlers:
        library.addHandler(_LOG_LINES)


# The library's log warnings (a folder read from a nested level, images skipped) as one prefixed line each, instead of
# Python's bare last-resort output; info and debug stay quiet unless the user configures logging.
class _StderrLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)  # the current stderr (a test's capture too), not the one at import


_LOG_LINES = _StderrLines(logging.WARNING)


def emit(result: Dict[str, Any], json_output: bool, render: Callable[[Dict[str, Any]], str]) -> None:
    """Print a job's result: one JSON object (``--json``, for scripts) or the command's human rendering."""
    if json_output:
        print(json.dumps(result, default=str))
    else:
        print(render(result))


if __name__ == "__main__":
    sys.exit(main())
