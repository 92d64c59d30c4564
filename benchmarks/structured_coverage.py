"""Coverage of structured pruning as a user meets it: CLI prune at 50% -> save -> ``prunekit.load`` -> same outputs.

For each model: ``prunekit prune --model M --structured --ratio 0.5 --epochs 0 --finetune-epochs 0`` on the
embedded data (in-process ``main([...])``; the input size is the one the CLI picks for the architecture), then
``prunekit.load`` of the saved file, whose outputs must equal the in-memory pruned model's (torch.testing float32
tolerances: atol 1e-5, rtol 1.3e-6) on a random batch at the recorded input size. A failure is recorded with its
one-line reason. The same run prunes a fresh copy with Torch-Pruning (the ``bench`` extra; MagnitudePruner, L1,
default options, layers with the class count as outputs ignored) at the same size and records whether it runs and
keeps the output shape.

Random init (no weight download). Each model runs in its own subprocess with a time limit, so one hang or crash
cannot stop the table; each writes one JSON under results/structured_coverage/rows/ and a rerun skips models that
have one (``--rerun`` redoes them). The summary goes to results/structured_coverage/coverage.json.

    nice python benchmarks/structured_coverage.py                 # the 25 torchvision models
    nice python benchmarks/structured_coverage.py --timm          # plus a sample of timm families
    nice python benchmarks/structured_coverage.py --models torchvision/resnet18 timm/vit_tiny_patch16_224
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

TORCHVISION = [
    "alexnet", "vgg16", "vgg16_bn", "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "densenet121",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_v2_s",
    "regnet_x_400mf", "regnet_y_400mf", "convnext_tiny", "vit_b_16", "swin_t", "swin_v2_t", "maxvit_t",
    "squeezenet1_1", "shufflenet_v2_x1_0", "mnasnet1_0", "googlenet", "inception_v3",
]
# One or two small members of many timm families (CNNs, hybrids, ViTs, MLPs).
TIMM = [
    "resnet18", "resnet50d", "resnext26ts", "seresnext26d_32x4d", "res2net50_14w_8s", "resnest14d", "regnety_002",
    "regnetx_002", "densenet121", "dla34", "dpn68", "cspresnet50", "cspdarknet53", "darknet17", "vgg11_bn",
    "repvgg_a0", "mobilenetv2_050", "mobilenetv3_small_050", "mobilenetv4_conv_small", "efficientnet_b0",
    "efficientnetv2_rw_t", "tinynet_e", "mixnet_s", "mnasnet_small", "fbnetc_100", "ghostnet_100", "lcnet_050",
    "rexnet_100", "hardcorenas_a", "selecsls42b", "hrnet_w18_small", "inception_v3", "xception41", "nf_resnet26",
    "dm_nfnet_f0", "convnext_atto", "convnextv2_atto", "edgenext_xx_small", "inception_next_tiny", "poolformer_s12",
    "poolformerv2_s12", "convmixer_768_32", "mobileone_s0", "fastvit_t8", "efficientformer_l1",
    "efficientformerv2_s0", "efficientvit_b0", "efficientvit_m0", "mobilevit_xxs", "mobilevitv2_050", "levit_128s",
    "vit_tiny_patch16_224", "deit_tiny_patch16_224", "deit3_small_patch16_224", "beit_base_patch16_224",
    "eva02_tiny_patch14_224", "cait_xxs24_224", "xcit_nano_12_p16_224", "pit_ti_224", "coat_lite_tiny",
    "crossvit_tiny_240", "twins_svt_small", "pvt_v2_b0", "swin_tiny_patch4_window7_224", "swinv2_cr_tiny_224",
    "gcvit_xxtiny", "maxvit_nano_rw_256", "coatnet_nano_rw_224", "nest_tiny", "visformer_tiny", "tnt_s_patch16_224",
    "mixer_s16_224", "resmlp_12_224", "gmlp_ti16_224", "hgnet_tiny", "hgnetv2_b0", "starnet_s1", "ghostnetv2_100",
    "repghostnet_050", "rdnet_tiny", "fasternet_t0", "sequencer2d_s", "davit_tiny", "focalnet_tiny_srf",
    "tiny_vit_5m_224", "vovnet39a", "ese_vovnet19b_dw", "tresnet_m", "nasnetalarge", "pnasnet5large",
]


RESULTS = ROOT / "results" / "structured_coverage"


def row_file(rows_dir: Path, spec: str) -> Path:
    return rows_dir / (spec.replace("/", "__") + ".json")


def run_one(spec: str, ratio: float, extra: List[str], path: str) -> None:
    """The round trip and the peer prune of ``spec``, written to ``path`` (runs in a spawned subprocess)."""
    import torch

    from round_trip import _first_line, cli_round_trip, peer_prune

    torch.set_num_threads(1)
    row: Dict[str, Any] = {"model": spec}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            row.update(cli_round_trip(spec, Path(tmp), ratio, extra))
        except Exception as e:  # a traceback in the CLI, the load or the comparison: the table records it
            row.update(ok=False, error=f"{row.get('stage', 'cli')}: {_first_line(e)}")
    Path(path).write_text(json.dumps(row, indent=1))  # the round trip stands even if the peer then hangs
    size = row.get("input_size") or _size_of(spec)
    row["torch_pruning"] = peer_prune(spec, size, ratio) if size else {"ok": False, "error": "no input size"}
    Path(path).write_text(json.dumps(row, indent=1))


def peer_one(spec: str, size: int, ratio: float, path: str) -> None:
    """Only the Torch-Pruning prune of ``spec`` (runs in a spawned subprocess): the row's earlier peer result is
    kept as ``torch_pruning_default``, the new one (its example's settings, ``TPRecipe``) replaces it."""
    import torch

    from round_trip import peer_prune

    torch.set_num_threads(1)
    row = json.loads(Path(path).read_text())
    new = peer_prune(spec, size, ratio)
    row["torch_pruning_default"] = row.get("torch_pruning_default") or row.get("torch_pruning")
    row["torch_pruning"] = new
    Path(path).write_text(json.dumps(row, indent=1))


def peer_rerun(specs: List[str], rows_dir: Path, ratio: float, timeout: float, rerun: bool) -> None:
    """Redo Torch-Pruning's prune, with its own examples' settings for attention, on rows where it failed with the
    default harness and the model has attention that settings apply to (timeouts are left: TP's own torchvision
    example lists Swin as stuck). A row already redone (its peer result names a ``recipe``) is skipped."""
    from prunekit.models import create_model
    from round_trip import NUM_CLASSES, TPRecipe

    for spec in specs:
        path = row_file(rows_dir, spec)
        if not path.is_file():
            continue
        row = json.loads(path.read_text())
        peer = row.get("torch_pruning") or {}
        if peer.get("ok") or "timeout" in str(peer.get("error")) or ("recipe" in peer and not rerun):
            continue
        size = row.get("input_size") or _size_of(spec)
        if not size or TPRecipe(create_model(spec, NUM_CLASSES)).name is None:
            continue
        proc = mp.get_context("spawn").Process(target=peer_one, args=(spec, size, ratio, str(path)))
        proc.start()
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
        row = json.loads(path.read_text())
        if "recipe" not in (row.get("torch_pruning") or {}):  # killed or crashed: say so under the recipe
            row["torch_pruning_default"] = row.get("torch_pruning_default") or row.get("torch_pruning")
            row["torch_pruning"] = {"ok": False, "recipe": "example settings", "error":
                                    f"timeout after {timeout:.0f} s" if proc.exitcode is None or proc.exitcode < 0
                                    else f"crashed (exit code {proc.exitcode})"}
            path.write_text(json.dumps(row, indent=1))
        print(fmt(row), "| before:", (row.get("torch_pruning_default") or {}).get("error", "")[:60], flush=True)


def _size_of(spec: str) -> Optional[int]:
    """The size the CLI would use, for the peer when the CLI run itself failed."""
    try:
        from prunekit.models import create_model
        from prunekit.models.input_size import choose_input_size

        return choose_input_size(create_model(spec, 2), spec, None, 64)
    except Exception:
        return None


def run(spec: str, ratio: float, extra: List[str], timeout: float, path: Path) -> Dict[str, Any]:
    path.unlink(missing_ok=True)
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=run_one, args=(spec, ratio, extra, str(path)))
    t0 = time.perf_counter()
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        limit = f"timeout after {timeout:.0f} s"
        if path.is_file():  # the round trip finished; Torch-Pruning did not
            row = dict(json.loads(path.read_text()), torch_pruning={"ok": False, "error": limit})
        else:
            row = {"model": spec, "ok": False, "error": limit}
    elif path.is_file():
        row = json.loads(path.read_text())
    else:
        row = {"model": spec, "ok": False, "error": f"crashed (exit code {proc.exitcode})"}
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    path.write_text(json.dumps(row, indent=1))
    return row


def fmt(row: Dict[str, Any]) -> str:
    tp = row.get("torch_pruning") or {}
    mark = "ok" if row["ok"] else "FAIL"
    peer = "-" if not tp else ("ok" if tp.get("ok") else "FAIL")
    params = f"{row['params_ratio']:.3f}" if row.get("params_ratio") is not None else "  -  "
    size = row.get("input_size", "-")
    return f"{row['model']:<42} {mark:<4} {size!s:>4} {params:>6} {peer:<4}  {row.get('error', '')}"


def summary(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for lib in ("torchvision", "timm"):
        sub = [r for r in rows if r["model"].startswith(lib + "/")]
        if sub:
            out[lib] = {"models": len(sub), "round_trip_ok": sum(r["ok"] for r in sub),
                        "torch_pruning_ok": sum(bool((r.get("torch_pruning") or {}).get("ok")) for r in sub)}
    return out


def markdown(rows: List[Dict[str, Any]]) -> str:
    """The coverage section's tables (one per library) from result rows."""
    lines: List[str] = []
    for lib, c in summary(rows).items():
        lines += [f"**{lib}: round trip {c['round_trip_ok']}/{c['models']}; Torch-Pruning prune-and-run "
                  f"{c['torch_pruning_ok']}/{c['models']}**", "",
                  "| model | round trip | px | params after/before | MACs after/before | Torch-Pruning | reason |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            if not r["model"].startswith(lib + "/"):
                continue
            tp = r.get("torch_pruning") or {}
            why = "; ".join(x for x in (r.get("error"), tp.get("error") and f"TP: {tp['error']}") if x)
            peer = ("ok" if tp.get("ok") else "FAIL") + (f" ({tp['params_ratio']} params, example settings)"
                                                         if tp.get("recipe") and tp.get("params_ratio") else "")
            cells = [r["model"].split("/", 1)[1], "ok" if r["ok"] else "FAIL", str(r.get("input_size", "")),
                     str(r.get("params_ratio", "")), str(r.get("macs_ratio", "")), peer,
                     why.replace("|", "\\|")[:160]]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_summary(out: Path, ratio: float, extra: List[str]) -> Dict[str, Any]:
    """coverage.json from every row file, in list order; models of the lists without a row are named as not run."""
    every_spec = [f"torchvision/{n}" for n in TORCHVISION] + [f"timm/{n}" for n in TIMM]
    order = {s: i for i, s in enumerate(every_spec)}
    rows = sorted((json.loads(f.read_text()) for f in (out / "rows").glob("*.json")),
                  key=lambda r: (order.get(r["model"], len(order)), r["model"]))
    done = {r["model"] for r in rows}
    doc = {"ratio": ratio, "cli_args": extra, "command": "python benchmarks/structured_coverage.py --timm",
           "summary": summary(rows), "wall_s_sum": round(sum(r.get("wall_s", 0) for r in rows), 1),
           "not_run": [s for s in every_spec if s not in done], "rows": rows}
    (out / "coverage.json").write_text(json.dumps(doc, indent=1))
    (out / "coverage_table.md").write_text(f"`{doc['command']}` (Torch-Pruning rows redone with its examples' attention "
                                  "settings: `--peer-only`)\n\n" + markdown(rows))
    return doc


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--timm", action="store_true", help="also run the timm family sample")
    ap.add_argument("--only-timm", action="store_true")
    ap.add_argument("--models", nargs="*", help="lib/name specs, e.g. torchvision/resnet18 timm/vit_tiny_patch16_224")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--rerun", action="store_true", help="redo models that already have a result file")
    ap.add_argument("--reverse", action="store_true", help="last model first (a second worker on the same list: "
                                                           "each skips the models the other has written)")
    ap.add_argument("--cli-args", default="--test-frac 0.05 --val-frac 0.05",
                    help="extra prune flags (default: a small test split, so 224 px ViTs evaluate quickly)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--markdown", action="store_true", help="print the tables of the stored results and stop")
    ap.add_argument("--peer-only", action="store_true",
                    help="redo only Torch-Pruning's prune, with its examples' attention settings, where it failed")
    args = ap.parse_args(argv)
    if args.markdown:  # from the rows on disk, whatever has run so far
        print(markdown(write_summary(Path(args.out), args.ratio, args.cli_args.split())["rows"]))
        return
    specs = args.models or ([] if args.only_timm else [f"torchvision/{n}" for n in TORCHVISION])
    if (args.timm or args.only_timm) and not args.models:
        specs += [f"timm/{n}" for n in TIMM]
    if args.reverse:
        specs = specs[::-1]
    out = Path(args.out)
    rows_dir = out / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    extra = args.cli_args.split()
    if args.peer_only:
        peer_rerun(specs, rows_dir, args.ratio, args.timeout, args.rerun)
        write_summary(out, args.ratio, extra)
        return
    print(f"{'model':<42} {'':<4} {'px':>4} {'params':>6} {'TP':<4}  reason")
    t0 = time.perf_counter()
    rows = []
    for spec in specs:
        path = row_file(rows_dir, spec)
        if path.is_file() and not args.rerun:
            row = json.loads(path.read_text())
        else:
            row = run(spec, args.ratio, extra, args.timeout, path)
        rows.append(row)
        print(fmt(row), flush=True)
    counts = summary(rows)
    for lib, c in counts.items():
        print(f"{lib}: round trip {c['round_trip_ok']}/{c['models']}, Torch-Pruning {c['torch_pruning_ok']}/{c['models']}")
    write_summary(out, args.ratio, extra)
    print(f"{time.perf_counter() - t0:.0f} s; wrote {out / 'coverage.json'}")


if __name__ == "__main__":
    main()
