"""Files the library writes: atomically (a killed run never leaves half a file under the final name), and the
folder caches live in. No torch here, so light modules (report, data cache) can use it."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import ConfigError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    A crash mid-write therefore never leaves a half-written checkpoint under the final name.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the final file gets the usual permissions
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_writable(path: str | os.PathLike, flag: str) -> None:
    """Raise ConfigError (one line) unless a file can be written at ``path``: in it when it is an existing folder,
    beside it when it is an existing file (written atomically: a new file renamed over it), else under its nearest
    existing ancestor. Checked when options are parsed, so a read-only output folder is refused before any work, not
    as a PermissionError after it."""
    here = Path(path).expanduser().absolute()
    while here != here.parent and not here.is_dir():
        here = here.parent
    if here.is_dir() and not os.access(here, os.W_OK | os.X_OK):
        reason = "is on a read-only file system" if _read_only_fs(here) else "is not writable by this user"
        raise ConfigError(f"{flag} {path}: folder {here} {reason}; give a folder you can write to")


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): say "not writable"
        return False


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where caches live: ``cache_dir``, else ``$PRUNEKIT_CACHE``, else ``~/.cache/prunekit``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("PRUNEKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prunekit"
