"""Figures for reports and benchmarks. matplotlib is imported here only, and only when a plot is drawn.

We draw on a bare ``matplotlib.figure.Figure`` with the Agg canvas instead of pyplot, so no global backend
is switched and nothing needs a display.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError
from ..files import atomic_path
from .compare import metric_info


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")  # explicit format: the temp name ends in .tmp
    return Path(path)


def plot_summary(
    ratios: dict[str, float], path: str | os.PathLike, accuracy: tuple[float | None, float | None] | None = None,
    title: str = "",
) -> Path:
    """Bars of after/before (in % of before) per metric, plus an accuracy before/after panel when given."""
    has_acc = accuracy is not None and any(v is not None for v in accuracy)
    fig = _new_figure(10 if has_acc else 7, 0.45 * max(len(ratios), 3) + 1.6)
    grid = fig.add_gridspec(1, 2, width_ratios=[3, 1]) if has_acc else fig.add_gridspec(1, 1)
    ax = fig.add_subplot(grid[0])
    labels = [metric_info(k)[0] for k in ratios]
    values = [100.0 * r for r in ratios.values()]
    colors = ["tab:green" if v <= 100 else "tab:red" for v in values]
    ax.barh(range(len(values)), values, color=colors)
    ax.set_yticks(range(len(values)), labels)
    ax.invert_yaxis()
    ax.axvline(100.0, color="black", linewidth=1, linestyle="--")
    ax.set_xlabel("after, % of before (lower is better)")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.0f}%", va="center", fontsize=8)
    if not values:
        ax.text(0.5, 0.5, "no size or speed metrics measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
    if has_acc:
        ax2 = fig.add_subplot(grid[1])
        pct = [0.0 if v is None else (100.0 * v if v <= 1 else v) for v in accuracy or (None, None)]
        ax2.bar([0, 1], pct, color=["tab:gray", "tab:blue"])
        ax2.set_xticks([0, 1], ["before", "after"])
        ax2.set_ylabel("accuracy (%)")
        ax2.set_ylim(0, 100)
        for i, v in enumerate(pct):
            ax2.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_tradeoff(
    series: dict[str, Sequence[tuple[float, float, float | None]]],
    path: str | os.PathLike,
    xlabel: str = "compression",
    ylabel: str = "accuracy",
    title: str = "",
) -> Path:
    """One line per series (e.g. per criterion) of points ``(x, y_mean, y_spread or None)``; spread -> error bar.

    Example::

        plot_tradeoff({"l1": [(1, .90, None), (2, .88, .01)], "random": [(1, .90, None), (2, .80, .02)]},
                      "tradeoff.png", xlabel="params reduction (x)", ylabel="accuracy")
    """
    if not series:
        raise ConfigError("plot_tradeoff got no series; pass {name: [(x, y, spread), ...]}")
    fig = _new_figure(6.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for name, points in series.items():
        pts = sorted(points, key=lambda p: p[0])
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        errs = [0.0 if len(p) < 3 or p[2] is None else p[2] for p in pts]
        ax.errorbar(xs, ys, yerr=errs if any(errs) else None, marker="o", capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_sensitivity(layers: Sequence[str], ratios: Sequence[float], drops: Sequence[Sequence[float]],
                     path: str | os.PathLike, title: str = "", unit: str = "points") -> Path:
    """Heat map of the score drop when one layer alone is pruned (rows: layers in graph order, columns: ratios);
    red = sensitive, green = the budget search takes channels there first."""
    if not layers or not ratios:
        raise ConfigError("nothing to plot: the sensitivity scan has no layers or ratios")
    fig = _new_figure(2.2 + 0.9 * len(ratios), 1.2 + 0.28 * len(layers))
    ax = fig.add_subplot(1, 1, 1)
    top = max(1e-9, max(abs(d) for row in drops for d in row))
    im = ax.imshow(drops, cmap="RdYlGn_r", vmin=-top, vmax=top, aspect="auto")
    ax.set_xticks(range(len(ratios)), [f"{r:g}" for r in ratios])
    ax.set_yticks(range(len(layers)), list(layers), fontsize=7 if len(layers) > 30 else 9)
    ax.set_xlabel("fraction of the layer's channels removed")
    if len(layers) * len(ratios) <= 160:
        for i, row in enumerate(drops):
            for j, d in enumerate(row):
                ax.text(j, i, f"{d:.1f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label=f"drop ({unit})")
    ax.set_title(title or "Sensitivity: drop with one layer pruned")
    return _save(fig, path)
