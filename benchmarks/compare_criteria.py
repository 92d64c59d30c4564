"""Which channel criterion keeps the most accuracy at a given MACs/params reduction, same budget for all.

    .venv/bin/python benchmarks/compare_criteria.py                                  # embedded data, defaults
    .venv/bin/python benchmarks/compare_criteria.py --data ../shared/data/ucmerced --model vgg_small \\
        --base-epochs 30 --finetune-epochs 10 --reduce macs=0.3 macs=0.5 macs=0.7 --seeds 0 1 2
    .venv/bin/python benchmarks/compare_criteria.py --model vgg_tiny --base-epochs 8 --finetune-epochs 3 \\
        --reduce macs=0.5 --seeds 0                                                  # quick check
    .venv/bin/python benchmarks/compare_criteria.py --finetune-epochs 0 --name pfam_ablation \\
        --criteria pfam pfam@temperature=0.02 pfam@temperature=1000 pfam@embed=fmap    # option ablation

The protocol and the table live in ``prunekit.compare`` (also the ``prunekit compare`` command; the protocol is in
``prunekit/compare/cells.py``). This script keeps the sweeps' defaults (bases cached under ``runs/compare_criteria``,
results under results/criteria/cpu, tables in docs/criteria/) and their cell names, so earlier cells are found and
skipped.

Every cell writes ``results/criteria/cpu/<key>.json`` (key = model, data, image size, criterion, reduction, seed,
epochs); a rerun skips finished cells. The table (``docs/criteria/criteria_results.md``) and plot
(``docs/criteria/criteria_tradeoff.png``) are rebuilt from every JSON found. Settings are chosen on the validation
split; the table reports the test split.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from prunekit.compare import FINETUNE_LR, run_compare, write_report  # noqa: E402
from prunekit.data import load_dataset  # noqa: E402

CRITERIA = ["l1", "l2", "fpgm", "bn_scale", "taylor", "mean_activation", "apoz", "pfam", "pfam_fmap", "attention",
            "random"]
RESULTS = REPO / "results" / "criteria" / "cpu"
WORK = REPO / "runs" / "compare_criteria"


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
    p.add_argument("--attention-removal", choices=["fold", "drop"], default="fold",
                   help="fold the mean gates into the layers, or drop the SE modules and keep the weights")
    p.add_argument("--attention-mode", choices=["frozen", "joint"], default="frozen",
                   help="train the SE modules alone (frozen backbone) or together with the backbone")
    p.add_argument("--calib-batches", type=int, default=4)
    p.add_argument("--bn-recal-batches", type=int, default=8,
                   help="after pruning, re-estimate BN statistics on this many training batches (0: off)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the CPU is shared)")
    p.add_argument("--device", default="cpu", help="where training, BN re-estimation and evaluation run (cpu, "
                                                   "cuda); plans are made on the CPU either way")
    p.add_argument("--progress", action="store_true", help="progress bars while training (off: the sweeps log to files)")
    p.add_argument("--no-latency", dest="latency", action="store_false",
                   help="skip the batch-1 CPU latency (meaningless on a machine shared by parallel jobs)")
    p.add_argument("--results", type=Path, default=RESULTS, help="one JSON per cell here")
    p.add_argument("--docs", type=Path, default=REPO / "docs" / "criteria", help="table and plot go here")
    p.add_argument("--work", type=Path, default=WORK, help="cached base models")
    p.add_argument("--name", default=None, help="<docs>/<name>_results.md and <docs>/<name>_tradeoff.png "
                   "(default: criteria, or criteria_global with --scope global)")
    p.add_argument("--skip-unpruned", action="store_true",
                   help="do not run the unpruned reference cells (another process of the same sweep runs them)")
    p.add_argument("--report-only", action="store_true", help="rebuild table and plot from existing JSON files")
    return p.parse_args(argv)


def main(argv: List[str] | None = None) -> None:
    args = parse_args(argv)
    args.name = args.name or ("criteria_global" if args.scope == "global" else "criteria")
    torch.set_num_threads(args.threads)
    if not args.report_only:
        run_compare(args, load_dataset(args.data, image_size=args.image_size), log=lambda s: print(s, flush=True))
    print(write_report(args, written_by="`benchmarks/compare_criteria.py`", root=REPO)["markdown"])


if __name__ == "__main__":
    main()
