"""Coverage of the structured pruning engine: which models prune at 50%, run, and keep their output shape.

Random init (no weight download). Each model runs in its own subprocess with a time limit, so one hang or
crash cannot stop the table. Prints the table and writes docs/structured_coverage.json.

    nice python benchmarks/structured_coverage.py                 # the 25 torchvision models
    nice python benchmarks/structured_coverage.py --timm          # plus a sample of timm families
    nice python benchmarks/structured_coverage.py --models torchvision/resnet18 timm/vit_tiny_patch16_224
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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


def build(spec: str):
    import torch

    lib, name = spec.split("/", 1)
    torch.manual_seed(0)
    if lib == "torchvision":
        import torchvision

        kwargs = {"init_weights": False} if name in ("googlenet", "inception_v3") else {}
        model = getattr(torchvision.models, name)(**kwargs)
        size = 299 if name == "inception_v3" else 224
    else:
        import timm

        model = timm.create_model(name, pretrained=False)
        size = model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    return model.eval(), (3, size, size)


def macs(model: Any, shape: tuple) -> int:
    """prunekit.measure.count_macs, falling back to a plain FlopCounterMode pass (with grad enabled) for the
    few models whose module tracker fails under no_grad (timm pit/cait: "Expected gradient function")."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from prunekit.measure import count_macs

    try:
        return count_macs(model, shape)[0]
    except AssertionError:
        counter = FlopCounterMode(display=False)
        with counter:
            model(torch.randn(1, *shape))
        return int(counter.get_total_flops()) // 2


def run_one(spec: str, ratio: float, queue: Any) -> None:
    import torch

    torch.set_num_threads(1)
    row: Dict[str, Any] = {"model": spec, "ok": False}
    try:
        from prunekit.apply.oneshot import prune_structured
        from prunekit.measure import count_params

        model, shape = build(spec)
        x = torch.randn(1, *shape)
        with torch.no_grad():
            want = model(x).shape
        row["params_before"] = count_params(model)
        row["macs_before"] = macs(model, shape)
        t0 = time.perf_counter()
        model, plan = prune_structured(model, x, ratio=ratio)
        row["prune_s"] = round(time.perf_counter() - t0, 2)
        with torch.no_grad():
            got = model(x).shape
        row["params_after"] = count_params(model)
        row["macs_after"] = macs(model, shape)
        row["macs_ratio"] = round(row["macs_after"] / row["macs_before"], 3)
        row["params_ratio"] = round(row["params_after"] / row["params_before"], 3)
        row["groups_pruned"] = len(plan.groups)
        row["groups_skipped"] = len(plan.skipped)
        row["ok"] = got == want and row["params_after"] < row["params_before"]
        if got != want:
            row["error"] = f"output shape {tuple(got)} != {tuple(want)}"
        elif not row["ok"]:
            row["error"] = "nothing was pruned"
    except Exception as e:  # the table records any failure
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    queue.put(row)


def run(spec: str, ratio: float, timeout: float) -> Dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=run_one, args=(spec, ratio, queue))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return {"model": spec, "ok": False, "error": f"timeout after {timeout:.0f} s"}
    try:
        return queue.get(timeout=5)
    except Exception:
        return {"model": spec, "ok": False, "error": f"crashed (exit code {proc.exitcode})"}


def fmt(row: Dict[str, Any]) -> str:
    if "params_after" in row:
        p = f"{row['params_before'] / 1e6:7.2f}M -> {row['params_after'] / 1e6:7.2f}M"
        m = f"{row['macs_ratio']:.3f}"
        t = f"{row['prune_s']:6.2f}"
    else:
        p, m, t = f"{'':>21}", "  -  ", f"{'-':>6}"
    return f"{row['model']:<42} {'ok' if row['ok'] else 'FAIL':<4} {p} {m:>6} {t}  {row.get('error', '')}"


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--timm", action="store_true", help="also run the timm family sample")
    ap.add_argument("--only-timm", action="store_true")
    ap.add_argument("--models", nargs="*", help="lib/name specs, e.g. torchvision/resnet18 timm/vit_tiny_patch16_224")
    ap.add_argument("--timeout", type=float, default=150.0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "structured_coverage.json"))
    args = ap.parse_args(argv)
    specs = args.models or ([] if args.only_timm else [f"torchvision/{n}" for n in TORCHVISION])
    if (args.timm or args.only_timm) and not args.models:
        specs += [f"timm/{n}" for n in TIMM]
    print(f"{'model':<42} {'':<4} {'params before -> after':>21} {'MACs':>6} {'time s':>6}")
    rows = []
    for spec in specs:
        row = run(spec, args.ratio, args.timeout)
        rows.append(row)
        print(fmt(row), flush=True)
    for lib in ("torchvision", "timm"):
        sub = [r for r in rows if r["model"].startswith(lib + "/")]
        if sub:
            print(f"{lib}: {sum(r['ok'] for r in sub)}/{len(sub)} ok")
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.is_file() else {}
    merged = {r["model"]: r for r in old.get("rows", [])}
    merged.update({r["model"]: r for r in rows})
    out.write_text(json.dumps({"ratio": args.ratio, "rows": list(merged.values())}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
