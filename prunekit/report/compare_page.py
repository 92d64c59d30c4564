"""``<name>_report.html`` of a criteria comparison, rendered from its ``<name>_report.json`` record.

One page: the table (mean ± sample std over seeds; one seed says ``n=1`` instead of a spread), batch-1 latency with
its IQR and the speedup over the unpruned base timed together with it, the accuracy-vs-MACs plot, where the
criteria kept different channels, each criterion's fine-tuning curves, the settings and the command.

Example::

    record = json.loads(Path("runs/compare/criteria_report.json").read_text())
    html = render_compare_html(record, Path("runs/compare/criteria_tradeoff.png").read_bytes())
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from .charts import plot_curves, plot_kept
from .html import code, esc, image, note, number, page, pointer, section, table


def _acc(st: Dict[str, Any], i: int, name: str) -> str:
    mean, sd = st.get(f"{name}_mean"), st.get(f"{name}_sd")
    if mean is None:
        return "-"
    shown = number(mean, pointer("rows", i, f"{name}_mean"), text=f"{mean:.2f}")
    if sd is None:
        return f'{shown} <span class="spread">(n={st["seeds"]})</span>'
    return f'{shown} ± {number(sd, pointer("rows", i, f"{name}_sd"), text=f"{sd:.2f}")}'


def _opt(st: Dict[str, Any], i: int, key: str, fmt: str, suffix: str = "") -> str:
    v = st.get(key)
    return "-" if v is None else number(v, pointer("rows", i, key), text=format(v, fmt) + suffix)


def _latency(st: Dict[str, Any], i: int) -> str:
    if st.get("latency_ms_b1") is None:
        return "-"
    text = _opt(st, i, "latency_ms_b1", ".2f")
    if st.get("latency_spread_ms_b1") is not None:
        text += f' <span class="spread">IQR {_opt(st, i, "latency_spread_ms_b1", ".2f")}</span>'
    return text


_HEADER = ["criterion", "target", "epochs (base+ft)", "seeds", "test acc %", "val acc %", "test acc before ft %",
           "MACs (M)", "MACs red. %", "params", "latency b1 ms", "speedup b1", "same channels as l1"]


def _row(st: Dict[str, Any], i: int) -> List[str]:
    return [esc(st["criterion"]), esc(st["target"]), esc(f"{st['base_epochs']}+{st['finetune_epochs']}"),
            number(st["seeds"], pointer("rows", i, "seeds"), text=str(st["seeds"])),
            _acc(st, i, "test_acc"), _acc(st, i, "val_acc"), _opt(st, i, "test_acc_before_ft_mean", ".2f"),
            number(st["macs"], pointer("rows", i, "macs"), text=f"{st['macs'] / 1e6:.2f}"),
            _opt(st, i, "macs_reduction_pct", ".1f"), number(st["params"], pointer("rows", i, "params"), "count"),
            _latency(st, i), _opt(st, i, "speedup_b1", ".2f", "x"), _opt(st, i, "same_channels_as_l1", ".2f")]


def _kept(kept: Dict[str, Dict[str, Any]]) -> Optional[str]:
    if not kept:
        return None
    figs = [image(plot_kept(k["layers"], k["sizes"], k["kept"], f"{target}, seed {k['seed']}"),
                  f"channels kept per layer at {target}", f"kept-{target}") for target, k in kept.items()]
    return section("Where the criteria kept different channels", *figs,
                   note("Share of each layer's channels every criterion kept (first seed); layers in graph order."),
                   ident="kept")


def _curves(curves: Dict[str, Dict[str, List[Dict[str, Any]]]]) -> Optional[str]:
    if not curves:
        return None
    figs = [image(plot_curves(by_crit, overlay=True), f"fine-tuning curves at {target}", f"curves-{target}")
            for target, by_crit in curves.items()]
    return section("Fine-tuning curves", *figs, note("Each criterion's fine-tuning epochs (first seed), one panel "
                                                     "pair per target; solid: training split, dashed: validation."),
                   ident="curves")


def render_compare_html(record: Dict[str, Any], tradeoff_png: Optional[bytes] = None) -> str:
    """The whole comparison page from its JSON record (and the accuracy-vs-MACs plot, when given)."""
    stats = record.get("rows") or []
    body = [section("Results", table(_HEADER, [_row(st, i) for i, st in enumerate(stats)],
                                     [False, False, False] + [True] * 10, ident="compare-table"),
                    note(record.get("protocol", "").replace("`", "")), ident="results")]
    if tradeoff_png:
        body.append(section("Accuracy vs MACs", image(tradeoff_png, "test accuracy vs MACs reduction",
                                                      "tradeoff-chart"),
                            note("Mean over seeds; error bars: sample std (none for one seed)."), ident="tradeoff"))
    body += [s for s in (_kept(record.get("kept") or {}), _curves(record.get("curves") or {})) if s]
    settings = record.get("settings")
    if isinstance(settings, dict) and settings:
        rows = [[esc(k), esc(v if isinstance(v, str) else json.dumps(v))] for k, v in settings.items()]
        body.append(section("Settings that mattered", table(["setting", "value"], rows, ident="settings-table"),
                            ident="settings"))
    if record.get("reproduce"):
        body.append(section("Reproduce", code("\n".join(record["reproduce"])),
                            note("A rerun skips the cells already in <out>/cells."), ident="reproduce"))
    sub = f"prunekit {record.get('prunekit_version', '?')}, {record.get('created', '')}, {record.get('cells', 0)} cells"
    return page(record.get("title", "criteria comparison"), body, sub)
