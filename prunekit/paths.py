"""Output paths the user names: checked when the options are parsed, so a file given where a folder is expected (or
the reverse) is one line before any work, not an OS error (FileExistsError, IsADirectoryError) after it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def _check_parents(path: Path, flag: str) -> None:
    """ValueError when an existing ancestor of ``path`` is a file, so nothing can be made under it."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{flag} {path}: {parent} is a file, so nothing can be made under it; give another path")


def check_output_folder(path: Optional[Path], flag: str) -> Optional[Path]:
    """``path`` unchanged when it is a folder or can become one; ValueError (one line, for the options model)."""
    if path is None:
        return path
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is an existing file, but {flag} names an output folder; give a folder "
                         f"(e.g. {path.with_suffix('')}-out) or remove the file")
    _check_parents(path, flag)
    return path


def check_output_file(path: Path, flag: str) -> Path:
    """``path`` unchanged when a file can be written there; ValueError when it is a folder or lies under a file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder, but {flag} names the file to write; give a file name "
                         f"(e.g. {path / 'model.onnx'})")
    _check_parents(path, flag)
    return path
