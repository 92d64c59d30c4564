"""The comparison's table and plot, rebuilt from every cell file of the same settings (mean ± sd over seeds)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..report import plot_tradeoff
from ..report.tables import markdown_table
from .cells import ATTENTION_FORMS, FINETUNE_LR, data_name


def _median_or_dash(vals: List[Any]) -> Any:
    vals = [v for v in vals if v is not None]
    return round(statistics.median(vals), 2) if vals else "-"


def _mean_sd(vals: List[float]) -> tuple:
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _mean_sd_text(vals: List[float]) -> str:
    return "-" if not vals else "{:.2f} ± {:.2f}".format(*_mean_sd(vals))


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


def kept_tables(rows: List[Dict[str, Any]]) -> List[str]:
    """Channels each criterion kept per layer (first seed), one table per target, when the criteria disagree."""
    out: List[str] = []
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
        table = [{"criterion": "(original)", **{k: sizes[k] for k in layers}}]
        table += [{"criterion": r["criterion"], **{k: r["kept"].get(k, sizes[k]) for k in layers}} for r in rs]
        out += [f"## Channels kept per layer ({target}, seed {seed})", "", markdown_table(table), ""]
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


def write_report(opts: Any, written_by: str = "`prunekit compare`", root: Optional[Path] = None) -> Dict[str, Any]:
    """``<docs>/<name>_results.md`` and ``<name>_tradeoff.png`` from the cell files; returns the rows, the table
    and the paths (empty when no cell is finished yet)."""
    rows = matching_rows(opts)
    if not rows:
        return {"rows": [], "table": [], "markdown": "no results yet"}
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["criterion"], r["target"], r["base_epochs"], r["finetune_epochs"]), []).append(r)
    overlap = overlap_with_l1(rows)
    table, series = [], {}
    for (crit, target, be, fe), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        acc, sd = _mean_sd([100 * r["test_acc"] for r in rs])
        before = [100 * r["test_acc_before_ft"] for r in rs if "test_acc_before_ft" in r]
        red, _ = _mean_sd([100 * r["macs_reduction"] for r in rs])
        pred, _ = _mean_sd([100 * r["params_reduction"] for r in rs])
        val_before = [100 * r["val_acc_before_ft"] for r in rs if "val_acc_before_ft" in r]
        table.append({"criterion": crit, "target": target, "epochs (base+ft)": f"{be}+{fe}", "seeds": len(rs),
                      "test acc %": f"{acc:.2f} ± {sd:.2f}",
                      "val acc %": _mean_sd_text([100 * r["val_acc"] for r in rs if r.get("val_acc") is not None]),
                      "before ft %": f"{statistics.mean(before):.2f}" if before else "-",
                      "val before ft %": f"{statistics.mean(val_before):.2f}" if val_before else "-",
                      "params": int(statistics.mean(r["params"] for r in rs)),
                      "params red. %": round(pred, 1),
                      "MACs (M)": round(statistics.mean(r["macs"] for r in rs) / 1e6, 2), "MACs red. %": round(red, 1),
                      "latency b1 ms": _median_or_dash([r["latency_ms_b1"] for r in rs]),
                      "same channels as l1": f"{overlap[(crit, target)]:.2f}" if (crit, target) in overlap else "-"})
        series.setdefault(crit, []).append((red, acc, sd if len(rs) > 1 else None))
    md = [f"# Criteria comparison: {opts.model} on {data_name(opts)} ({opts.image_size} px, {opts.scope} scope)", "",
          f"Written by {written_by} from `{_shown(opts.results, root)}/*.json` (one file per cell). "
          "Test split; mean ± sample std over seeds. `before ft`: test accuracy right after pruning and "
          f"re-estimating BN statistics on {opts.bn_recal_batches} training batches. "
          "`val before ft`: validation accuracy right after pruning (what option choices are made on). "
          "`same channels as l1`: fraction of removed channels that L1 removes too (per layer, averaged). "
          "Latency: median of batch-1 CPU forwards on a shared, busy machine (indicative only). "
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
    return {"rows": rows, "table": table, "markdown": "\n".join(md), **{k: str(v) for k, v in paths.items()}}
