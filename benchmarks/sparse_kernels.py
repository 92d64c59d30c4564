"""Do torch's sparse kernels pay on this CPU? Dense vs CSR vs BSR latency per sparsity, and the automatic choice.

    .venv/bin/python benchmarks/sparse_kernels.py            # micro table + resnet50 and vgg_small choices
    .venv/bin/python benchmarks/sparse_kernels.py --quick    # fewer shapes/repeats

Part 1 times single layers (Linear, and Conv2d run as im2col + sparse matmul) at 50/70/90/95/98% unstructured
magnitude sparsity, batch 1 and 32: dense (the module itself, MKL/oneDNN), CSR (int32 indices, MKL sparse via
``torch.addmm``) and BSR (4x4 blocks over the same unstructured mask). Part 2 runs
:func:`prunekit.sparse.kernels.sparsify_for_inference` on ResNet-50 (90% global magnitude, 1x3x224x224) and the
compact ``vgg_small`` (90%, 1x3x64x64), and reports which layers it switched and the end-to-end latency.
Timings are medians of interleaved rounds; the machine is shared, so expect noise of 10-20%.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import warnings
from pathlib import Path
from typing import Any, Dict

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from prunekit.sparse import magnitude_prune  # noqa: E402
from prunekit.sparse.kernels import sparse_module, sparsify_for_inference, time_candidates  # noqa: E402

SPARSITIES = (0.5, 0.7, 0.9, 0.95, 0.98)


def layers(quick: bool) -> Dict[str, tuple]:
    """name -> (module factory, input shape for batch b)."""
    shapes = {
        "Linear 1024->1024": (lambda: nn.Linear(1024, 1024), lambda b: (b, 1024)),
        "Linear 2048->1000 (fc)": (lambda: nn.Linear(2048, 1000), lambda b: (b, 2048)),
        "Conv 3x3 256->256 @14x14": (lambda: nn.Conv2d(256, 256, 3, padding=1, bias=False),
                                     lambda b: (b, 256, 14, 14)),
        "Conv 1x1 1024->256 @14x14": (lambda: nn.Conv2d(1024, 256, 1, bias=False), lambda b: (b, 1024, 14, 14)),
    }
    if quick:
        shapes.pop("Linear 2048->1000 (fc)")
        shapes.pop("Conv 1x1 1024->256 @14x14")
    return shapes


@torch.no_grad()
def micro(quick: bool, repeats: int) -> Dict[str, Any]:
    results: Dict[str, Any] = {}
    for name, (make, shape) in layers(quick).items():
        for batch in (1, 32):
            x = torch.randn(shape(batch))
            for ratio in SPARSITIES:
                torch.manual_seed(0)
                module = make().eval()
                magnitude_prune(nn.Sequential(module), ratio, skip_first=False, skip_last=False)
                fns = {"dense": lambda m=module: m(x)}
                for kind in ("csr", "bsr"):
                    fns[kind] = lambda m=sparse_module(module, kind): m(x)
                times = time_candidates(fns, repeats=repeats)
                results[f"{name} | b{batch} | {ratio:.0%}"] = {
                    "layer": name, "batch": batch, "sparsity": ratio, "times_ms": times,
                    "best": min(times, key=times.get), "csr_speedup": times["dense"] / times["csr"]}
                print(f"{name:<26} b{batch:<3} {ratio:>4.0%}  dense {times['dense']:8.3f} ms  "
                      f"csr {times['csr']:8.3f} ms ({times['dense'] / times['csr']:5.2f}x)  "
                      f"bsr {times['bsr']:8.3f} ms ({times['dense'] / times['bsr']:5.2f}x)", flush=True)
    return results


@torch.no_grad()
def auto_choice(model: nn.Module, shape: tuple, ratio: float, repeats: int) -> Dict[str, Any]:
    masks = magnitude_prune(model, ratio)
    x = torch.randn(shape)
    model.eval()
    before = time_candidates({"model": lambda: model(x)}, repeats=repeats)["model"]
    expected = model(x)
    model, decisions = sparsify_for_inference(model, masks, x, kinds=("csr", "bsr"), repeats=repeats)
    after = time_candidates({"model": lambda: model(x)}, repeats=repeats)["model"]
    chosen = {n: d for n, d in decisions["layers"].items() if d["kind"] != "dense"}
    return {"input": list(shape), "sparsity": ratio, "dense_model_ms": before, "sparsified_model_ms": after,
            "max_abs_diff": float((model(x) - expected).abs().max()), "layers_considered": len(decisions["layers"]),
            "layers_sparse": {n: {k: d[k] for k in ("kind", "speedup", "sparsity", "times_ms")}
                              for n, d in chosen.items()},
            "decisions": decisions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads; 1 by default: on a shared, oversubscribed machine a multi-threaded "
                             "kernel waits for its slowest thread and timings become meaningless")
    parser.add_argument("--out", default="results/sparse/sparse_kernels.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Sparse (CSR|BSR) tensor support is in beta")
    out: Dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                           "mkl": torch.backends.mkl.is_available(), "machine": platform.machine(),
                           "processor": platform.processor(), "micro": micro(args.quick, args.repeats)}
    if not args.skip_models:
        import torchvision

        import prunekit

        torch.manual_seed(0)
        for name, model, shape in (("resnet50", torchvision.models.resnet50(), (1, 3, 224, 224)),
                                   ("vgg_small", prunekit.create_model("vgg_small", num_classes=21), (1, 3, 64, 64))):
            res = auto_choice(model, shape, 0.9, max(3, args.repeats // 2))
            out[f"auto_{name}"] = res
            print(f"{name}: {len(res['layers_sparse'])} of {res['layers_considered']} layers switched to sparse "
                  f"{sorted(res['layers_sparse'])}; model {res['dense_model_ms']:.2f} ms dense -> "
                  f"{res['sparsified_model_ms']:.2f} ms (max |diff| {res['max_abs_diff']:.2e})", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
