"""How much disk a magnitude-pruned network really takes, every way of storing it, measured in one run.

    .venv/bin/python benchmarks/sparse_storage.py                        # resnet50, 50/70/90/95/98%
    .venv/bin/python benchmarks/sparse_storage.py --sparsities 0.9 --init laplace --out results/sparse/x.json

Every conv and linear weight is a target (no skips, as in the issue's ResNet-50 numbers: 25.5M weights), one
global magnitude threshold. Weights are random (no downloads): ``--init default`` is torchvision's init
(kaiming-uniform-like); ``--init laplace`` redraws every weight from a Laplace distribution of the same std, a
rough proxy for trained weights, whose kept values spread over more exponents and so compress less than the
uniform init's. Sizes are file sizes in MB (10^6 bytes); ratios are against the dense state_dict file.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Dict

import torch
import torchvision
import zstandard as zstd
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import prune as torch_prune

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from prunekit.sparse import magnitude_prune  # noqa: E402
from prunekit.storage.codec import (encode_positions, entropy_bound_bytes, kept_mask, read_compressed,  # noqa: E402
                                   write_compressed)

VALUE_FORMATS = ("fp32", "fp16", "bf16", "int8", "kmeans4")


def build(model_name: str, init: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = getattr(torchvision.models, model_name)(weights=None).eval()
    if init == "laplace":
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    std = float(m.weight.std())
                    m.weight.copy_(torch.distributions.Laplace(0.0, std / 2**0.5).sample(m.weight.shape))
    return model


def state_of(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def file_size(path: Path) -> int:
    return path.stat().st_size


def torch_prune_state(model: nn.Module, ratio: float) -> Dict[str, torch.Tensor]:
    """What torch.nn.utils.prune leaves in a state_dict: weight_orig + a float weight_mask per pruned layer."""
    params = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=ratio)
    return state_of(model)


def csr_state(tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """torch sparse CSR (int64 indices) for every >= 2-D weight, viewed as [out, rest]; the rest dense."""
    out = {}
    for k, t in tensors.items():
        if t.ndim >= 2 and t.is_floating_point():
            csr = t.reshape(t.shape[0], -1).to_sparse_csr()
            out[f"{k}.crow"] = csr.crow_indices().contiguous()
            out[f"{k}.col"] = csr.col_indices().contiguous()
            out[f"{k}.values"] = csr.values().contiguous()
        else:
            out[k] = t
    return out


def coo_state(tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """torch sparse COO (``Tensor.to_sparse()``): one int64 index per dimension per nonzero."""
    out = {}
    for k, t in tensors.items():
        if t.ndim >= 2 and t.is_floating_point():
            coo = t.to_sparse().coalesce()
            out[f"{k}.indices"], out[f"{k}.values"] = coo.indices().contiguous(), coo.values().contiguous()
        else:
            out[k] = t
    return out


def positions_cost(tensors: Dict[str, torch.Tensor]) -> tuple[int, int]:
    """(our position sections alone, zstd -19; n x H(density) bits), in bytes: how close the position coding is."""
    entropy_bits, streams = 0.0, []
    for t in tensors.values():
        if t.ndim >= 2 and t.is_floating_point():
            mask = kept_mask(t)
            d = float(mask.float().mean())
            entropy_bits += 0 if d in (0.0, 1.0) else -t.numel() * (d * math.log2(d) + (1 - d) * math.log2(1 - d))
            streams.extend(encode_positions(mask)[1])
    ours = len(zstd.ZstdCompressor(level=19).compress(b"".join(streams)))
    return ours, math.ceil(entropy_bits / 8)


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    size = fn()
    return size, time.perf_counter() - start


def measure(model_name: str, ratio: float, init: str, seed: int, tmp: Path) -> Dict[str, Dict]:
    rows: Dict[str, Dict] = {}

    def add(name: str, size: int, seconds: float = 0.0, **extra) -> None:
        rows[name] = {"bytes": size, "seconds": round(seconds, 2), **extra}

    dense = state_of(build(model_name, init, seed))
    save_file(dense, str(tmp / "dense.safetensors"))
    add("dense state_dict (safetensors)", file_size(tmp / "dense.safetensors"))

    save_file(torch_prune_state(build(model_name, init, seed), ratio), str(tmp / "tprune.safetensors"))
    add("torch.nn.utils.prune state (weight_orig + mask)", file_size(tmp / "tprune.safetensors"))

    model = build(model_name, init, seed)
    masks = magnitude_prune(model, ratio, scope="global", skip_first=False, skip_last=False)
    pruned = state_of(model)
    save_file(pruned, str(tmp / "pruned.safetensors"))
    add("pruned dense file (safetensors)", file_size(tmp / "pruned.safetensors"))
    raw = (tmp / "pruned.safetensors").read_bytes()
    add("gzip -9 of pruned dense file", *timed(lambda: len(gzip.compress(raw, compresslevel=9))))
    add("zstd -19 of pruned dense file", *timed(lambda: len(zstd.ZstdCompressor(level=19).compress(raw))))
    save_file(csr_state(pruned), str(tmp / "csr.safetensors"))
    add("torch sparse CSR, int64 indices", file_size(tmp / "csr.safetensors"))
    save_file(coo_state(pruned), str(tmp / "coo.safetensors"))
    add("torch sparse COO (to_sparse), int64 indices", file_size(tmp / "coo.safetensors"))
    bound, nnz, numel = entropy_bound_bytes(pruned)
    add("bound: nnz x 32 b + n x H(density) + dense rest", bound)

    for values in VALUE_FORMATS:
        path = tmp / f"ours_{values}.pks"
        stats, seconds = timed(lambda: write_compressed(path, pruned, {"model": model_name}, values=values))
        back, _ = read_compressed(path)
        err = max(float((back[k].float() - v.float()).abs().max()) for k, v in pruned.items() if v.ndim >= 2)
        exact = all(torch.equal(back[k].view(torch.uint8) if back[k].ndim else back[k],
                                v.view(torch.uint8) if v.ndim else v) for k, v in pruned.items())
        label = "ours lossless (fp32 values)" if values == "fp32" else f"ours {values} values"
        add(label, stats["bytes"], seconds, max_abs_error=err, bit_exact=exact, positions=stats["positions"],
            section_bytes=stats["section_bytes"])
    base = rows["dense state_dict (safetensors)"]["bytes"]
    for row in rows.values():
        row["ratio"] = round(base / row["bytes"], 2)
    pos_ours, pos_entropy = positions_cost(pruned)
    rows["_meta"] = {"sparsity": masks.sparsity().overall, "nnz": nnz, "sparse_numel": numel,
                     "positions_ours_bytes": pos_ours, "positions_entropy_bytes": pos_entropy,
                     "lossless_vs_bound": rows["ours lossless (fp32 values)"]["bytes"] / bound}
    return rows


def table(results: Dict[str, Dict[str, Dict]]) -> str:
    cols = list(results)
    names = [n for n in results[cols[0]] if not n.startswith("_")]
    width = max(len(n) for n in names)
    lines = [f"{'storage':<{width}} | " + " | ".join(f"{c:>16}" for c in cols)]
    lines.append("-" * len(lines[0]))
    for n in names:
        cells = [f"{results[c][n]['bytes'] / 1e6:8.2f} MB {results[c][n]['ratio']:5.1f}x" for c in cols]
        lines.append(f"{n:<{width}} | " + " | ".join(cells))
    lines.append(f"{'ours lossless / bound':<{width}} | "
                 + " | ".join(f"{results[c]['_meta']['lossless_vs_bound']:16.3f}" for c in cols))
    lines.append(f"{'positions alone: ours / n x H(density)':<{width}} | " + " | ".join(
        f"{results[c]['_meta']['positions_ours_bytes'] / results[c]['_meta']['positions_entropy_bytes']:16.3f}"
        for c in cols))
    return "\n".join(lines)


def write(results: Dict[str, Dict[str, Dict]], args: argparse.Namespace) -> None:
    out = {"model": args.model, "init": args.init, "seed": args.seed, "torch": torch.__version__,
           "zstandard": zstd.__version__, "machine": platform.machine(), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--sparsities", default="0.5,0.7,0.9,0.95,0.98")
    parser.add_argument("--init", choices=["default", "laplace"], default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/sparse/sparse_storage.json")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="combine the results of earlier runs (e.g. one per sparsity, run in parallel) into --out")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    results: Dict[str, Dict[str, Dict]] = {}
    if args.merge:
        for path in args.merge:
            results.update(json.loads(Path(path).read_text())["results"])
        results = dict(sorted(results.items(), key=lambda kv: float(kv[0].rstrip("%"))))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for ratio in (float(s) for s in args.sparsities.split(",")):
                results[f"{ratio:.0%}"] = measure(args.model, ratio, args.init, args.seed, Path(tmp))
                write(results, args)  # after every sparsity: a slow run that is cut short keeps what it measured
                print(f"done {ratio:.0%}", file=sys.stderr, flush=True)
    print(f"{args.model}, init={args.init}, global magnitude over all conv/linear weights")
    print(table(results))
    write(results, args)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
