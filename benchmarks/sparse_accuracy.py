"""Accuracy for the space: UC Merced accuracy vs unstructured sparsity (layer-wise, global, N:M), with fine-tuning,
and the accuracy cost and file size of each value format of the compressed checkpoint.

    .venv/bin/python benchmarks/sparse_accuracy.py                       # vgg_small at 64 px
    .venv/bin/python benchmarks/sparse_accuracy.py --model resnet18 --size 64 --base-epochs 12

One dense model is trained once (or given with ``--base``) (resumable: ``--work`` keeps its checkpoint), then each (method, sparsity) starts
from a copy of it: prune, evaluate, fine-tune ``--ft-epochs`` with :class:`MaskCallback`, evaluate, and check every
pruned weight is still exactly 0. Each fine-tuned model is then saved in every value format and reloaded through
``prunekit.load`` to measure the accuracy each format costs. Writes a JSON table (``--out``, under results/sparse/)
and its plot (``--plot``, default docs/sparse/<name of --out>.png).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import prunekit  # noqa: E402
from prunekit.data import load_dataset  # noqa: E402
from prunekit.sparse import magnitude_prune, masked_sparsity, nm_prune, parse_nm  # noqa: E402
from prunekit.train import MaskCallback  # noqa: E402
from prunekit.train.config import TrainConfig  # noqa: E402
from prunekit.train.loop import evaluate, fit  # noqa: E402

FORMATS = ("fp32", "fp16", "int8", "kmeans4")


def prune(model: torch.nn.Module, method: str, sparsity: float | str):
    if method == "nm":
        return nm_prune(model, *parse_nm(str(sparsity)))
    if method in ("lamp", "erk"):  # layer-adaptive allocation of one global budget
        return magnitude_prune(model, float(sparsity), scope="global", allocation=method)
    return magnitude_prune(model, float(sparsity), scope="layer" if method == "layer" else "global")


def format_costs(model: torch.nn.Module, ds, masks) -> Dict[str, Dict[str, Any]]:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain.safetensors"
        prunekit.save(model, plain)
        out["safetensors"] = {"bytes": plain.stat().st_size}
        for values in FORMATS:
            path = Path(tmp) / f"{values}.safetensors"
            prunekit.save(model, path, codec={"values": values})
            back = prunekit.load(path)
            out[values] = {"bytes": path.stat().st_size,
                           "accuracy": evaluate(back, ds, "test", device="cpu")["accuracy"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data/ucmerced")
    parser.add_argument("--model", default="vgg_small")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--base-epochs", type=int, default=20)
    parser.add_argument("--ft-epochs", type=int, default=3)
    parser.add_argument("--sparsities", default="0,0.5,0.7,0.9,0.95,0.98",
                        help="0 is the control: the same fine-tuning with nothing pruned")
    parser.add_argument("--methods", default="layer,global,nm", help="any of layer, global, lamp, erk, nm")
    parser.add_argument("--merge", action="store_true",
                        help="add the new rows to an existing --out file (replacing rows of the same method and level)")
    parser.add_argument("--nm", default="2:4,1:4,1:8", help="N:M patterns for the nm method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base", default=None, help="start from this trained checkpoint instead of training")
    parser.add_argument("--work", default="runs/sparse_accuracy")
    parser.add_argument("--out", default="results/sparse/sparse_accuracy.json")
    parser.add_argument("--plot", default=None, help="the plot (default: docs/sparse/<name of --out>.png)")
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        sys.exit(f"no data at {args.data}; pass --data DIR (ImageFolder layout)")
    torch.manual_seed(args.seed)
    ds = load_dataset(args.data, image_size=args.size, seed=args.seed)
    work = Path(args.work) / f"{args.model}_{args.size}"
    base_cfg = TrainConfig(epochs=args.base_epochs, seed=args.seed)
    model = prunekit.create_model(args.model, num_classes=len(ds.classes))
    t0 = time.perf_counter()
    if args.base:
        base = prunekit.load(args.base).eval()
    else:
        base = fit(model, ds, base_cfg, device="cpu", out_dir=work / "base", progress=False).model.eval()
    base_acc = evaluate(base, ds, "test", device="cpu")["accuracy"]
    print(f"dense {args.model}@{args.size}: test accuracy {base_acc:.4f} ({time.perf_counter() - t0:.0f} s)",
          flush=True)
    rows: List[Dict[str, Any]] = [{"method": "dense", "sparsity": 0.0, "accuracy_pruned": base_acc,
                                   "accuracy_finetuned": base_acc, "formats": format_costs(base, ds, None)}]
    ft_cfg = TrainConfig(epochs=args.ft_epochs, seed=args.seed, lr=0.01, warmup_epochs=0)
    for method in args.methods.split(","):
        levels = args.nm.split(",") if method == "nm" else args.sparsities.split(",")
        for level in levels:
            model = copy.deepcopy(base)
            masks = prune(model, method, level)
            pruned_acc = evaluate(model, ds, "test", device="cpu")["accuracy"]
            tuned = fit(model, ds, ft_cfg, device="cpu", callbacks=[MaskCallback(masks)], progress=False,
                        out_dir=work / f"{method}_{level}".replace(":", "-")).model.eval()
            kept_zero = masked_sparsity(tuned, masks).pruned == masks.sparsity().pruned
            row = {"method": method, "level": level, "sparsity": masks.sparsity().overall,
                   "accuracy_pruned": pruned_acc, "accuracy_finetuned": evaluate(tuned, ds, "test", device="cpu")[
                       "accuracy"], "pruned_weights_still_zero": kept_zero,
                   "formats": format_costs(tuned, ds, masks)}
            rows.append(row)
            f = row["formats"]
            print(f"{method:<6} {level:>5} sparsity {row['sparsity']:.3f}: acc pruned {pruned_acc:.4f} -> "
                  f"fine-tuned {row['accuracy_finetuned']:.4f} | " + " ".join(
                      f"{v} {f[v]['accuracy']:.4f}/{f[v]['bytes'] / 1e3:.0f}kB" for v in FORMATS), flush=True)
    if args.merge and Path(args.out).is_file():
        added = [r for r in rows if r["method"] != "dense"]  # the file keeps its own dense (base) row first
        new = {(r["method"], r.get("level")) for r in added}
        old = json.loads(Path(args.out).read_text())["rows"]
        rows = [r for r in old if (r["method"], r.get("level")) not in new] + added
    out = {"model": args.model, "size": args.size, "base": args.base, "base_epochs": args.base_epochs,
           "ft_epochs": args.ft_epochs, "seed": args.seed, "classes": len(ds.classes), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    plot(out, Path(args.plot or Path("docs/sparse") / Path(args.out).with_suffix(".png").name))
    print(f"wrote {args.out}")


def plot(out: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    control = [r for r in out["rows"] if r["method"] != "dense" and r["sparsity"] == 0.0]
    dense = (control or out["rows"][:1])[0]["accuracy_finetuned"]
    for method, marker in (("layer", "o"), ("global", "s"), ("lamp", "D"), ("erk", "v"), ("nm", "^")):
        rows = [r for r in out["rows"] if r["method"] == method and r["sparsity"] > 0]
        if rows:
            xs = [r["sparsity"] for r in rows]
            axes[0].plot(xs, [r["accuracy_finetuned"] for r in rows], marker=marker, label=f"{method} fine-tuned")
            axes[0].plot(xs, [r["accuracy_pruned"] for r in rows], marker=marker, ls=":", alpha=0.6,
                         label=f"{method} no fine-tune")
    axes[0].axhline(dense, color="k", lw=0.8, label="dense, same fine-tuning" if control else "dense")
    axes[0].axhline(out["rows"][0]["accuracy_pruned"], color="k", lw=0.8, ls=":", label="dense starting point")
    axes[0].set(xlabel="sparsity (fraction of targeted weights removed)", ylabel="test accuracy",
                title=f"{out['model']} @ {out['size']} px, UC Merced")
    axes[0].legend(fontsize=7)
    rows = [r for r in out["rows"] if r["method"] in ("global", "dense")]
    for values in FORMATS:
        axes[1].plot([r["formats"]["safetensors"]["bytes"] / r["formats"][values]["bytes"] for r in rows],
                     [r["formats"][values]["accuracy"] for r in rows], marker="o", label=values)
    axes[1].set(xscale="log", xlabel="file size reduction vs dense safetensors (x)", ylabel="test accuracy",
                title="global magnitude: value formats")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
