"""Which channel criterion keeps the most accuracy at a given MACs/params reduction, same budget for all.

    .venv/bin/python benchmarks/compare_criteria.py                                  # embedded data, defaults
    .venv/bin/python benchmarks/compare_criteria.py --data ../shared/data/ucmerced --model vgg_small \\
        --base-epochs 30 --finetune-epochs 10 --reduce macs=0.3 macs=0.5 macs=0.7 --seeds 0 1 2
    .venv/bin/python benchmarks/compare_criteria.py --model vgg_tiny --base-epochs 8 --finetune-epochs 3 \\
        --reduce macs=0.5 --seeds 0                                                  # quick check
    .venv/bin/python benchmarks/compare_criteria.py --finetune-epochs 0 --name pfam_ablation \\
        --criteria pfam pfam@temperature=0.02 pfam@temperature=1000 pfam@embed=fmap    # option ablation

Protocol: per seed, one unpruned model is trained for ``--base-epochs`` (cached under ``runs/compare_criteria``).
Each cell (criterion x reduction x seed) copies it, finds the channel ratio that reaches the reduction
(``prunekit.targets.search_ratio``, uniform per-layer ratio, so every criterion removes the same number of channels
per layer and only *which* channels differs), prunes with the criterion (data-driven criteria get
``--calib-batches`` training batches; ``attention`` trains SE modules for ``--attention-epochs`` with the backbone
frozen, then folds them away), re-estimates BatchNorm statistics on ``--bn-recal-batches`` training batches (the
same for every criterion), measures test accuracy before fine-tuning, fine-tunes ``--finetune-epochs`` and
measures again. The ``unpruned`` row is the base model fine-tuned for the same epochs (same total budget).

Every cell writes ``docs/results/criteria/<key>.json`` (key = model, data, image size, criterion, reduction, seed,
epochs); a rerun skips finished cells. The table (``docs/criteria_results.md``) and plot
(``docs/criteria_tradeoff.png``) are rebuilt from every JSON found. Settings are chosen on the validation split;
the table reports the test split.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import prunekit  # noqa: E402
import prunekit.importance.extra  # noqa: E402,F401
from prunekit.apply.structured import apply_plan  # noqa: E402
from prunekit.data import calibration_batches, load_dataset  # noqa: E402
from prunekit.importance.pfam import variant_from_spec  # noqa: E402
from prunekit.measure import count_macs, count_params  # noqa: E402
from prunekit.measure.latency import measure_latency  # noqa: E402
from prunekit.pipeline import data_section  # noqa: E402
from prunekit.plan import make_plan  # noqa: E402
from prunekit.report import plot_tradeoff  # noqa: E402
from prunekit.report.tables import markdown_table  # noqa: E402
from prunekit.runtime import atomic_path, seed_everything  # noqa: E402
from prunekit.targets import parse_reduce, search_ratio  # noqa: E402
from prunekit.train import TrainConfig, evaluate, fit  # noqa: E402

CRITERIA = ["l1", "l2", "fpgm", "bn_scale", "taylor", "mean_activation", "apoz", "pfam", "pfam_fmap", "attention",
            "random"]
ATTENTION_FORMS = {"attention": "gate", "attention_scale": "gate_x_scale",  # criterion -> attention_prune(score=)
                   "attention_gm": "gate_gm", "attention_scale_gm": "gate_x_scale_gm"}
RESULTS = REPO / "docs" / "results" / "criteria"
WORK = REPO / "runs" / "compare_criteria"
FINETUNE_LR = 0.01  # cells at another fine-tuning lr carry it in their key and row


def parse_args(argv: List[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="class-per-folder dataset (default: the embedded 64 px subset)")
    p.add_argument("--model", default="vgg_tiny")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--criteria", nargs="*", default=CRITERIA, help="none: only the unpruned reference")
    p.add_argument("--scope", choices=["uniform", "global"], default="uniform",
                   help="uniform: same ratio in every layer; global: the criterion's scores set per-layer counts")
    p.add_argument("--reduce", nargs="+", default=["macs=0.5"], help="targets such as macs=0.5 params=0.4 macs=2x")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--base-epochs", type=int, default=8)
    p.add_argument("--base-seed", type=int, default=None,
                   help="prune every seed from the base model of this seed (seeds then vary pruning and "
                        "fine-tuning only; saves training one base per seed)")
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--finetune-lr", type=float, default=FINETUNE_LR,
                   help="peak lr of the cosine fine-tuning (0.05 = the base training's peak: lr rewinding)")
    p.add_argument("--distill", action="store_true",
                   help="fine-tune with knowledge distillation from the unpruned base (prunekit.train.distill)")
    p.add_argument("--attention-epochs", type=int, default=1)
    p.add_argument("--attention-sparsity", type=float, default=1e-3)
    p.add_argument("--attention-lr", type=float, default=0.5, help="lr for the SE modules (backbone frozen)")
    p.add_argument("--attention-mode", choices=["frozen", "joint"], default="frozen",
                   help="train the SE modules alone (frozen backbone) or together with the backbone")
    p.add_argument("--calib-batches", type=int, default=4)
    p.add_argument("--bn-recal-batches", type=int, default=8,
                   help="after pruning, re-estimate BN statistics on this many training batches (0: off)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the CPU is shared)")
    p.add_argument("--device", default="cpu", help="where training, BN re-estimation and evaluation run (cpu, "
                                                   "cuda); plans are made on the CPU either way")
    p.add_argument("--no-latency", dest="latency", action="store_false",
                   help="skip the batch-1 CPU latency (meaningless on a machine shared by parallel jobs)")
    p.add_argument("--results", type=Path, default=RESULTS, help="one JSON per cell here")
    p.add_argument("--docs", type=Path, default=REPO / "docs", help="table and plot go here")
    p.add_argument("--work", type=Path, default=WORK, help="cached base models")
    p.add_argument("--name", default=None, help="docs/<name>_results.md and docs/<name>_tradeoff.png "
                   "(default: criteria, or criteria_global with --scope global)")
    p.add_argument("--skip-unpruned", action="store_true",
                   help="do not run the unpruned reference cells (another process of the same sweep runs them)")
    p.add_argument("--report-only", action="store_true", help="rebuild table and plot from existing JSON files")
    return p.parse_args(argv)


def data_name(args: argparse.Namespace) -> str:
    return "embedded" if args.data is None else Path(args.data).resolve().name


def model_tag(args: argparse.Namespace) -> str:
    """The model name as a file-name part (torchvision/resnet18 -> torchvision_resnet18)."""
    return args.model.replace("/", "_")


def key_of(args: argparse.Namespace, criterion: str, target: str, seed: int) -> str:
    crit = criterion.replace("@", "_").replace("=", "").replace(",", "_")
    scope = "-global" if args.scope == "global" and criterion != "unpruned" else ""
    model = model_tag(args)
    return (f"{model}-{data_name(args)}{args.image_size}-{crit}-{target.replace('=', '')}-s{seed}"
            f"-b{args.base_epochs}-f{args.finetune_epochs}{'-kd' if args.distill else ''}{scope}"
            f"{'' if args.finetune_lr == FINETUNE_LR else f'-lr{args.finetune_lr:g}'}"
            f"{'' if args.base_seed is None else f'-bs{args.base_seed}'}")


def base_model(args: argparse.Namespace, data: Any, seed: int) -> torch.nn.Module:
    """The unpruned model of this seed, trained once and cached as a safetensors checkpoint."""
    stem = f"base-{model_tag(args)}-{data_name(args)}{args.image_size}-s{seed}-b{args.base_epochs}"
    path = args.work / f"{stem}.safetensors"
    if path.is_file():
        return prunekit.load(path)
    seed_everything(seed)
    model = prunekit.create_model(args.model, len(data.classes))
    cfg = TrainConfig(epochs=args.base_epochs, batch_size=args.batch_size, seed=seed)
    model = fit(model, data, cfg, device=args.device, out_dir=args.work / f"train-{path.stem}",
                progress=False).model.cpu()
    prunekit.save(model, path, data=data_section(data))  # its split too: prunekit prune --model reuses it
    return model


def calibration(data: Any, n: int, device: Any = "cpu") -> List[Any]:
    return calibration_batches(data, n, device=device)


def prune(args: argparse.Namespace, model: torch.nn.Module, data: Any, criterion: str, target: str, seed: int,
          x: torch.Tensor, ratios: Dict[str, Any]) -> Dict[str, Any]:
    """Prune ``model`` in place to ``target``; returns the plan, the make_plan arguments and extras to record.

    Uniform scope: one ratio per target for every criterion (searched once: counts do not depend on scores).
    Global scope: each criterion's own scores decide the per-layer counts, so the ratio is searched per criterion.
    """
    reduce = parse_reduce(target)
    if args.scope == "uniform" and target not in ratios:
        ratios[target] = search_ratio(model, x, reduce).plan_kwargs()
    if criterion in ATTENTION_FORMS:
        from prunekit.attention import attention_prune

        cfg = TrainConfig(batch_size=args.batch_size, lr=args.attention_lr, warmup_epochs=0, seed=seed)
        how = dict(ratios[target]) if args.scope == "uniform" else {"reduce": reduce, "scope": "global"}
        _, plan, report = attention_prune(model, data, x, attention_epochs=args.attention_epochs,
                                          mode=args.attention_mode,
                                          sparsity=args.attention_sparsity, score=ATTENTION_FORMS[criterion],
                                          train_cfg=cfg, device=args.device,
                                          max_batches=None, seed=seed, **how)
        extra = {k: report[k] for k in ("removal", "score", "scores", "fold_logit_max_abs",
                                        "top1_agreement_after_removal", "ratio_search")}
        return {"plan": plan, "plan_kwargs": {k: v for k, v in how.items() if k != "reduce"}, "extra": extra}
    calib = calibration(data, args.calib_batches)
    name = variant_from_spec(criterion)
    if args.scope == "uniform":
        how = dict(ratios[target])
    else:
        found = search_ratio(model, x, reduce, criterion=name, scope="global", data=calib, seed=seed)
        how = {**found.plan_kwargs(), "scope": "global"}
    plan, graph = make_plan(model, x, criterion=name, data=calib, seed=seed, return_graph=True, **how)
    apply_plan(model, plan, graph=graph)
    return {"plan": plan, "plan_kwargs": how, "extra": {}}


def run_cell(args: argparse.Namespace, data: Any, criterion: str, target: str, seed: int,
             ratios: Dict[str, Any]) -> Dict[str, Any]:
    x = torch.zeros(1, 3, args.image_size, args.image_size)
    base = base_model(args, data, seed if args.base_seed is None else args.base_seed)
    shape = (3, args.image_size, args.image_size)
    base_params, base_macs = count_params(base), count_macs(base, shape)[0]
    model = copy.deepcopy(base)
    t0 = time.perf_counter()
    row: Dict[str, Any] = {"model": args.model, "data": data_name(args), "image_size": args.image_size,
                           "criterion": criterion, "target": target, "seed": seed, "base_epochs": args.base_epochs,
                           "finetune_epochs": args.finetune_epochs, "finetune_lr": args.finetune_lr,
                           "distill": args.distill, "scope": args.scope,
                           "base_seed": seed if args.base_seed is None else args.base_seed}
    if criterion != "unpruned":
        seed_everything(seed)
        decided = prune(args, model, data, criterion, target, seed, x, ratios)
        plan = decided["plan"]
        row.update(plan_kwargs=decided["plan_kwargs"], extra=decided["extra"],
                   removed={g.module: g.remove for g in plan.groups},
                   kept={g.module: g.size - len(g.remove) for g in plan.groups},
                   sizes={g.module: g.size for g in plan.groups})
        model.to(args.device)
        recalibrate_bn(model, data, args.bn_recal_batches)
        row["bn_recal_batches"] = args.bn_recal_batches
        row["test_acc_before_ft"] = evaluate(model, data, "test")["accuracy"]
        if len(data.splits.get("val", [])):
            row["val_acc_before_ft"] = evaluate(model, data, "val")["accuracy"]
    row["prune_seconds"] = round(time.perf_counter() - t0, 2)
    cfg = TrainConfig(epochs=args.finetune_epochs, batch_size=args.batch_size, lr=args.finetune_lr, warmup_epochs=0,
                      seed=seed)
    model = fit(model.to(args.device), data, cfg, device=args.device, progress=False,
                teacher=base if args.distill else None).model
    row["val_acc"] = evaluate(model, data, "val")["accuracy"] if len(data.splits.get("val", [])) else None
    row["test_acc"] = evaluate(model, data, "test")["accuracy"]
    model = model.cpu()
    row["params"], row["macs"] = count_params(model), count_macs(model, shape)[0]
    row["params_reduction"] = 1 - row["params"] / base_params
    row["macs_reduction"] = 1 - row["macs"] / base_macs
    row["latency_ms_b1"] = measure_latency(model, shape, (1,), device="cpu", max_seconds=2.0)[0][1] if args.latency \
        else None
    row["device"] = torch.device(args.device).type
    row["threads"] = torch.get_num_threads()
    return row


def recalibrate_bn(model: torch.nn.Module, data: Any, batches: int) -> None:
    """Removing input channels shifts every BN's input statistics; re-estimate them (same for all criteria)."""
    if batches:
        from prunekit.train.bn import recalibrate_bn as recalibrate

        recalibrate(model, calibration(data, batches, next(model.parameters()).device))
        model.eval()


def write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, default=str))


def _median_or_dash(vals: List[Any]) -> Any:
    vals = [v for v in vals if v is not None]
    return round(statistics.median(vals), 2) if vals else "-"


def _mean_sd(vals: List[float]) -> tuple:
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _shown(path: Path) -> str:
    """A results folder as the docs should name it: relative to the repo when inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _mean_sd_text(vals: List[float]) -> str:
    return "-" if not vals else "{:.2f} ± {:.2f}".format(*_mean_sd(vals))


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


def report(args: argparse.Namespace) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(args.results.glob("*.json"))]
    rows = [r for r in rows if r["model"] == args.model and r["data"] == data_name(args)
            and r["image_size"] == args.image_size and r["base_epochs"] == args.base_epochs
            and r["finetune_epochs"] == args.finetune_epochs and r["criterion"] in ["unpruned"] + args.criteria
            and bool(r.get("distill")) == args.distill and r.get("finetune_lr", FINETUNE_LR) == args.finetune_lr
            and r["target"] in ["none"] + args.reduce
            and (r["criterion"] == "unpruned" or r.get("scope", "uniform") == args.scope)]
    if not rows:
        print("no results yet")
        return
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
    md = [f"# Criteria comparison: {args.model} on {data_name(args)} ({args.image_size} px, {args.scope} scope)", "",
          f"Written by `benchmarks/compare_criteria.py` from `{_shown(args.results)}/*.json` (one file per cell). "
          "Test split; mean ± sample std over seeds. `before ft`: test accuracy right after pruning and "
          f"re-estimating BN statistics on {args.bn_recal_batches} training batches. "
          "`val before ft`: validation accuracy right after pruning (what option choices are made on). "
          "`same channels as l1`: fraction of removed channels that L1 removes too (per layer, averaged). "
          "Latency: median of batch-1 CPU forwards on a shared, busy machine (indicative only). "
          f"Budget: base {args.base_epochs} epochs, then {args.finetune_epochs} fine-tuning epochs (peak lr "
          f"{args.finetune_lr:g}, cosine) for every row "
          f"(unpruned included){', with knowledge distillation from the unpruned base' if args.distill else ''}; "
          f"`attention` (mean gate) and `attention_scale` (mean gate x |BN gamma|) also train only their SE modules "
          f"for {args.attention_epochs} epoch(s) ({args.attention_mode}) before pruning.", "",
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
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / f"{args.name}_results.md").write_text("\n".join(md))
    unpruned = series.pop("unpruned", None)
    if unpruned:
        xs = sorted({round(p[0]) for s in series.values() for p in s} | {0})
        series["unpruned"] = [(x_, unpruned[0][1], None) for x_ in xs]
    import matplotlib
    from cycler import cycler

    matplotlib.rcParams["axes.prop_cycle"] = cycler(color=matplotlib.colormaps["tab20"].colors)  # > 10 series
    plot_tradeoff(series, args.docs / f"{args.name}_tradeoff.png", xlabel="MACs reduction (%)",
                  ylabel="test accuracy (%)", title=f"{args.model}, {data_name(args)} {args.image_size}px")
    print("\n".join(md))


def main(argv: List[str] | None = None) -> None:
    args = parse_args(argv)
    args.name = args.name or ("criteria_global" if args.scope == "global" else "criteria")
    torch.set_num_threads(args.threads)
    for t in args.reduce:
        parse_reduce(t)
    if not args.report_only:
        data = load_dataset(args.data, image_size=args.image_size)
        ratios: Dict[str, Any] = {}
        cells = [] if args.skip_unpruned else [("unpruned", "none", s) for s in args.seeds]
        cells += [(c, t, s) for s in args.seeds for t in args.reduce for c in args.criteria]
        for crit, target, seed in cells:
            path = args.results / f"{key_of(args, crit, target, seed)}.json"
            if path.is_file():
                continue
            t0 = time.perf_counter()
            row = run_cell(args, data, crit, target, seed, ratios)
            row["seconds"] = round(time.perf_counter() - t0, 1)
            write_json(path, row)
            print(f"{path.stem}: test {row['test_acc']:.4f} (before ft {row.get('test_acc_before_ft', '-')}), "
                  f"MACs -{row['macs_reduction']:.1%}, {row['seconds']} s", flush=True)
    report(args)


if __name__ == "__main__":
    main()
