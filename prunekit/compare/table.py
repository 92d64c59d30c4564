"""The comparison's table and plot, rebuilt from every cell file of the same settings (mean ± sd over seeds)."""
from __future__ import annotations

import json
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

from .. import __version__
from ..files import atomic_path
from ..report import plot_tradeoff
from ..report.compare_page import render_compare_html
from ..report.tables import markdown_table
from ..report.writer import write_json_record
from .cells import ATTENTION_FORMS, FINETUNE_LR, data_name


def _mean(vals: List[Any]) -> Optional[float]:
    vals = [v for v in vals if v is not None]
    return statistics.mean(vals) if vals else None


def _sd(vals: List[Any]) -> Optional[float]:
    """Sample std over seeds; None for one seed (there is no spread to show, not a spread of 0)."""
    vals = [v for v in vals if v is not None]
    return statistics.stdev(vals) if len(vals) > 1 else None


def _median(vals: List[Any]) -> Optional[float]:
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def _acc_text(mean: Optional[float], sd: Optional[float], n: int) -> str:
    """"83.10 ± 0.42" over seeds; "83.10 (n=1)" for one seed, never "± 0.00"."""
    if mean is None:
        return "-"
    return f"{mean:.2f} ± {sd:.2f}" if sd is not None else f"{mean:.2f} (n={n})"


def _latency_text(median: Optional[float], iqr: Optional[float]) -> str:
    if median is None:
        return "-"
    return f"{median:.2f}" + (f" (IQR {iqr:.2f})" if iqr is not None else "")


def group_stats(crit: str, target: str, rs: List[Dict[str, Any]], overlap: Optional[float]) -> Dict[str, Any]:
    """The numbers of one (criterion, target) over its seeds: accuracy means and sample stds (None for one seed),
    mean sizes, and the batch-1 latency with the speedup over the unpruned base timed together with it (median over
    seeds; cells written before that was recorded have none)."""
    pct = lambda key: [100 * r[key] for r in rs if r.get(key) is not None]  # noqa: E731
    speedups = [r["dense_latency_ms_b1"] / r["latency_ms_b1"] for r in rs
                if r.get("dense_latency_ms_b1") and r.get("latency_ms_b1")]
    return {"criterion": crit, "target": target, "base_epochs": rs[0]["base_epochs"],
            "finetune_epochs": rs[0]["finetune_epochs"], "seeds": len(rs),
            "test_acc_mean": _mean(pct("test_acc")), "test_acc_sd": _sd(pct("test_acc")),
            "val_acc_mean": _mean(pct("val_acc")), "val_acc_sd": _sd(pct("val_acc")),
            "test_acc_before_ft_mean": _mean(pct("test_acc_before_ft")),
            "val_acc_before_ft_mean": _mean(pct("val_acc_before_ft")),
            "params": _mean([r["params"] for r in rs]), "params_reduction_pct": _mean(pct("params_reduction")),
            "macs": _mean([r["macs"] for r in rs]), "macs_reduction_pct": _mean(pct("macs_reduction")),
            "latency_ms_b1": _median([r.get("latency_ms_b1") for r in rs]),
            "latency_spread_ms_b1": _median([r.get("latency_spread_ms_b1") for r in rs]),
            "dense_latency_ms_b1": _median([r.get("dense_latency_ms_b1") for r in rs]),
            "speedup_b1": _median(speedups), "same_channels_as_l1": overlap}


def table_row(st: Dict[str, Any]) -> Dict[str, Any]:
    """One row of the Markdown table from :func:`group_stats`."""
    def fixed(v: Optional[float], digits: int) -> Any:
        return "-" if v is None else round(v, digits)

    return {"criterion": st["criterion"], "target": st["target"],
            "epochs (base+ft)": f"{st['base_epochs']}+{st['finetune_epochs']}", "seeds": st["seeds"],
            "test acc %": _acc_text(st["test_acc_mean"], st["test_acc_sd"], st["seeds"]),
            "val acc %": _acc_text(st["val_acc_mean"], st["val_acc_sd"], st["seeds"]),
            "before ft %": "-" if st["test_acc_before_ft_mean"] is None else f"{st['test_acc_before_ft_mean']:.2f}",
            "val before ft %": "-" if st["val_acc_before_ft_mean"] is None else
            f"{st['val_acc_before_ft_mean']:.2f}",
            "params": int(st["params"]), "params red. %": fixed(st["params_reduction_pct"], 1),
            "MACs (M)": round(st["macs"] / 1e6, 2), "MACs red. %": fixed(st["macs_reduction_pct"], 1),
            "latency b1 ms": _latency_text(st["latency_ms_b1"], st["latency_spread_ms_b1"]),
            "speedup b1": "-" if st["speedup_b1"] is None else f"{st['speedup_b1']:.2f}x",
            "same channels as l1": "-" if st["same_channels_as_l1"] is None else f"{st['same_channels_as_l1']:.2f}"}


def _shown(path: Path, root: Optional[Path]) -> str:
    """A results folder as the table should name it: relative to ``root`` (the repository) when inside it."""
    try:
        return str(Path(path).resolve().relative_to(root)) if root else str(path)
    except ValueError:
        return str(path)


def overlap_with_l1(rows: List[Dict[str, Any]]) -> Dict[tuple, float]:
    """Per (criterion, target): mean over layers and seeds of |removed & removed_by_l1| / |removed|."""
    l1 = {(r["target"], r["seed"], r["model"], r["data"]): r.get("removed", {}) for r in rows if r["criterion"] == "l1"}
    out: Dict[tuple, List[float]] = {}
    for r in rows:
        ref = l1.get((r["target"], r["seed"], r["model"], r["data"]))
        if not ref or "removed" not in r:
            continue
        for layer, rem in r["removed"].items():
            if rem and layer in ref:
                out.setdefault((r["criterion"], r["target"]), []).append(len(set(rem) & set(ref[layer])) / len(rem))
    return {k: statistics.mean(v) for k, v in out.items()}


def _layer_order(name: str) -> tuple:
    """features.10 after features.9: numeric parts compare as numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in name.split("."))


def kept_per_layer(rows: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per target, where the criteria disagree: the channels each kept per layer (first seed), with the layers'
    original sizes, layers in graph order: ``{target: {"seed", "layers", "sizes", "kept": {criterion: [...]}}}``."""
    out: Dict[str, Dict[str, Any]] = {}
    pruned = [r for r in rows if "kept" in r]
    if not pruned:
        return out
    seed = min(r["seed"] for r in pruned)
    for target in sorted({r["target"] for r in pruned}):
        rs = sorted((r for r in pruned if r["target"] == target and r["seed"] == seed), key=lambda r: r["criterion"])
        if len({json.dumps(r["kept"], sort_keys=True) for r in rs}) <= 1:
            continue
        sizes: Dict[str, int] = {}  # a layer a criterion left whole is absent from its plan
        for r in sorted(rs, key=lambda r: -len(r.get("sizes", {}))):
            for k, v in r.get("sizes", {}).items():
                sizes.setdefault(k, v)
        layers = sorted(sizes, key=_layer_order)
        out[target] = {"seed": seed, "layers": layers, "sizes": [sizes[k] for k in layers],
                       "kept": {r["criterion"]: [r["kept"].get(k, sizes[k]) for k in layers] for r in rs}}
    return out


def kept_tables(rows: List[Dict[str, Any]]) -> List[str]:
    """Channels each criterion kept per layer (first seed), one Markdown table per target, when the criteria
    disagree."""
    out: List[str] = []
    for target, k in kept_per_layer(rows).items():
        table = [{"criterion": "(original)", **dict(zip(k["layers"], k["sizes"]))}]
        table += [{"criterion": crit, **dict(zip(k["layers"], kept))} for crit, kept in k["kept"].items()]
        out += [f"## Channels kept per layer ({target}, seed {k['seed']})", "", markdown_table(table), ""]
    return out


def matching_rows(opts: Any) -> List[Dict[str, Any]]:
    """Every cell file in ``opts.results`` made with these settings, for these criteria and targets."""
    rows = [json.loads(p.read_text()) for p in sorted(Path(opts.results).glob("*.json"))]
    return [r for r in rows if r["model"] == opts.model and r["data"] == data_name(opts)
            and r["image_size"] == opts.image_size and r["base_epochs"] == opts.base_epochs
            and r["finetune_epochs"] == opts.finetune_epochs and r["criterion"] in ["unpruned"] + list(opts.criteria)
            and bool(r.get("distill")) == opts.distill and r.get("finetune_lr", FINETUNE_LR) == opts.finetune_lr
            and r["target"] in ["none"] + list(opts.reduce)
            and (r["criterion"] == "unpruned" or r.get("scope", "uniform") == opts.scope)]


def write_report(opts: Any, written_by: str = "`prunekit compare`", root: Optional[Path] = None,
                 settings: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """``<docs>/<name>_results.md``, ``<name>_tradeoff.png``, ``<name>_report.json`` (the numbers) and
    ``<name>_report.html`` (one self-contained page) from the cell files; returns the rows, the table and the paths
    (empty when no cell is finished yet). ``settings``: the report's settings items (``run_settings``)."""
    rows = matching_rows(opts)
    if not rows:
        return {"rows": [], "table": [], "markdown": "no results yet"}
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["criterion"], r["target"], r["base_epochs"], r["finetune_epochs"]), []).append(r)
    overlap = overlap_with_l1(rows)
    stats = [group_stats(crit, target, rs, overlap.get((crit, target)))
             for (crit, target, _, _), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
    table = [table_row(st) for st in stats]
    series: Dict[str, List[tuple]] = {}
    for st in stats:
        point = (st["macs_reduction_pct"], st["test_acc_mean"], st["test_acc_sd"])
        series.setdefault(st["criterion"], []).append(point)
    md = [f"# Criteria comparison: {opts.model} on {data_name(opts)} ({opts.image_size} px, {opts.scope} scope)", "",
          f"Written by {written_by} from `{_shown(opts.results, root)}/*.json` (one file per cell). "
          "Test split; mean ± sample std over seeds (one seed: `(n=1)`, no spread). "
          "`before ft`: test accuracy right after pruning and "
          f"re-estimating BN statistics on {opts.recal_batches} training batches. "
          "`val before ft`: validation accuracy right after pruning (what option choices are made on). "
          "`same channels as l1`: fraction of removed channels that L1 removes too (per layer, averaged). "
          "Latency: median (IQR) of batch-1 CPU forwards, median over seeds; `speedup b1`: the unpruned base's "
          "latency over the cell's, both timed together (interleaved runs), so machine load hits both alike. "
          f"Budget: base {opts.base_epochs} epochs, then {opts.finetune_epochs} fine-tuning epochs (peak lr "
          f"{opts.finetune_lr:g}, cosine) for every row "
          f"(unpruned included){', with knowledge distillation from the unpruned base' if opts.distill else ''}; "
          f"`attention` (mean gate) and `attention_scale` (mean gate x |BN gamma|) also train only their SE modules "
          f"for {opts.attention_epochs} epoch(s) ({opts.attention_mode}) before pruning"
          + (f"; `attention_budget` puts their gate penalty ({opts.attention_sparsity:g}) on only as many channels "
             "per layer as the plan removes." if any(r["criterion"] == "attention_budget" for r in rows) else "."),
          "",
          markdown_table(table), ""]
    md += kept_tables(rows)
    att = [r for r in rows if r["criterion"] in ATTENTION_FORMS and r.get("extra", {}).get("scores")]
    if att:
        r = att[0]
        md += [f"## Attention scores per layer ({r['target']}, seed {r['seed']})", "",
               "Mean gate per channel over the training images (gate in (0, 2), 1 = unchanged); `fold_spread` = "
               "mean std/mean of the gate across images (how approximate folding the mean is). "
               f"Removal: {sorted(set(r['extra']['removal'].values()))}; largest logit change from folding on "
               f"one batch: {r['extra']['fold_logit_max_abs']:.3g}.", "",
               markdown_table([{"layer": k, **{n: round(v, 3) for n, v in s.items()}}
                               for k, s in r["extra"]["scores"].items()]), ""]
    docs = Path(opts.docs)
    docs.mkdir(parents=True, exist_ok=True)
    paths = {"markdown_path": docs / f"{opts.name}_results.md", "plot": docs / f"{opts.name}_tradeoff.png"}
    paths["markdown_path"].write_text("\n".join(md))
    unpruned = series.pop("unpruned", None)
    if unpruned:
        xs = sorted({round(p[0]) for s in series.values() for p in s} | {0})
        series["unpruned"] = [(x_, unpruned[0][1], None) for x_ in xs]
    import matplotlib
    from cycler import cycler

    matplotlib.rcParams["axes.prop_cycle"] = cycler(color=matplotlib.colormaps["tab20"].colors)  # > 10 series
    plot_tradeoff(series, paths["plot"], xlabel="MACs reduction (%)", ylabel="test accuracy (%)",
                  title=f"{opts.model}, {data_name(opts)} {opts.image_size}px")
    record = {"title": md[0][2:], "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "prunekit_version": __version__, "protocol": md[2], "rows": stats, "kept": kept_per_layer(rows),
              "curves": finetune_curves(rows), "cells": len(rows), **(settings or {})}
    paths.update(json_path=docs / f"{opts.name}_report.json", html_path=docs / f"{opts.name}_report.html")
    write_json_record(paths["json_path"], record)
    with atomic_path(paths["html_path"]) as tmp:
        tmp.write_text(render_compare_html(json.loads(paths["json_path"].read_text()), paths["plot"].read_bytes()),
                       encoding="utf-8")
    return {"rows": rows, "table": table, "markdown": "\n".join(md), **{k: str(v) for k, v in paths.items()}}


def finetune_curves(rows: List[Dict[str, Any]]) -> Dict[str, Dict[str, List[Dict[str, Any]]]]:
    """Per target, each criterion's fine-tuning epochs (first seed), the unpruned reference's beside them, for the
    report's curves."""
    seed = min(r["seed"] for r in rows)
    first = [r for r in sorted(rows, key=lambda r: r["criterion"]) if r["seed"] == seed and r.get("history")]
    reference = {r["criterion"]: r["history"] for r in first if r["target"] == "none"}
    targets = sorted({r["target"] for r in first if r["target"] != "none"}) or (["none"] if reference else [])
    out: Dict[str, Dict[str, List[Dict[str, Any]]]] = {t: dict(reference) for t in targets}
    for r in first:
        if r["target"] != "none":
            out[r["target"]][r["criterion"]] = r["history"]
    return out
