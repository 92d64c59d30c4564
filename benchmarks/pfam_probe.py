"""Validation-split probe of PFAM's soft schedule: which criterion variant keeps training stable.

Short from-scratch runs (default vgg_tiny, 12 epochs, params -40%) of the soft schedule with PFAM variants and SFP
(L2) beside them. Prints and writes, per variant, the validation accuracy per epoch and how many zeroed channels
were swapped at each stage (a stage that swaps nearly all zeroed channels has zeroed trained filters and kept the
regrown ones). Only the validation split is read: settings for the test runs are chosen here.

    .venv/bin/python benchmarks/pfam_probe.py --data ../shared/data/ucmerced --variants pfam pfam@normalize=false l2
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import prunekit  # noqa: E402
from prunekit.data import load_dataset  # noqa: E402
from prunekit.importance.pfam import variant_from_spec  # noqa: E402
from prunekit.files import atomic_path  # noqa: E402
from prunekit.schedules import build_schedule  # noqa: E402
from prunekit.train import TrainConfig, evaluate, fit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--model", default="vgg_tiny")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--reduce", default="params=0.4")
    ap.add_argument("--ramp-epochs", type=int, default=0)
    ap.add_argument("--zero", choices=["group", "filters"], default="group",
                    help="what a stage zeroes: every coupled slice, or the filters only (SFP)")
    ap.add_argument("--variants", nargs="+", default=["pfam", "pfam@normalize=false", "l2"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "pfam" / "probe")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ds = load_dataset(a.data, image_size=64)
    a.out.mkdir(parents=True, exist_ok=True)
    for variant in a.variants:
        key = (f"{a.model}-{Path(a.data).name if a.data else 'embedded'}-e{a.epochs}-{a.reduce}-r{a.ramp_epochs}-"
               f"{variant}-s{a.seed}{'' if a.zero == 'group' else '-zfilters'}")
        key = key.replace("@", "_").replace("=", "").replace(",", "_")
        path = a.out / f"{key}.json"
        if path.is_file():
            print(json.loads(path.read_text())["summary"])
            continue
        torch.manual_seed(a.seed)
        model = prunekit.create_model(a.model, ds.num_classes)
        sched = build_schedule("soft", method="structured", reduce=a.reduce, criterion=variant_from_spec(variant),
                               input_size=64, start_epoch=0, every=1, ramp_epochs=a.ramp_epochs, seed=a.seed,
                               zero=a.zero)
        t0 = time.perf_counter()
        res = fit(model, ds, TrainConfig(epochs=a.epochs, batch_size=64, seed=a.seed), device="cpu",
                  callbacks=[sched], progress=False)
        val = evaluate(res.model, ds, "val")["accuracy"]
        row = {"variant": variant, "model": a.model, "epochs": a.epochs, "reduce": a.reduce, "seed": a.seed,
               "ramp_epochs": a.ramp_epochs, "zero": a.zero, "val_final": val,
               "val_per_epoch": [h.get("val_acc") for h in res.history],
               "swapped": [h.get("swapped") for h in sched.history if "swapped" in h],
               "zeroed": [h.get("zeroed") for h in sched.history if "zeroed" in h],
               "seconds": round(time.perf_counter() - t0, 1)}
        row["summary"] = (f"{variant:<28} zero={a.zero:<7} val after removal {val:.3f}  best val/epoch "
                          f"{max(v or 0 for v in row['val_per_epoch']):.3f}  swapped {row['swapped']}")
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(row, indent=1))
        print(row["summary"], flush=True)


if __name__ == "__main__":
    main()
