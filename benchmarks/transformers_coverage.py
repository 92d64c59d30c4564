"""Transformers as users bring them: Hugging Face BERT, RoBERTa, DistilBERT, GPT-2, LLaMA (GQA), Mistral, ViT and Swin
at their published sizes (built from their configs, random init, no download), plus timm and torchvision ViTs.

Per model, in one table:
- params before / after ``prunekit.prune(model, x, ratio=0.5, prune_heads=True)`` (whole heads, MLP neurons and the
  hidden size at 50%) and after ``reduce="macs=2x"``, with the MACs reached (counted on the example input);
- exactness: with heads and MLP pruned and the hidden size kept (``prune_hidden=False``), in float64, the max
  |pruned - masked original| (the original with every removed slice zeroed): removal of zero slices must change
  nothing (<= 1e-5); beside it the max |pruned - original|, which shows the removed slices mattered;
- save -> ``prunekit.load(path, model=fresh instance)`` -> outputs bit-equal;
- Torch-Pruning (the ``bench`` extra) with its documented recipe for these models (examples/transformers/
  prune_hf_bert.py, prune_hf_swin.py and examples/LLMs/prune_llm.py: ``num_heads`` per q/k/v projection,
  ``prune_num_heads=True``, ``prune_head_dims=False``, head and channel ratio 0.5, the classifier / lm_head ignored,
  ``round_to=4`` for the decoder LLMs, then the head attributes fixed as their examples do): params after, and whether
  the model runs with the output shape kept.

Each model runs in its own subprocess with a time limit and writes one JSON under results/transformers_coverage/rows/;
a rerun skips models that have one (``--rerun`` redoes them). The table goes to results/transformers_coverage/.

    nice .venv/bin/python benchmarks/transformers_coverage.py                    # all models (~15 min on 2 cores)
    nice .venv/bin/python benchmarks/transformers_coverage.py --models hf/bert hf/gpt2
"""
from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "results" / "transformers_coverage"
MODELS = ["hf/bert", "hf/roberta", "hf/distilbert", "hf/gpt2", "hf/llama", "hf/mistral", "hf/vit", "hf/swin",
          "timm/vit_small_patch16_224", "torchvision/vit_b_16"]
SEQ = 16


def build(spec: str) -> Tuple[Any, Any, List[str], str]:
    """(model, example input, names Torch-Pruning's recipe ignores, what the output is) for ``spec``."""
    import torch

    source, _, name = spec.partition("/")
    if source == "timm":
        import timm
        return timm.create_model(name, num_classes=10), torch.randn(1, 3, 224, 224), ["head"], "logits"
    if source == "torchvision":
        import torchvision
        model = getattr(torchvision.models, name)(num_classes=10)
        for m in model.modules():  # torchvision zero-inits ViT's classifier: logits 0 whatever the pruning
            if isinstance(m, torch.nn.Linear) and not bool(m.weight.any()):
                torch.nn.init.normal_(m.weight, std=0.02)
        return model, torch.randn(1, 3, 224, 224), ["heads"], "logits"
    import transformers as T
    tokens = torch.randint(1, 1000, (1, SEQ))
    image = torch.randn(1, 3, 224, 224)
    if name == "bert":
        return T.BertForSequenceClassification(T.BertConfig(num_labels=2)), tokens, ["bert.pooler", "classifier"], "logits"
    if name == "roberta":
        return T.RobertaForSequenceClassification(T.RobertaConfig(num_labels=2)), tokens, ["classifier"], "logits"
    if name == "distilbert":
        return (T.DistilBertForSequenceClassification(T.DistilBertConfig(num_labels=2)), tokens,
                ["pre_classifier", "classifier"], "logits")
    if name == "gpt2":
        return T.GPT2LMHeadModel(T.GPT2Config()), tokens, ["lm_head"], "logits"
    if name == "llama":  # a GQA decoder at SmolLM-135M's shape (9 query heads share 3 key/value heads)
        cfg = T.LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                            num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048,
                            tie_word_embeddings=True)
        return T.LlamaForCausalLM(cfg), tokens, ["lm_head"], "logits"
    if name == "mistral":  # Mistral's layout (GQA 4:1, sliding window) at a CPU-friendly size
        cfg = T.MistralConfig(hidden_size=512, intermediate_size=1792, num_hidden_layers=8, num_attention_heads=16,
                              num_key_value_heads=4, vocab_size=32000, sliding_window=4096)
        return T.MistralForCausalLM(cfg), tokens, ["lm_head"], "logits"
    if name == "vit":
        return T.ViTForImageClassification(T.ViTConfig(num_labels=10)), image, ["classifier"], "logits"
    if name == "swin":
        return T.SwinForImageClassification(T.SwinConfig(num_labels=10)), image, ["classifier"], "logits"
    raise ValueError(spec)


def _logits(out: Any) -> Any:
    return out.logits if hasattr(out, "logits") else out


def _params(model: Any) -> int:
    from prunekit.measure import count_params
    return count_params(model)


def ours(spec: str, row: Dict[str, Any]) -> None:
    """prunekit at ratio 0.5 (whole heads) and macs=2x, the exactness check, the save/load round trip."""
    import torch

    import prunekit
    from prunekit.apply.structured import zero_channels
    from prunekit.measure import count_macs
    from prunekit.measure.state import InputSpec

    torch.manual_seed(0)
    model, x, ignore, _ = build(spec)
    model.eval()
    spec_in = InputSpec.from_example(x)
    row["params"] = _params(model)
    row["macs"] = count_macs(model, spec_in)[0]
    t = time.perf_counter()
    half = prunekit.prune(model, x, ratio=0.5, criterion="l1", prune_heads=True)
    row["ratio_seconds"] = round(time.perf_counter() - t, 2)
    row["ratio_params"] = _params(half)
    row["ratio_skipped"] = half.prunekit_plan.skipped
    with torch.no_grad():
        row["ratio_runs"] = tuple(_logits(half(x)).shape) == tuple(_logits(model(x)).shape)
    with tempfile.TemporaryDirectory() as tmp:  # save -> load into a fresh instance -> bit-equal outputs
        path = Path(tmp) / "m.safetensors"
        prunekit.save(half, path)
        torch.manual_seed(1)
        fresh, _, _, _ = build(spec)
        loaded = prunekit.load(path, model=fresh)
        with torch.no_grad():
            row["load_equal"] = bool(torch.equal(_logits(loaded(x)), _logits(half(x))))
        row["file_mb"] = round(path.stat().st_size / 2**20, 1)
    del half
    t = time.perf_counter()
    two = prunekit.prune(model, x, reduce="macs=2x", criterion="l1", prune_heads=True)
    row["macs2x_seconds"] = round(time.perf_counter() - t, 2)
    row["macs2x_params"] = _params(two)
    row["macs2x_macs_kept"] = round(count_macs(two, spec_in)[0] / row["macs"], 4)
    del two
    exact_model = copy.deepcopy(model).double()
    xd = x.double() if x.is_floating_point() else x
    pruned = prunekit.prune(exact_model, xd, ratio=0.5, criterion="l1", prune_heads=True, prune_hidden=False)
    masked = zero_channels(copy.deepcopy(exact_model), pruned.prunekit_plan)
    with torch.no_grad():
        out = _logits(pruned(xd))
        row["exact_max_abs"] = float((out - _logits(masked(xd))).abs().max())
        row["exact_vs_unmasked"] = float((out - _logits(exact_model(xd))).abs().max())  # what the removal changed
    row["exact_params"] = _params(pruned)
    row["exact_skipped"] = pruned.prunekit_plan.skipped


def _tp_heads(model: Any) -> Dict[Any, int]:
    """Torch-Pruning's ``num_heads``: each q/k/v projection -> its head count (their examples' first loop)."""
    from torch import nn
    heads: Dict[Any, int] = {}
    cfg = getattr(model, "config", None)
    for m in model.modules():
        for q, k, v in (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"), ("q_lin", "k_lin", "v_lin")):
            if all(isinstance(getattr(m, a, None), nn.Linear) for a in (q, k, v)):
                n = getattr(m, "num_attention_heads", getattr(m, "n_heads", getattr(cfg, "num_attention_heads", 1)))
                kv = getattr(cfg, "num_key_value_heads", None) or n
                heads[getattr(m, q)] = n
                heads[getattr(m, k)] = kv
                heads[getattr(m, v)] = kv
        if type(m).__name__ == "Attention" and hasattr(m, "qkv") and hasattr(m, "num_heads"):  # timm
            heads[m.qkv] = m.num_heads
    return heads


def _tp_fix(model: Any, pruner: Any) -> None:
    """The attribute fixes of Torch-Pruning's examples: head count from the pruner, head size = q width / heads."""
    from torch import nn
    for m in model.modules():
        for q in ("query", "q_proj", "q_lin"):
            lin = getattr(m, q, None)
            if isinstance(lin, nn.Linear) and lin in pruner.num_heads:
                n = pruner.num_heads[lin]
                for a in ("num_attention_heads", "n_heads", "num_heads"):
                    if hasattr(m, a):
                        setattr(m, a, n)
                if hasattr(m, "attention_head_size") and not hasattr(m, "head_dim"):
                    m.attention_head_size = lin.out_features // n
                if hasattr(m, "all_head_size"):
                    m.all_head_size = lin.out_features
                if hasattr(m, "num_key_value_groups") and getattr(m, "k_proj", None) in pruner.num_heads:
                    m.num_key_value_groups = n // pruner.num_heads[m.k_proj]
        if type(m).__name__ == "Attention" and hasattr(m, "qkv") and m.qkv in pruner.num_heads:  # prune_timm_vit.py
            m.num_heads = pruner.num_heads[m.qkv]
            m.head_dim = m.qkv.out_features // (3 * m.num_heads)
            if hasattr(m, "attn_dim"):  # timm >= 1.0.20 reshapes with attn_dim too (after the example was written)
                m.attn_dim = m.num_heads * m.head_dim
        if type(m).__name__ == "VisionTransformer" and hasattr(m, "conv_proj"):  # torchvision_pruning.py
            m.hidden_dim = m.conv_proj.out_channels
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(model, "get_output_embeddings") and model.get_output_embeddings() is not None:
        cfg.hidden_size = model.get_output_embeddings().in_features


def peer(spec: str, row: Dict[str, Any]) -> None:
    """Torch-Pruning's documented transformer recipe on a fresh copy."""
    import torch
    import torch_pruning as tp

    torch.manual_seed(0)
    model, x, ignore_names, _ = build(spec)
    model.eval()
    with torch.no_grad():
        want = tuple(_logits(model(x)).shape)
    ignored = [model.get_submodule(n) for n in ignore_names]
    decoder = spec in ("hf/llama", "hf/mistral")
    groups = {m: m.num_heads for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)}  # torchvision
    pruner = tp.pruner.BasePruner(
        model, x, importance=tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean"),
        global_pruning=False, pruning_ratio=0.5, num_heads=_tp_heads(model), prune_num_heads=True,
        prune_head_dims=False, head_pruning_ratio=0.5, ignored_layers=ignored, channel_groups=groups,
        output_transform=lambda out: _logits(out).sum(), round_to=4 if decoder else None)
    for g in pruner.step(interactive=True):
        g.prune()
    _tp_fix(model, pruner)
    row["tp_params"] = _params(model)
    with torch.no_grad():
        row["tp_runs"] = tuple(_logits(model(x)).shape) == want


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160] if text else ''}"


PEER_KEYS = ("tp_params", "tp_runs", "peer_error", "peer_trace", "timeout")


def run_one(spec: str, path: str, keep_peer: bool = False) -> None:
    import warnings

    import torch
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    row: Dict[str, Any] = {"model": spec}
    old = json.loads(Path(path).read_text()) if keep_peer and Path(path).exists() else None
    stages = [("ours", ours)] + ([] if old is not None else [("peer", peer)])
    if old is not None:  # the peer's earlier result stands (e.g. one that ran out of time)
        row.update({k: v for k, v in old.items() if k in PEER_KEYS})
    for stage, fn in stages:
        try:
            fn(spec, row)
        except Exception as e:  # the table records the failure with its reason
            row[f"{stage}_error"] = _first_line(e)
            row[f"{stage}_trace"] = traceback.format_exc().splitlines()[-6:]
        Path(path).write_text(json.dumps(row, indent=1, default=str))


def table(rows: List[Dict[str, Any]]) -> str:
    head = ("| model | params | ratio 0.5 (heads, MLP, hidden) | macs=2x: params, MACs kept | hidden kept: params, "
            "max abs diff vs masked (fp64) | save->load(model=) | Torch-Pruning (its recipe) |\n|---|---|---|---|---|---|---|")
    lines = [head]
    m = lambda n: f"{n / 1e6:.1f}M"  # noqa: E731
    for r in rows:
        if "ours_error" in r and "ratio_params" not in r:
            ours_cells = [f"FAIL: {r['ours_error']}"] + [""] * 3
        else:
            ours_cells = [
                f"{m(r['ratio_params'])}" + (f" ({len(r['ratio_skipped'])} left whole)" if r.get("ratio_skipped") else ""),
                f"{m(r['macs2x_params'])}, {r['macs2x_macs_kept']:.3f}" if "macs2x_params" in r
                else f"FAIL: {r.get('ours_error', '')}",
                (f"{m(r['exact_params'])}, {r['exact_max_abs']:.1e}" + (f" (vs unmasked {r['exact_vs_unmasked']:.1e})"
                 if "exact_vs_unmasked" in r else "")) if "exact_max_abs" in r else "",
                ("equal" if r.get("load_equal") else "DIFFERS") + (f" ({r['file_mb']} MB)" if "file_mb" in r else ""),
            ]
        tp = (f"{m(r['tp_params'])}" + ("" if r.get("tp_runs") else " (does not run)") if "tp_params" in r
              else f"FAIL: {r['peer_error']}" if "peer_error" in r
              else f"did not finish in {r['timeout']:.0f} s" if "timeout" in r else "not run")
        lines.append(f"| {r['model']} | {m(r['params'])} | " + " | ".join(ours_cells) + f" | {tp} |"
                     if "params" in r else f"| {r['model']} | FAIL: {r.get('ours_error')} | | | | | {tp} |")
    return "\n".join(lines)


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--rerun", action="store_true", help="redo models that already have a result file")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per model")
    ap.add_argument("--keep-peer", action="store_true", help="with --rerun: redo prunekit's cells only, keeping "
                    "the peer's recorded result")
    args = ap.parse_args(argv)
    rows_dir = RESULTS / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    for spec in args.models:
        path = rows_dir / (spec.replace("/", "__") + ".json")
        if path.exists() and not args.rerun:
            continue
        t = time.perf_counter()
        proc = ctx.Process(target=run_one, args=(spec, str(path), args.keep_peer))
        proc.start()
        proc.join(args.timeout)
        if proc.is_alive():
            proc.kill()
            row = json.loads(path.read_text()) if path.exists() else {"model": spec}
            row["timeout"] = args.timeout
            path.write_text(json.dumps(row, indent=1))
        print(f"{spec}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    rows = [json.loads((rows_dir / (s.replace("/", "__") + ".json")).read_text()) for s in MODELS
            if (rows_dir / (s.replace("/", "__") + ".json")).exists()]
    md = table(rows)
    (RESULTS / "table.md").write_text(md + "\n")
    (RESULTS / "coverage.json").write_text(json.dumps(rows, indent=1, default=str))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
