"""Planner equality: the schedules' plans against the one-shot plan, on built-in, torchvision and timm models.

For every model, scope (layer/uniform and global) and ratio it prunes three deep copies of one random-init model
(criterion l2, no training, so the scores are the weights' own):
- one-shot: ``checked_plan`` + ``apply_plan`` (what ``prunekit prune --structured`` does);
- the ``oneshot`` schedule's single stage (its hooks driven with no training): the removed channels must equal
  the one-shot plan's, group by group;
- the ``iterative`` schedule, three rounds at boundaries 0, 1, 2 (exponential curve, widths counted against the
  original model): every parameter shape must equal the one-shot model's (uniform scope; with the global scope the
  earlier rounds change the later rounds' scores, so only the channel total is compared).
Then, per model and scope at ratio 0.3, the same with ``round_to=8``: the schedule's single stage equals one-shot's
plan, its uniform widths equal one-shot's, and no pruned group ends off a multiple of 8 more often than one-shot.

    python scripts/planner_equality.py                        # writes results/planner_equality/equality.json
    PYTHONPATH=/work/main python scripts/planner_equality.py --out results/planner_equality/before.json  # old tree

Prints a markdown table; exits 1 when a "must be equal" check fails.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from prunekit.apply.oneshot import checked_plan
from prunekit.apply.structured import apply_plan
from prunekit.errors import ConfigError
from prunekit.files import atomic_path
from prunekit.graph import build_graph
from prunekit.models import create_model
from prunekit.schedules import build_schedule
from prunekit.train import TrainState

MODELS = [  # (name, input side, extra create_model kwargs)
    ("vgg_tiny", 32, {}), ("resnet_tiny", 32, {}), ("vgg_small", 32, {}), ("resnet_small", 32, {}),
    ("torchvision/resnet18", 64, {}), ("torchvision/mobilenet_v2", 64, {}), ("torchvision/efficientnet_b0", 64, {}),
    ("timm/resnet18", 64, {}), ("timm/vit_tiny_patch16_224", 64, {"img_size": 64}), ("timm/convnext_atto", 64, {}),
]
RATIOS = (0.3, 0.5, 0.7)
SCOPES = {"layer": "uniform", "global": "global"}  # the schedules' word -> make_plan's
MULTIPLE = 8


def shapes(model: torch.nn.Module) -> Dict[str, List[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def one_shot(model: torch.nn.Module, side: int, ratio: float, scope: str, round_to: Optional[int]) -> Any:
    """The one-shot plan and the model it leaves."""
    x = torch.zeros(1, 3, side, side)
    plan, graph = checked_plan(model, x, ratio=ratio, criterion="l2", scope=SCOPES[scope], round_to=round_to)
    apply_plan(model, plan, graph=graph)
    return plan, model


def scheduled(model: torch.nn.Module, side: int, name: str, ratio: float, scope: str,
              round_to: Optional[int]) -> Any:
    """A structured schedule driven through its hooks without training: boundaries 0, 1, 2 (oneshot: 0 only).
    Returns (schedule, model, whether round_to was taken)."""
    kw = dict(method="structured", target=ratio, criterion="l2", scope=scope, input_size=side, start_epoch=0)
    if name == "iterative":
        kw.update(end_epoch=2, every=1)
    taken = round_to is not None
    try:
        sched = build_schedule(name, **kw, **({"round_to": round_to} if taken else {}))
    except ConfigError:  # a tree whose schedules have no round_to: the flag was dropped there
        sched, taken = build_schedule(name, **kw), False
    state = TrainState(model=model, optimizer=None, epochs=3, steps_per_epoch=1)
    sched.on_train_start(state)
    for epoch in (0, 1):
        state.epoch = epoch
        sched.on_epoch_end(state)
    return sched, model, taken


def off_multiple(model: torch.nn.Module, side: int, pruned_keys: set, original: Dict[str, int]) -> List[str]:
    """Pruned groups (original width a multiple of 8) whose width is not a multiple of 8."""
    graph = build_graph(model, (torch.zeros(1, 3, side, side),))
    return [f"{g.key}:{g.size}" for g in graph.groups if g.key in pruned_keys and g.size % MULTIPLE
            and original.get(g.key, 0) % MULTIPLE == 0 and g.rows is None]


def compare(name: str, side: int, kwargs: Dict[str, Any], scope: str, ratio: float,
            round_to: Optional[int]) -> Dict[str, Any]:
    torch.manual_seed(0)
    base = create_model(name, 10, **kwargs).eval()
    original = {g.key: g.size for g in build_graph(base, (torch.zeros(1, 3, side, side),)).groups}
    t0 = time.perf_counter()
    plan, ref = one_shot(copy.deepcopy(base), side, ratio, scope, round_to)
    once, _, _ = scheduled(copy.deepcopy(base), side, "oneshot", ratio, scope, round_to)
    it, model, taken = scheduled(copy.deepcopy(base), side, "iterative", ratio, scope, round_to)
    same_stage = [(g.key, g.remove) for g in plan.groups] == [(g["key"], g["remove"]) for g in once.plans[0]["groups"]]
    ref_shapes, it_shapes = shapes(ref), shapes(model)
    differ = [k for k in ref_shapes if ref_shapes[k] != it_shapes.get(k)]
    ref_total = sum(original.values()) - sum(len(g.remove) for g in plan.groups)
    it_total = sum(original.values()) - sum(len(g["remove"]) for p in it.plans for g in p["groups"])
    pruned = {g.key for g in plan.groups}
    row = {"model": name, "side": side, "scope": scope, "ratio": ratio, "round_to": round_to,
           "round_to_taken": taken, "groups_pruned": len(plan.groups), "channels_original": sum(original.values()),
           "channels_oneshot": ref_total, "channels_iterative": it_total, "stage_equal": same_stage,
           "shapes_equal": not differ, "shapes_differ": differ[:5], "n_shapes_differ": len(differ),
           "seconds": round(time.perf_counter() - t0, 1)}
    if round_to:
        row["off_multiple_oneshot"] = off_multiple(ref, side, pruned, original)
        row["off_multiple_iterative"] = off_multiple(model, side, pruned, original)
    # what must hold: the single stage is the one-shot plan; uniform widths (and every round_to run) match exactly
    row["ok"] = same_stage and (not differ or scope == "global")
    if round_to:
        row["ok"] = row["ok"] and len(row["off_multiple_iterative"]) <= len(row["off_multiple_oneshot"])
    return row


def table(rows: List[Dict[str, Any]]) -> str:
    head = ("| model | scope | ratio | round_to | channels (orig -> one-shot / iterative) | stage = one-shot | "
            "iterative shapes = one-shot | off multiple of 8 (one-shot / iterative) | ok |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        off = (f"{len(r['off_multiple_oneshot'])} / {len(r['off_multiple_iterative'])}" if r["round_to"] else "")
        rt = "" if not r["round_to"] else f"{r['round_to']}" + ("" if r["round_to_taken"] else " (dropped)")
        lines.append(f"| {r['model']} | {r['scope']} | {r['ratio']} | {rt} | {r['channels_original']} -> "
                     f"{r['channels_oneshot']} / {r['channels_iterative']} | {'yes' if r['stage_equal'] else 'NO'} | "
                     f"{'yes' if r['shapes_equal'] else 'no (%d)' % r['n_shapes_differ']} | {off} | "
                     f"{'yes' if r['ok'] else 'NO'} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/planner_equality/equality.json"))
    ap.add_argument("--models", nargs="*", default=None, help="subset of the model names")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for name, side, kwargs in MODELS:
        if args.models and name not in args.models:
            continue
        for scope in SCOPES:
            for ratio in RATIOS:
                rows.append(compare(name, side, kwargs, scope, ratio, None))
                print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
            rows.append(compare(name, side, kwargs, scope, RATIOS[0], MULTIPLE))
            print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "rows": rows}, indent=1))
    bad = [r for r in rows if not r["ok"]]
    print(f"\n{len(rows) - len(bad)}/{len(rows)} rows ok", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
