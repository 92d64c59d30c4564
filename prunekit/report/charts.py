"""Figures for the HTML report, returned as PNG bytes to embed: training curves and per-layer widths.

Drawn like :mod:`prunekit.report.plots` (a bare Agg figure, no pyplot state); matplotlib loads on the first chart.
"""
from __future__ import annotations

import io
from typing import Any, Dict, List, Sequence

from .plots import _new_figure


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes (for a data URI)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _series(rows: List[Dict[str, Any]], key: str, offset: int) -> tuple:
    pts = [(offset + i + 1, r[key]) for i, r in enumerate(rows) if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(curves: Dict[str, List[Dict[str, Any]]], overlay: bool = False) -> bytes:
    """Loss and accuracy per epoch, the phases (train, fine-tune, ...) one after another on one epoch axis, each
    phase's start marked (``overlay``: every series from epoch 1, e.g. one per criterion); train lines solid,
    validation dashed."""
    from matplotlib.ticker import MaxNLocator

    fig = _new_figure(10, 3.6)
    loss_ax, acc_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    offset = 0
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for i, (phase, rows) in enumerate(curves.items()):
        color = colors[i % len(colors)]
        for ax, metric, scale in ((loss_ax, "loss", 1.0), (acc_ax, "acc", 100.0)):
            for split, style in (("train", "-"), ("val", "--")):
                xs, ys = _series(rows, f"{split}_{metric}", offset)
                if xs:
                    ax.plot(xs, [scale * y for y in ys], style, marker="o", markersize=3, color=color,
                            label=f"{phase} ({split})")
            if offset:
                ax.axvline(offset + 0.5, color="gray", linewidth=0.8, linestyle=":")
        offset += 0 if overlay else len(rows)
    last = offset if not overlay else max(len(rows) for rows in curves.values())
    loss_ax.set_ylabel("loss")
    acc_ax.set_ylabel("accuracy (%)")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch" if overlay else "epoch (phases in order)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.5, max(last, 1) + 0.5)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    return png_bytes(fig)


def plot_widths(layers: Sequence[str], before: Sequence[float], after: Sequence[float], unit: str) -> bytes:
    """One bar per layer: its width before (grey) and what is kept (blue), labelled kept/before."""
    fig = _new_figure(9, 0.26 * max(len(layers), 4) + 1.2)
    ax = fig.add_subplot(1, 1, 1)
    ys = range(len(layers))
    ax.barh(ys, before, color="#d0d5dc", label="before")
    ax.barh(ys, after, color="tab:blue", label="kept")
    for y, b, a in zip(ys, before, after):
        ax.text(b, y, f" {a:g}/{b:g}", va="center", fontsize=7)
    ax.set_yticks(list(ys), list(layers), fontsize=7 if len(layers) > 25 else 9)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.margins(x=0.12)
    ax.legend(fontsize=8, loc="lower right")
    return png_bytes(fig)


def plot_kept(layers: Sequence[str], sizes: Sequence[int], kept: Dict[str, Sequence[int]], title: str) -> bytes:
    """Fraction of each layer's channels every criterion kept (layers in graph order): where they disagree."""
    fig = _new_figure(9, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(layers)))
    for name, counts in kept.items():
        ax.plot(xs, [100.0 * k / s for k, s in zip(counts, sizes)], marker="o", markersize=3, label=name)
    ax.set_xticks(xs, list(layers), rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("channels kept (% of layer)")
    ax.set_ylim(0, 105)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title)
    return png_bytes(fig)
