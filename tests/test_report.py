"""Report: table alignment, before/after wording and units, the three report files, tradeoff plot."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from prunekit.errors import ConfigError
from prunekit.measure import Measurement
from prunekit.report import (
    compare_rows,
    flatten_measurement,
    format_table,
    markdown_table,
    metric_ratios,
    plot_tradeoff,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

BEFORE = {
    "accuracy": 0.83, "params": 11_689_512, "nonzero_params": 11_689_512, "macs": 148_557_824,
    "file_bytes": 46_800_000, "latency_ms_b1": 9.0, "latency_ms_b32": 60.0, "peak_memory_bytes": 16_777_728,
}
AFTER = {
    "accuracy": 0.826, "params": 2_850_000, "nonzero_params": 2_850_000, "macs": 37_139_456,
    "file_bytes": 11_400_000, "latency_ms_b1": 5.0, "latency_ms_b32": 75.0, "peak_memory_bytes": 16_777_728,
}


def by_metric(rows):
    return {r["metric"]: r for r in rows}


def test_format_table_aligns_columns():
    rows = [{"name": "a", "value": 1.5, "n": 10}, {"name": "longer", "value": None, "n": 2}]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["name", "value", "n"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert len({len(line) for line in lines[2:]}) == 1  # right-aligned last column -> equal widths
    assert lines[2].startswith("a ") and lines[3].startswith("longer")
    # numbers right-aligned under their header, missing values shown as '-'
    value_end = lines[0].index("value") + len("value")
    assert lines[2][:value_end].endswith(" 1.5") and lines[3][:value_end].endswith(" -")
    assert lines[2].endswith("10") and lines[3].endswith(" 2")


def test_format_table_columns_and_missing_keys():
    text = format_table([{"a": 1}, {"b": "x"}], columns=["b", "a"])
    assert text.splitlines()[0].split() == ["b", "a"]
    assert text.splitlines()[2].split() == ["-", "1"]


def test_markdown_table_shape_and_escaping():
    text = markdown_table([{"k": "a|b", "v": 2.0}], ["k", "v"])
    head, rule, body = text.splitlines()
    assert head == "| k | v |" and rule == "|---|---:|" and body == "| a\\|b | 2 |"


def test_compare_rows_units_and_ratios():
    rows = by_metric(compare_rows(BEFORE, AFTER))
    assert list(rows) == ["accuracy", "params", "nonzero params", "MACs (batch 1)", "file size",
                          "latency b1", "latency b32", "peak forward memory"]
    assert rows["accuracy"] == {"metric": "accuracy", "before": "83.00%", "after": "82.60%", "change": "-0.40 pts"}
    assert rows["params"]["before"] == "11.69M" and rows["params"]["after"] == "2.85M"
    assert rows["params"]["change"] == "4.10x smaller"
    assert rows["file size"]["before"] == "46.8 MB" and rows["file size"]["change"] == "4.11x smaller"
    assert rows["latency b1"] == {"metric": "latency b1", "before": "9 ms", "after": "5 ms", "change": "1.80x faster"}
    assert rows["latency b32"]["change"] == "1.25x slower"
    assert rows["peak forward memory"]["change"] == "same"


def test_compare_rows_missing_values_and_explicit_keys():
    rows = compare_rows({"params": 10}, {"params": 40, "file_bytes": 5}, keys=["params", "file_bytes"])
    assert rows[0]["change"] == "4.00x larger"
    assert rows[1] == {"metric": "file size", "before": "-", "after": "5 B", "change": "n/a"}


def test_latency_rows_carry_their_spread():
    rows = by_metric(compare_rows({**BEFORE, "latency_spread_ms_b1": 0.25}, {**AFTER, "latency_spread_ms_b1": 0.5}))
    assert rows["latency b1"]["before"] == "9 ms (IQR 0.25 ms)" and rows["latency b1"]["after"] == "5 ms (IQR 0.5 ms)"
    assert rows["latency b32"]["before"] == "60 ms"  # no spread recorded: none shown


def test_settings_that_mattered_and_the_command_that_reproduces_them(tmp_path):
    import shlex

    from prunekit.cli.main import build_parser
    from prunekit.cli.options import parse_options
    from prunekit.config import PruneOptions
    from prunekit.report import command_line, settings_that_mattered

    opts = PruneOptions(model="vgg_small", method="structured", reduce="macs=0.5", finetune_epochs=2, distill=True,
                        latency=False, ignore=["classifier", "features.0"], out=tmp_path / "run", progress=False,
                        epochs=3)  # --sensitivity-ratios is refused without --max-drop; --ignore is the list flag
    shown = settings_that_mattered(opts, used={"ratio": 0.3034, "epochs": None})
    assert shown["ratio"] == 0.3034 and shown["reduce"] == "macs=0.5" and shown["latency"] is False
    assert {"model", "seed", "image_size", "method"} <= set(shown)  # the run's identity, though at defaults
    assert not {"epochs", "attention_epochs", "out", "progress", "lr"} & set(shown)  # unused, defaults, run-only
    words = shlex.split(command_line("prune", opts))
    assert words[:2] == ["prunekit", "prune"] and "--no-latency" in words and "--json" not in words
    ns = build_parser().parse_args(words[1:])
    again = parse_options(ns._cmd.options, ns).model_copy(update={"progress": False})  # how it is shown: left out
    assert again.model_dump() == opts.model_dump()  # the same options, flag by flag


def test_metric_ratios_are_after_over_before():
    ratios = metric_ratios(BEFORE, AFTER)
    assert "accuracy" not in ratios
    assert ratios["latency_ms_b1"] == pytest.approx(5 / 9)
    assert ratios["params"] == pytest.approx(2_850_000 / 11_689_512)


def test_flatten_measurement():
    m = Measurement(params=5, nonzero_params=4, macs=3, flops=6, file_bytes=100, latency_ms={32: 2.0, 1: 1.0},
                    latency_spread_ms={1: 0.1, 32: 0.2}, threads=2, device="cpu", input_shape=(3, 8, 8),
                    peak_memory_bytes=77)
    flat = flatten_measurement(m)
    assert flat["latency_ms_b1"] == 1.0 and flat["latency_ms_b32"] == 2.0 and flat["latency_spread_ms_b32"] == 0.2
    assert flat["params"] == 5 and flat["file_bytes"] == 100 and flat["input_shape"] == [3, 8, 8]
    json.dumps(flat)


def test_write_report_makes_four_files(tmp_path):
    plan = {f"layer{i}": list(range(20)) for i in range(20)}
    extra = {"settings": {"ratio": 0.5, "shape": (3, 64, 64), "plan": plan},
             "layers": [{"layer": "conv1", "kept": 16}]}
    paths = write_report(tmp_path / "out", "resnet18 pruned", BEFORE, AFTER, extra=extra)
    assert set(paths) == {"md", "json", "png", "html"} and all(p.is_file() for p in paths.values())
    record = json.loads(paths["json"].read_text())
    assert record["before"] == BEFORE and record["after"] == AFTER
    assert record["extra"]["settings"]["shape"] == [3, 64, 64]
    assert record["after_over_before"]["macs"] == pytest.approx(0.25, abs=1e-3)
    md = paths["md"].read_text()
    assert md.startswith("# resnet18 pruned") and "| params | 11.69M | 2.85M | 4.10x smaller |" in md
    assert "## settings" in md and "| conv1 | 16 |" in md and "| shape | [3, 64, 64] |" in md
    assert "(see report.json)" in md and record["extra"]["settings"]["plan"]["layer19"] == list(range(20))
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC
    assert paths["html"].read_text().startswith("<!DOCTYPE html>") and "resnet18 pruned" in paths["html"].read_text()
    assert "n=1" in md and "IQR" in md  # the uncertainty note: one run, latency spreads
    assert not [p for p in (tmp_path / "out").iterdir() if p.suffix == ".tmp"]


def test_write_report_without_accuracy_and_with_nan(tmp_path):
    before = {"params": 10, "accuracy": float("nan")}
    paths = write_report(tmp_path, "no acc", before, {"params": 5})
    assert json.loads(paths["json"].read_text())["before"]["accuracy"] is None
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC


def test_plot_tradeoff_writes_png(tmp_path):
    series = {"l1": [(2.0, 0.8, 0.01), (1.0, 0.9, None)], "random": [(1.0, 0.9, None), (2.0, 0.7, 0.03)]}
    path = plot_tradeoff(series, tmp_path / "t.png", xlabel="compression (x)", ylabel="accuracy")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ConfigError):
        plot_tradeoff({}, tmp_path / "u.png")


def test_import_is_light():
    code = "import sys, prunekit.report; print('matplotlib' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
