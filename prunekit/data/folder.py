"""Find the images of a scene-classification folder (ImageFolder layout) and fingerprint them for the cache.

Layout: ``root/<class>/<image>``, one subfolder per class (images may sit in nested subfolders of a class), at least
two classes. UC Merced, AID, NWPU-RESISC45, EuroSAT and RSSCN7 all ship this way; a folder whose only subfolder holds
the class folders (the UC Merced zip unpacks to ``UCMerced_LandUse/Images/<class>/``) is read from that level, with a
warning naming it. A broken symlink among the images is listed like any image and fails to decode, so
``load_dataset``'s ``on_bad_image`` rule (skip with a count, or fail) decides. The fingerprint hashes relative paths, sizes and mtimes, so
editing, adding or removing any image changes it and the decoded cache is rebuilt.

    scan = scan_folder("data/ucmerced")   # scan.classes, scan.files, scan.labels, scan.fingerprint
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

from ..errors import DataError

IMAGE_EXTENSIONS: Tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
_EXT_TEXT = "/".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
_MAX_WRAPPERS = 3  # how many single-subfolder levels (archive name, "Images") are looked through for the classes

log = logging.getLogger("prunekit.data")


@dataclass(frozen=True)
class FolderScan:
    """What a folder holds: sorted class names and, in class-then-path order, the image files and their labels."""

    root: Path
    classes: List[str]
    files: List[str]  # POSIX paths relative to root
    labels: List[int]
    fingerprint: str  # sha256 of (relative path, size, mtime) of every image

    def path_of(self, index: int) -> Path:
        """Absolute path of image ``index`` (``root`` joined with its relative path)."""
        return self.root / self.files[index]


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _images_under(class_dir: Path, root: Path) -> List[Tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every image below ``class_dir``, sorted, hidden entries skipped."""
    found: List[Tuple[str, int, int]] = []
    for here, dirs, names in os.walk(class_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not _is_image(name):
                continue
            full = Path(here) / name
            try:
                st = full.stat()
                size, mtime = st.st_size, st.st_mtime_ns
            except FileNotFoundError:  # a broken symlink: kept (decoding reports it); -1 changes when it is mended
                size, mtime = -1, full.lstat().st_mtime_ns
            found.append((full.relative_to(root).as_posix(), size, mtime))
    found.sort()
    return found


def _subfolders(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _holds_images(folder: Path) -> bool:
    return any(_is_image(p.name) for p in folder.iterdir() if not p.is_dir())


def _class_level(root: Path) -> Path:
    """``root``, or the folder below it that holds the class folders when ``root`` only wraps them: while a folder
    has exactly one subfolder and no images of its own, and that subfolder has subfolders, step into it."""
    level = root
    for _ in range(_MAX_WRAPPERS):
        subs = _subfolders(level)
        if len(subs) != 1 or _holds_images(level) or _holds_images(subs[0]) or not _subfolders(subs[0]):
            break
        level = subs[0]
    if level != root:
        log.warning("data folder %s holds its class folders in %s; using that folder (pass it as the data folder "
                    "to skip this look-through)", root, level)
    return level


def scan_folder(root: str | os.PathLike) -> FolderScan:
    """List classes and images of ``root``; raise :class:`DataError` for every layout mistake, naming the path."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data folder {root} does not exist; pass a folder with one subfolder of images per class")
    if not root.is_dir():
        raise DataError(f"data path {root} is a file, not a folder; pass the folder that holds one subfolder per class")
    root = _class_level(root.resolve())
    class_dirs = _subfolders(root)
    if not class_dirs:
        hint = "it holds images directly; move" if _holds_images(root) else "put"
        raise DataError(f"data folder {root} has no class subfolders; {hint} each class's images in {root}/<class>/")
    if len(class_dirs) == 1:
        raise DataError(f"data folder {root} has one class folder ({class_dirs[0].name}); a classifier needs at least "
                        f"two classes: add a subfolder of images for each other class, or pass the folder that holds "
                        "them all")
    classes: List[str] = []
    files: List[str] = []
    labels: List[int] = []
    digest = hashlib.sha256()
    for label, class_dir in enumerate(class_dirs):
        entries = _images_under(class_dir, root)
        if not entries:
            raise DataError(f"class folder {class_dir} has no images ({_EXT_TEXT}); add images or remove the folder")
        classes.append(class_dir.name)
        for rel, size, mtime in entries:
            files.append(rel)
            labels.append(label)
            digest.update(f"{rel}\t{size}\t{mtime}\n".encode())
    return FolderScan(root=root, classes=classes, files=files, labels=labels, fingerprint=digest.hexdigest())
