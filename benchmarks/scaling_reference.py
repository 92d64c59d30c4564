"""What does a 4x cut of every operation's work buy in latency here? The dense model at half the input side.

Halving the image side quarters the work of every convolution, normalization, activation and pooling layer alike
while every layer keeps its width, so "speedup / MACs reduction" (the figure of merit of structured_speed.py)
measures how the runtime turns less arithmetic into less time when nothing is thin-layer specific. It is a
reference, not a bound for channel pruning: smaller feature maps have inefficiencies of their own (a 7x7 map
becomes 4x4), narrower layers others. Both sizes are timed alternately, three rounds, fastest of ``--repeats``
each, one intra-op thread; batch 1 at 224 -> 112 px and batch 32 at 64 -> 32 px, as structured_speed.py times.

    python benchmarks/scaling_reference.py --runtime eager --out results/structured_speed/scaling_reference_eager.json
    python benchmarks/scaling_reference.py --runtime ort --out results/structured_speed/scaling_reference_ort.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from prunekit.export import ExportError, OrtModule  # noqa: E402
from prunekit.files import atomic_path  # noqa: E402
from prunekit.measure import count_macs  # noqa: E402
from prunekit.measure.latency import measure_latency_together  # noqa: E402
from structured_speed import geo  # noqa: E402  (the same geo-mean as the benchmark it is a reference for)

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "vgg16", "efficientnet_b0", "convnext_tiny", "densenet121"]
SIZES = ((1, 224), (32, 64))  # (batch, image side) as structured_speed.py times them


def fastest_ms(model: torch.nn.Module, side: int, batch: int, repeats: int) -> float:
    (ms, _), = measure_latency_together([model], (3, side, side), (batch,), warmup=2, repeats=repeats, summary=min)
    return ms[batch]


def reference(name: str, runtime: str, repeats: int) -> Dict[str, Any]:
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    row: Dict[str, Any] = {"model": name}
    for batch, side in SIZES:
        half = side // 2
        try:
            big, small = (OrtModule(model, (3, side, side)), OrtModule(model, (3, half, half))) \
                if runtime == "ort" else (model, model)
        except ExportError as exc:  # vgg16: adaptive pooling to 7x7 from a map it does not divide has no ONNX form
            row[f"b{batch}_skipped"] = str(exc)[:200]
            continue
        rounds = [(fastest_ms(big, side, batch, repeats), fastest_ms(small, half, batch, repeats)) for _ in range(3)]
        full, cut = min(r[0] for r in rounds), min(r[1] for r in rounds)
        macs_ratio = count_macs(model, (3, half, half))[0] / count_macs(model, (3, side, side))[0]
        row.update({f"b{batch}_ms": round(full, 3), f"b{batch}_half_ms": round(cut, 3),
                    f"b{batch}_macs_ratio": round(macs_ratio, 4), f"b{batch}_eff": round(full / cut * macs_ratio, 3)})
        print(f"{name:16s} {runtime} b{batch}: {side} px {full:8.2f} ms, {half} px {cut:8.2f} ms, MACs x{macs_ratio:.3f}"
              f" -> speedup / MACs reduction {row[f'b{batch}_eff']:.3f}", flush=True)
    return row


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runtime", choices=["eager", "ort"], default="eager")
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "structured_speed" / "scaling_reference.json")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = [reference(name, a.runtime, a.repeats) for name in a.models]
    effs = {f"b{b}": [r[f"b{b}_eff"] for r in rows if f"b{b}_eff" in r] for b, _ in SIZES}
    summary = {k: round(geo(v), 3) if v else None for k, v in effs.items()}
    print("geo-mean speedup / MACs reduction:", summary)
    with atomic_path(a.out) as tmp:
        tmp.write_text(json.dumps({"runtime": a.runtime, "threads": 1, "sizes": SIZES, "rows": rows,
                                         "geomean": summary}, indent=1))


if __name__ == "__main__":
    main()
