"""One model's structured round trip through the CLI, and the same prune with Torch-Pruning (the peer).

Shared by ``benchmarks/structured_coverage.py`` (every model, in subprocesses) and ``tests/test_round_trip.py``
(a few small ones), so the benchmark's table and CI check the same thing.
"""
from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch
from torch import nn

NUM_CLASSES = 21  # the embedded UC Merced subset


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _tensors(out: Any) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    return []


def run_cli(argv: Sequence[str]) -> tuple[int, str, str]:
    """``prunekit`` ``main(argv)`` in this process: (exit code, stdout, stderr)."""
    from prunekit.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def cli_round_trip(spec: str, out_dir: Path, ratio: float = 0.5, extra: Sequence[str] = ()) -> Dict[str, Any]:
    """CLI prune of ``spec`` -> its saved file -> ``prunekit.load`` -> outputs equal to the in-memory pruned model.

    The in-memory model is the one the job hands to ``save`` for ``model.safetensors`` (caught by wrapping
    ``prunekit.storage.checkpoint.save`` for the call). ``ok`` needs exit 0, fewer parameters, and equal outputs.
    """
    import prunekit
    from prunekit.storage import checkpoint as ckpt

    row: Dict[str, Any] = {"ok": False, "stage": "cli"}
    saved: Dict[str, nn.Module] = {}
    real_save = ckpt.save

    def keep(model: nn.Module, path: Any, *args: Any, **kwargs: Any) -> Path:
        saved[Path(path).name] = model
        return real_save(model, path, *args, **kwargs)

    argv = ["prune", "--model", spec, "--structured", "--ratio", str(ratio), "--epochs", "0", "--finetune-epochs",
            "0", "--out", str(out_dir), "--no-latency", "--no-progress", "--json", *extra]
    t0 = time.perf_counter()
    ckpt.save = keep
    try:
        rc, out, err = run_cli(argv)
    finally:
        ckpt.save = real_save
    row.update(cli_s=round(time.perf_counter() - t0, 1), exit_code=rc)
    if rc != 0:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        row.update(error=f"exit {rc}: {lines[-1] if lines else ''}", stderr_lines=len(lines))
        return row
    result = json.loads(out.strip().splitlines()[-1])
    before, after = result["before"], result["after"]
    row.update(params_before=before["params"], params_after=after["params"],
               params_ratio=round(after["params"] / before["params"], 3),
               macs_ratio=round(after["macs"] / before["macs"], 3) if before.get("macs") else None,
               groups_pruned=len(result["pruning"]["plan"]["groups"]),
               groups_skipped=len(result["pruning"]["plan"].get("skipped", {})))
    row["stage"] = "load"
    loaded = prunekit.load(out_dir / "model.safetensors")
    size = int(loaded.prunekit_description["data"]["input_size"])
    row.update(input_size=size, stage="compare")
    pruned = saved["model.safetensors"].eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = _tensors(pruned(x)), _tensors(loaded(x))
    row["max_abs_diff"] = max(((a - b).abs().max().item() for a, b in zip(want, got)), default=0.0)
    same = len(want) == len(got) and all(a.shape == b.shape and torch.allclose(a, b, rtol=1.3e-6, atol=1e-5)
                                         for a, b in zip(want, got))
    row["stage"] = "done"
    if not same:
        row["error"] = f"loaded outputs differ from the pruned model's (max |diff| {row['max_abs_diff']:.3g})"
    elif after["params"] >= before["params"]:
        row["error"] = "nothing was pruned"
    row["ok"] = "error" not in row
    return row


class TPRecipe:
    """Torch-Pruning's own settings for a model with attention, from its examples (VainF/Torch-Pruning).

    torchvision ``VisionTransformer`` (examples/torchvision_models/torchvision_pruning.py): ``round_to`` = the
    heads per layer, then ``model.hidden_dim`` set to the pruned width (torchvision's forward reads it). timm
    attention with ``num_heads`` and a ``qkv`` projection (examples/timm_models/prune_timm_models.py,
    examples/transformers/prune_timm_vit.py): ``num_heads={qkv: heads}`` (head dims pruned alike in every head),
    ``TIMM_FUSED_ATTN=0``, then each module's ``num_heads`` / ``head_dim`` set from the pruner (and ``attn_dim``,
    which timm 1.0 added after those examples). The classifier is ignored as in the default harness.
    """

    def __init__(self, model: nn.Module):
        from torchvision.models.vision_transformer import VisionTransformer

        self.name: str | None = None
        self.kwargs: Dict[str, Any] = {}
        self.attn: List[nn.Module] = []
        if isinstance(model, VisionTransformer):
            self.name = "torchvision ViT example: round_to=num_heads, hidden_dim fixed"
            self.kwargs["round_to"] = model.encoder.layers[0].num_heads
            return
        for m in model.modules():
            qkv = getattr(m, "qkv", None)
            if isinstance(getattr(m, "num_heads", None), int) and isinstance(qkv, (nn.Linear, nn.Conv2d)):
                self.attn.append(m)
        if self.attn:
            self.name = "timm example: num_heads={qkv: heads}, TIMM_FUSED_ATTN=0, num_heads/head_dim fixed"
            self.kwargs["num_heads"] = {m.qkv: m.num_heads for m in self.attn}
            for m in self.attn:
                if hasattr(m, "fused_attn"):
                    m.fused_attn = False

    def fix(self, model: nn.Module, pruner: Any) -> None:
        """What the examples do after ``pruner.step()``: the attributes the forward reads follow the new widths."""
        if "round_to" in self.kwargs:
            model.hidden_dim = model.conv_proj.out_channels
        for m in self.attn:
            width = m.qkv.out_features if isinstance(m.qkv, nn.Linear) else m.qkv.out_channels
            m.num_heads = pruner.num_heads[m.qkv]
            m.head_dim = width // (3 * m.num_heads)
            if hasattr(m, "attn_dim"):
                m.attn_dim = m.num_heads * m.head_dim


def peer_prune(spec: str, size: int, ratio: float = 0.5) -> Dict[str, Any]:
    """Torch-Pruning's MagnitudePruner (L1) on a fresh ``spec`` at ``size`` px, with its own example's settings for
    attention (:class:`TPRecipe`; other models: its defaults): does the pruned model run, keep its output shape,
    and lose parameters? The layers whose outputs are the classes are ignored."""
    import torch_pruning as tp

    from prunekit.models import create_model

    row: Dict[str, Any] = {"ok": False, "version": tp.__version__}
    try:
        torch.manual_seed(0)
        model = create_model(spec, NUM_CLASSES).eval()
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            want = [t.shape for t in _tensors(model(x))]
        before = sum(p.numel() for p in model.parameters())
        heads = [m for m in model.modules() if (isinstance(m, nn.Linear) and m.out_features == NUM_CLASSES)
                 or (isinstance(m, nn.Conv2d) and m.out_channels == NUM_CLASSES)]
        recipe = TPRecipe(model)
        row["recipe"] = recipe.name
        t0 = time.perf_counter()
        pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                           pruning_ratio=ratio, ignored_layers=heads, **recipe.kwargs)
        pruner.step()
        recipe.fix(model, pruner)
        row["prune_s"] = round(time.perf_counter() - t0, 2)
        with torch.no_grad():
            got = [t.shape for t in _tensors(model(x))]
        after = sum(p.numel() for p in model.parameters())
        row["params_ratio"] = round(after / before, 3)
        if got != want:
            row["error"] = f"output shape {got} != {want}"
        elif after >= before:
            row["error"] = "nothing was pruned"
    except Exception as e:  # the table records any failure
        row["error"] = _first_line(e)
    row["ok"] = "error" not in row
    return row
