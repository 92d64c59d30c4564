"""What a person watching a run sees: a bar per epoch carrying loss and accuracy on a terminal, and one line per
finished epoch (the only output when stderr is not a terminal, e.g. CI logs or ``nohup``)."""
from __future__ import annotations

import sys
from typing import Any, Dict, Iterable

from tqdm.auto import tqdm


def bars() -> bool:
    """Progress bars only on a terminal: in a log file (CI, nohup, a pipe) their redraws are noise, so there each
    epoch is one plain line (:func:`epoch_line`) and nothing else."""
    return sys.stderr.isatty()


def progress_bar(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    """``iterable`` wrapped in a bar (the loop sets its loss/accuracy postfix), or itself off a terminal."""
    if not (enabled and bars()):
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0)


def epoch_line(phase: str, epochs: int, row: Dict[str, Any]) -> str:
    """One line per finished epoch, kept on screen (and in a log file) after the epoch's bar is gone."""
    parts = [f"{phase} epoch {row['epoch']}/{epochs}", f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}"]
    if "val_acc" in row:
        parts.append(f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}")
    parts += [f"lr {row['lr']:.3g}", f"params {row['params']:,}"]
    if row.get("sparsity", 0) >= 5e-4:  # dense training: no column of zeros
        parts.append(f"sparsity {row['sparsity']:.3f}")
    parts.append(f"{row['seconds']:.1f} s")
    return " | ".join(parts)


def print_line(text: str) -> None:
    tqdm.write(text, file=sys.stderr)  # above any outer bar, and a plain line where there is none
