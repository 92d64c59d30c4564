"""Output paths the user names: checked when the options are parsed, so a file given where a folder is expected (or
the reverse) is one line before any work, not an OS error (FileExistsError, IsADirectoryError) after it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def _blocking_file(path: Path) -> Optional[Path]:
    """The first existing ancestor of ``path`` that is not a folder (so nothing can be created under it)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def check_output_folder(path: Optional[Path], flag: str) -> Optional[Path]:
    """``path`` unchanged when it is a folder or can become one; ValueError (one line, for the options model)."""
    if path is None:
        return path
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is an existing file, but {flag} names an output folder; give a folder "
                         f"(e.g. {path.with_suffix('')}-out) or remove the file")
    blocker = _blocking_file(path)
    if blocker is not None:
        raise ValueError(f"{flag} {path}: {blocker} is a file, so no folder can be made there; give another folder")
    return path


def check_output_file(path: Path, flag: str) -> Path:
    """``path`` unchanged when a file can be written there; ValueError when it is a folder or lies under a file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder, but {flag} names the file to write; give a file name "
                         f"(e.g. {path / 'model.onnx'})")
    blocker = _blocking_file(path)
    if blocker is not None:
        raise ValueError(f"{flag} {path}: {blocker} is a file, so nothing can be written under it; give another path")
    return path
