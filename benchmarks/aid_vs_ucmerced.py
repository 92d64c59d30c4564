"""Does a method's rank on AID agree with its rank on UC Merced? One table from two result folders.

    .venv/bin/python benchmarks/aid_vs_ucmerced.py                       # the PFAM cells (issue 21, question 1)
    .venv/bin/python benchmarks/aid_vs_ucmerced.py --model torchvision/resnet18 --aid results/pfam/aid_gpu \
        --ucmerced results/pfam/gpu results/pfam/cpu  # a cell in the first folder wins over the same cell later

Reads the one-JSON-per-cell results of ``benchmarks/pfam_from_scratch.py`` for one model and target on both
datasets (same recipe, same device kind), and writes ``docs/aid/<name>.md``: per method the test accuracy mean ± sd
and seed count on each dataset, the difference to the unpruned network paired by seed (mean, and t when 2+ pairs),
and the rank of its mean on each dataset (read ranks with the paired differences: a gap inside the seeds' spread
is not an order).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from prunekit.allocate.reduce import check_reduce, parse_reduce  # noqa: E402
from prunekit.report.tables import markdown_table  # noqa: E402


def cells(folder: Path, model: str, target: str, epochs: int, finetune_lr: Optional[float] = None,
          image_size: int = 64) -> Dict[str, Dict[int, float]]:
    """method -> seed -> test accuracy (%), for one model and target (the unpruned cells have no target).

    Reads both cell kinds: ``pfam_from_scratch.py``'s (method, test_accuracy, epochs) and ``prunekit compare``'s
    (criterion, test_acc, base_epochs; only its 20-epoch fine-tuning cells at ``finetune_lr``, uniform scope, no
    distillation). Targets match by amount, so ``macs=2x`` and ``macs=0.5`` are the same cell; only cells at
    ``image_size`` px count (a pfam cell names its size in its key)."""
    want = _amount(target)
    out: Dict[str, Dict[int, float]] = {}
    for f in sorted(folder.glob("*.json")):
        r = json.loads(f.read_text())
        if "criterion" in r:  # a compare cell
            if (r.get("finetune_epochs") != 20 or r.get("finetune_lr", 0.01) != finetune_lr
                    or r.get("scope") != "uniform" or r.get("distill")):
                continue
            method, acc, ep = r["criterion"], r["test_acc"], r["base_epochs"]
        else:
            method, acc, ep = r["method"], r["test_accuracy"], r["epochs"]
        if r["model"] != model or _image_size(r) != image_size or ep != epochs:
            continue
        if r["target"] in (None, "none") or _amount(r["target"]) == want:
            out.setdefault(method, {})[int(r["seed"])] = 100 * acc
    return out


def _image_size(cell: Dict) -> Optional[int]:
    """A cell's input size: recorded by compare and by newer pfam cells; older pfam cells name it only in their key
    (``...-64px-...``), early probe cells nowhere (None: never compared)."""
    if "image_size" in cell:
        return int(cell["image_size"])
    found = re.search(r"-(\d+)px-", cell.get("key", ""))
    return int(found.group(1)) if found else None


def _amount(target: str) -> Tuple[str, float]:
    """``"macs=2x"`` -> ("macs", 0.5): the same reduction however it was written."""
    metric, value = check_reduce(parse_reduce(target))
    return metric, round(value, 3)


def summary(accs: Dict[int, float]) -> str:
    vals = list(accs.values())
    sd = f" ± {statistics.stdev(vals):.2f}" if len(vals) > 1 else ""
    return f"{statistics.mean(vals):.2f}{sd} ({len(vals)})"


def paired(accs: Dict[int, float], ref: Dict[int, float]) -> str:
    """Mean difference to the reference over the seeds both have, with its t value when there are 2+ pairs."""
    diffs = [accs[s] - ref[s] for s in sorted(set(accs) & set(ref))]
    if not diffs:
        return "-"
    if len(diffs) == 1:
        return f"{diffs[0]:+.2f} (1 seed)"
    sd = statistics.stdev(diffs)
    t = statistics.mean(diffs) / (sd / math.sqrt(len(diffs))) if sd > 0 else float("inf")
    return f"{statistics.mean(diffs):+.2f} (t {t:.1f}, {len(diffs)} seeds)"


def shown(folder: Path) -> str:
    """A folder as the reader would type it: relative to the repository when inside it."""
    folder = folder.resolve()
    return str(folder.relative_to(REPO)) if folder.is_relative_to(REPO) else str(folder)


def ranks(data: Dict[str, Dict[int, float]]) -> Dict[str, int]:
    order = sorted(data, key=lambda m: -statistics.mean(data[m].values()))
    return {m: i + 1 for i, m in enumerate(order)}


def table(aid: Dict[str, Dict[int, float]], ucm: Dict[str, Dict[int, float]], against: str = "unpruned") -> str:
    """One row per method; differences paired by seed against ``against`` (``"unpruned"``, or ``"best"``: the
    pruned method with the highest mean on that dataset)."""
    methods = sorted(set(aid) | set(ucm), key=lambda m: (m != "unpruned", m))
    r_aid, r_ucm = ranks(aid), ranks(ucm)
    ref_aid, ref_ucm = (_reference(d, against) for d in (aid, ucm))
    label = "best" if against == "best" else against
    rows = []
    for m in methods:
        rows.append({"method": m,
                     "AID test % (seeds)": summary(aid[m]) if m in aid else "not run",
                     f"AID − {label}": paired(aid[m], aid[ref_aid]) if m in aid and ref_aid and m not in
                     ("unpruned", ref_aid) else "-",
                     "UC Merced test % (seeds)": summary(ucm[m]) if m in ucm else "not run",
                     f"UCM − {label}": paired(ucm[m], ucm[ref_ucm]) if m in ucm and ref_ucm and m not in
                     ("unpruned", ref_ucm) else "-",
                     "rank AID / UCM": f"{r_aid.get(m, '-')} / {r_ucm.get(m, '-')}"})
    note = f"\n\nBest pruned method: AID `{ref_aid}`, UC Merced `{ref_ucm}`." if against == "best" else ""
    return (markdown_table(rows, list(rows[0])) + note) if rows else "(no results yet)"


def _reference(data: Dict[str, Dict[int, float]], against: str) -> Optional[str]:
    if against != "best":
        return against if against in data else None
    pruned = [m for m in data if m != "unpruned"]
    return max(pruned, key=lambda m: statistics.mean(data[m].values())) if pruned else None


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="vgg_small")
    p.add_argument("--target", default="params=0.4")
    p.add_argument("--image-size", type=int, default=64, help="read only the cells at this input size")
    p.add_argument("--epochs", type=int, default=30, help="epochs from scratch (compare cells: the base's)")
    p.add_argument("--aid", type=Path, default=REPO / "results" / "pfam" / "aid_cpu")
    p.add_argument("--ucmerced", type=Path, nargs="+", default=[REPO / "results" / "pfam" / "cpu"],
                   help="UC Merced cell folders; a (method, seed) found in an earlier one is kept")
    p.add_argument("--against", choices=["unpruned", "best"], default="unpruned",
                   help="paired differences against the unpruned network or the best pruned method")
    p.add_argument("--finetune-lr", type=float, default=0.05, help="compare cells: the fine-tuning lr to read")
    p.add_argument("--name", default="pfam_vgg_small_cpu")
    a = p.parse_args(argv)
    aid = cells(a.aid, a.model, a.target, a.epochs, a.finetune_lr, a.image_size)
    if not aid:  # nothing to compare: leave any committed table alone
        print(f"no AID cells for {a.model} at {a.image_size} px, {a.target} in {shown(a.aid)}: nothing written")
        return
    ucm: Dict[str, Dict[int, float]] = {}
    for folder in reversed(a.ucmerced):  # earlier folders last, so their cells win
        for m, accs in cells(folder, a.model, a.target, a.epochs, a.finetune_lr, a.image_size).items():
            ucm.setdefault(m, {}).update(accs)
    ucm = {m: accs for m, accs in ucm.items() if m in aid}  # ranks among the methods run on both
    what = "from scratch" if a.against == "unpruned" else "base, then pruned and fine-tuned 20 epochs"
    text = (f"# {a.model} at {a.image_size} px, {a.target}, {a.epochs} epochs {what}: AID against UC Merced\n\n"
            f"AID cells: `{shown(a.aid)}`; UC Merced cells: {', '.join(f'`{shown(d)}`' for d in a.ucmerced)}. "
            "Test accuracy mean ± sd (seeds); differences paired by seed.\n\n" + table(aid, ucm, a.against) + "\n")
    out = REPO / "docs" / "aid" / f"{a.name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
