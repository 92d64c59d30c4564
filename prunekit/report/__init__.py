"""Tables and figures shared by the CLI, the demo and the benchmarks.

``import prunekit.report`` stays light (no torch, no matplotlib); matplotlib loads on the first plot.

Example::

    from prunekit.report import compare_rows, flatten_measurement, format_table, write_report
    before = {**flatten_measurement(m0), "accuracy": 0.91}
    after = {**flatten_measurement(m1), "accuracy": 0.90}
    print(format_table(compare_rows(before, after)))
    write_report("runs/demo", "resnet18 pruned 50%", before, after, extra={"settings": {"ratio": 0.5}})
"""
from __future__ import annotations

from .compare import compare_rows, describe_change, flatten_measurement, human, metric_ratios
from .plots import plot_sensitivity, plot_summary, plot_tradeoff
from .settings import command_line, run_settings, settings_that_mattered
from .tables import format_table, markdown_table
from .writer import write_report

__all__ = [
    "format_table",
    "markdown_table",
    "compare_rows",
    "describe_change",
    "human",
    "metric_ratios",
    "flatten_measurement",
    "write_report",
    "run_settings",
    "settings_that_mattered",
    "command_line",
    "plot_summary",
    "plot_tradeoff",
    "plot_sensitivity",
]
