"""The HTML reports: a run's report.html, a comparison's page and eval.html.

Each page is checked twice: parsed here (self-contained: no outside URL, no script; every tagged number equals its
value in the JSON record and is shown in the unit it claims), and opened in a real headless Chromium (Debian's
chromium + chromedriver, driven by selenium; skipped with the reason when absent; .ci/run installs it and sets
PRUNEKIT_REQUIRE_BROWSER=1, which turns that skip into a failure): it loads with no
console error (the page's policy blocks every outside load, so a page needing the network errs), every image
decodes, and the numbers the browser reads equal the JSON's.
"""
from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Tuple

import pytest

from prunekit.compare.table import write_report as write_compare_report
from prunekit.config import PruneOptions
from prunekit.report import run_settings, write_report
from prunekit.report.browser import why_unavailable
from prunekit.report.compare import human
from prunekit.report.eval_page import write_eval_report

BEFORE = {"accuracy": 0.83, "params": 1_179_000, "nonzero_params": 1_179_000, "macs": 211_200_000,
          "file_bytes": 4_727_000, "latency_ms_b1": 9.5, "latency_spread_ms_b1": 0.4, "latency_ms_b32": 60.0,
          "latency_spread_ms_b32": 2.5, "peak_memory_bytes": 50_370_000, "device": "cpu", "threads": 2}
AFTER = {"accuracy": 0.8152, "params": 300_100, "nonzero_params": 300_100, "macs": 54_300_000,
         "file_bytes": 1_210_000, "latency_ms_b1": 4.1, "latency_spread_ms_b1": 0.3, "latency_ms_b32": 21.0,
         "latency_spread_ms_b32": 1.5, "peak_memory_bytes": 20_000_000, "device": "cpu", "threads": 2}
CURVE = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.2 / e, "train_acc": 0.2 * e, "val_acc": 0.18 * e,
          "lr": 0.05, "seconds": 3.0} for e in (1, 2, 3)]


def resolve(record: Any, key: str) -> Any:
    """The value at JSON Pointer ``key`` (RFC 6901) in ``record``."""
    for part in key.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        record = record[int(part)] if isinstance(record, list) else record[part]
    return record


class _Page(HTMLParser):
    """Tagged numbers, image sources and every URL-bearing attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: List[Tuple[str, str, str, str]] = []
        self.urls: List[str] = []
        self.tags: List[str] = []
        self._open: List[List[Any]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        if "data-key" in a:
            self._open.append([a["data-key"], a["data-value"], a["data-kind"], ""])

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1][3] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self._open:
            self.numbers.append(tuple(self._open.pop()))


def check_numbers(numbers: List[Tuple[str, str, str, str]], record: Dict[str, Any]) -> None:
    """Each tagged number is the record's value, and shown in its kind's unit (``human``)."""
    for key, raw, kind, text in numbers:
        value = resolve(record, key)
        assert json.loads(raw) == value, key
        if kind != "number":
            assert text == human(value, kind), (key, text)


def _run_report(root: Path, structured: bool) -> Tuple[Path, Path]:
    out = root / ("structured" if structured else "unstructured")
    opts = PruneOptions(model="vgg_small", method="structured" if structured else "unstructured",
                        reduce="macs=0.25" if structured else None, epochs=3, finetune_epochs=2, out=out)
    if structured:
        plan = {"groups": [{"key": f"g{i}", "module": f"features.{i}", "size": 64, "remove": list(range(16 * i))}
                           for i in range(1, 4)], "blocks": [], "input_shapes": [[1, 3, 64, 64]]}
        done = {"method": "structured", "criterion": "l1", "ratio": 0.3034, "plan": plan,
                "test_accuracy_after_cut": 0.41}
    else:
        done = {"method": "unstructured", "ratio": 0.5, "sparsity": {"overall": 0.5,
                                                                      "per_layer": {"a.weight": 0.4, "b.weight": 0.6}}}
    used = {"ratio": done["ratio"]}
    extra = {**run_settings("prune", opts, used), "pruning": done, "start": {"source": "trained 3 epochs here"},
             "curves": {"train": CURVE, "finetune": CURVE[:2]}}
    paths = write_report(out, f"pruning of vgg_small ({done['method']})", BEFORE, AFTER, extra=extra,
                         timed_together=structured)
    assert ("timed together (interleaved)" in paths["html"].read_text()) == structured  # said only when true
    return paths["html"], paths["json"]


def _compare_report(root: Path) -> Tuple[Path, Path]:
    """Cell files of one seed (so no spread exists) for two criteria and the unpruned reference."""
    cells = root / "compare" / "cells"
    cells.mkdir(parents=True)
    base = dict(model="vgg_tiny", data="embedded", image_size=16, base_epochs=1, finetune_epochs=3,
                finetune_lr=0.01, distill=False, scope="uniform", base_seed=None, seed=0)
    sizes = {"features.0": 8, "features.3": 16}
    for crit, acc in (("unpruned", 0.8), ("l1", 0.7512), ("random", 0.7)):
        row = {**base, "criterion": crit, "target": "none" if crit == "unpruned" else "macs=0.5", "test_acc": acc,
               "val_acc": acc - 0.01, "params": 9000 if crit == "unpruned" else 4000, "macs": 2e6 if crit ==
               "unpruned" else 1e6, "params_reduction": 0.0 if crit == "unpruned" else 0.55,
               "macs_reduction": 0.0 if crit == "unpruned" else 0.5, "latency_ms_b1": 1.3, "latency_spread_ms_b1":
               0.05, "dense_latency_ms_b1": 2.0, "dense_latency_spread_ms_b1": 0.1, "history": CURVE}
        if crit != "unpruned":
            shift = 1 if crit == "l1" else 0
            row.update(test_acc_before_ft=acc - 0.3, sizes=sizes, removed={k: list(range(shift, v // 2 + shift))
                                                                           for k, v in sizes.items()},
                       kept={"features.0": 4 + shift, "features.3": 8 - shift})
        (cells / f"{crit}.json").write_text(json.dumps(row))
    opts = SimpleNamespace(**base, results=cells, docs=root / "compare", name="criteria", criteria=["l1", "random"],
                           reduce=["macs=0.5"], recal_batches=8, attention_epochs=1, attention_mode="frozen",
                           attention_sparsity=0.0)
    report = write_compare_report(opts, settings={"settings": {"model": "vgg_tiny", "seeds": [0]},
                                                  "reproduce": ["prunekit compare --model vgg_tiny --seeds 0"]})
    assert "± 0.00" not in report["markdown"] and "(n=1)" in report["markdown"]  # one seed: no made-up spread
    return Path(report["html_path"]), Path(report["json_path"])


def _eval_report(root: Path) -> Tuple[Path, Path]:
    result = {"checkpoint": "runs/x/model.safetensors", "split": "test", "classes": ["a/b", "c"],
              "accuracy": 0.75, "samples": 8, "per_class": {"a/b": 0.5, "c": 1.0}, "confusion": [[2, 2], [0, 4]],
              "loss": 0.61}
    paths = write_eval_report(root / "eval", result)
    return paths["html"], paths["json"]


DEMO = Path(__file__).resolve().parents[1] / "docs" / "report" / "demo"  # the committed demo run of docs/report.md
KINDS = {"run-structured": lambda r: _run_report(r, True), "run-unstructured": lambda r: _run_report(r, False),
         "compare": _compare_report, "eval": _eval_report,
         "committed-demo": lambda r: (DEMO / "report.html", DEMO / "report.json")}
MUST_SHOW = {"run-structured": ["/before/accuracy", "/after/latency_ms_b1", "/after/latency_spread_ms_b1",
                                "/extra/settings/ratio", "/extra/pruning/test_accuracy_after_cut"],
             "run-unstructured": ["/after/accuracy", "/before/latency_spread_ms_b32"],
             "compare": ["/rows/0/test_acc_mean", "/rows/0/speedup_b1", "/rows/2/latency_spread_ms_b1"],
             "eval": ["/accuracy", "/per_class/a~1b", "/confusion/0/1"],
             "committed-demo": ["/before/accuracy", "/after/accuracy", "/after/latency_spread_ms_b1"]}
IMAGES = {"run-structured": 3, "run-unstructured": 3, "compare": 3, "eval": 0, "committed-demo": 3}


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> Dict[str, Tuple[Path, Dict[str, Any]]]:
    root = tmp_path_factory.mktemp("pages")
    built = {kind: make(root) for kind, make in KINDS.items()}
    return {kind: (html, json.loads(record.read_text())) for kind, (html, record) in built.items()}


@pytest.mark.parametrize("kind", list(KINDS))
def test_page_is_self_contained_and_its_numbers_are_the_records(pages, kind):
    html, record = pages[kind]
    page = _Page()
    page.feed(html.read_text(encoding="utf-8"))
    assert "script" not in page.tags and "link" in page.tags  # the data: favicon, nothing fetched
    assert all(u.startswith("data:") for u in page.urls), [u[:40] for u in page.urls if not u.startswith("data:")]
    assert sum(u.startswith("data:image/png;base64,") for u in page.urls) == IMAGES[kind]
    check_numbers(page.numbers, record)
    assert set(MUST_SHOW[kind]) <= {key for key, *_ in page.numbers}


def test_settings_show_the_ratio_used_not_the_default(pages):
    _, record = pages["run-structured"]
    assert record["extra"]["settings"]["ratio"] == 0.3034
    assert record["extra"]["all_settings"]["ratio"] is None  # --reduce: no ratio was given
    assert "attention_epochs" not in record["extra"]["settings"]  # a default, unused here
    md = (Path(pages["run-structured"][0]).parent / "report.md").read_text()
    assert "| ratio | 0.3034 |" in md and "attention_epochs" not in md


@pytest.fixture(scope="module")
def driver():
    missing = why_unavailable()
    if missing and os.environ.get("PRUNEKIT_REQUIRE_BROWSER") == "1":  # .ci/run installs it: absent is a failure
        pytest.fail(f"PRUNEKIT_REQUIRE_BROWSER=1 but no headless browser: {missing}")
    if missing:
        pytest.skip(f"no headless browser: {missing}")
    from prunekit.report.browser import chromium

    with chromium() as d:
        yield d


@pytest.mark.xdist_group("browser")  # one Chromium for all pages under `pytest -n 2 --dist loadgroup`
@pytest.mark.parametrize("kind", list(KINDS))
def test_page_in_headless_chromium(pages, driver, kind):
    html, record = pages[kind]
    driver.get(html.resolve().as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    assert driver.get_log("browser") == []  # no console error or warning (an outside load would be one)
    images = driver.execute_script("return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
    assert len(images) == IMAGES[kind] and all(done and width > 0 for _, done, width in images), images
    numbers = driver.execute_script("return Array.from(document.querySelectorAll('[data-key]')).map("
                                    "e => [e.dataset.key, e.dataset.value, e.dataset.kind, e.textContent])")
    check_numbers([tuple(n) for n in numbers], record)
    assert set(MUST_SHOW[kind]) <= {n[0] for n in numbers}


def test_eval_out_writes_what_it_printed(tiny_folder, tmp_path, capsys):
    """``prunekit eval --out DIR``: the JSON it prints with --json, plus eval.md and eval.html, in DIR."""
    from prunekit.cli.main import main
    from prunekit.data import data_section, load_dataset
    from prunekit.models import create_model
    from prunekit.storage import checkpoint as ckpt

    ds = load_dataset(tiny_folder, image_size=16, seed=0, val_frac=0.2)
    path = tmp_path / "m.safetensors"
    ckpt.save(create_model("vgg_tiny", len(ds.classes)), path, data=data_section(ds))
    assert main(["eval", str(path), "--out", str(tmp_path / "ev"), "--json", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert {k: v for k, v in printed.items() if k != "report"} == written
    assert written["samples"] == sum(sum(r) for r in written["confusion"]) > 0
    page = _Page()
    page.feed((tmp_path / "ev" / "eval.html").read_text())
    check_numbers(page.numbers, written)
    assert f"{100 * written['accuracy']:.2f}%" in (tmp_path / "ev" / "eval.md").read_text()
