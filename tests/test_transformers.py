"""Hugging Face transformers built from tiny configs (no download): heads, MLP neurons and the hidden size.

Each family gets a model in which half the attention heads (their q, k and v rows; under GQA a key/value head with
the query heads that share it) and half the MLP neurons are exactly zero, zeroed here by hand through the modules'
own names, not through prunekit. Pruning it with ``criterion="l1"`` must remove exactly those and leave the output
unchanged, with the head attributes and the config agreeing with the weights. The hidden size, which LayerNorm /
RMSNorm normalise over, cannot be removed exactly: there every pruned tensor must be an exact slice of the
original, with one kept-index set for the embeddings and norms of the stream.
"""
from __future__ import annotations

import copy
import warnings
from typing import Callable, Dict, List, Tuple

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

import prunekit  # noqa: E402
from prunekit.errors import NothingPrunedError  # noqa: E402

H, LAYERS, HEADS, FFN, VOCAB = 32, 2, 4, 48, 50


def _bert() -> nn.Module:
    return transformers.BertForSequenceClassification(transformers.BertConfig(
        hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN, vocab_size=VOCAB,
        max_position_embeddings=32, num_labels=3))


def _roberta() -> nn.Module:
    return transformers.RobertaForSequenceClassification(transformers.RobertaConfig(
        hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN, vocab_size=VOCAB,
        max_position_embeddings=40, num_labels=3))


def _distilbert() -> nn.Module:
    return transformers.DistilBertForSequenceClassification(transformers.DistilBertConfig(
        dim=H, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN, vocab_size=VOCAB, max_position_embeddings=32,
        num_labels=3))


def _gpt2() -> nn.Module:
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_embd=H, n_layer=LAYERS, n_head=HEADS, n_inner=FFN, vocab_size=VOCAB, n_positions=32, bos_token_id=0,
        eos_token_id=0))


def _llama() -> nn.Module:
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=2,
        intermediate_size=FFN, vocab_size=VOCAB, max_position_embeddings=32))


def _mistral() -> nn.Module:
    return transformers.MistralForCausalLM(transformers.MistralConfig(
        hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=2,
        intermediate_size=FFN, vocab_size=VOCAB, max_position_embeddings=32, sliding_window=4))


def _vit() -> nn.Module:
    return transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN, image_size=16,
        patch_size=4, num_labels=3))


def _swin() -> nn.Module:
    return transformers.SwinForImageClassification(transformers.SwinConfig(
        image_size=16, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4, num_labels=3))


# family -> (builder, attention (q, k, v, o) child names, MLP (inputs, output) names relative to the layer)
FAMILIES: Dict[str, Tuple[Callable[[], nn.Module], Tuple[str, str, str, str], Tuple[Tuple[str, ...], str]]] = {
    "bert": (_bert, ("self.query", "self.key", "self.value", "output.dense"), (("intermediate.dense",), "output.dense")),
    "roberta": (_roberta, ("self.query", "self.key", "self.value", "output.dense"),
                (("intermediate.dense",), "output.dense")),
    "distilbert": (_distilbert, ("q_lin", "k_lin", "v_lin", "out_lin"), (("ffn.lin1",), "ffn.lin2")),
    "gpt2": (_gpt2, ("c_attn", "c_attn", "c_attn", "c_proj"), (("mlp.c_fc",), "mlp.c_proj")),
    "llama": (_llama, ("q_proj", "k_proj", "v_proj", "o_proj"), (("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj")),
    "mistral": (_mistral, ("q_proj", "k_proj", "v_proj", "o_proj"),
                (("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj")),
    "vit": (_vit, ("q_proj", "k_proj", "v_proj", "o_proj"), (("mlp.fc1",), "mlp.fc2")),
    "swin": (_swin, ("q_proj", "k_proj", "v_proj", "o_proj"), (("mlp.fc1",), "mlp.fc2")),
}
HEADS_KEPT = {"bert": ["bert.pooler"], "roberta": ["classifier"], "distilbert": ["pre_classifier"]}  # not zeroed here
ATTENTION = {"bert": "attention", "roberta": "attention", "distilbert": "attention", "gpt2": "attn",
             "llama": "self_attn", "mistral": "self_attn", "vit": "attention", "swin": "attention"}


def _example(family: str, seq: int = 7, batch: int = 2) -> torch.Tensor:
    if family in ("vit", "swin"):
        return torch.randn(batch, 3, 16, 16, dtype=torch.float64)
    return torch.randint(1, VOCAB, (batch, seq))


def _out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).logits


def _zero_outputs(mod: nn.Module, idx: List[int]) -> None:
    """Zero the output channels ``idx`` of a Linear (rows) or transformers Conv1D (columns), bias included."""
    at = torch.tensor(idx, dtype=torch.long)
    with torch.no_grad():
        mod.weight.index_fill_(1 if type(mod).__name__ == "Conv1D" else 0, at, 0.0)
        if mod.bias is not None:
            mod.bias.index_fill_(0, at, 0.0)


def _zero_inputs(mod: nn.Module, idx: List[int]) -> None:
    at = torch.tensor(idx, dtype=torch.long)
    with torch.no_grad():
        mod.weight.index_fill_(0 if type(mod).__name__ == "Conv1D" else 1, at, 0.0)


def _attention_modules(model: nn.Module, family: str) -> List[Tuple[str, nn.Module]]:
    q_name = FAMILIES[family][1][0]
    return [(n, m) for n, m in model.named_modules()
            if n.endswith("." + ATTENTION[family]) and m.get_submodule(q_name) is not None]


def _zero_half_heads_and_neurons(model: nn.Module, family: str) -> None:
    """Zero heads 1 and 3 (q/k/v rows, and the output columns; GQA: kv head 1 with its query heads) and the odd
    MLP neurons of every layer, by the modules' own names."""
    q, k, v, o = FAMILIES[family][1]
    for _, attn in _attention_modules(model, family):
        qm, om = attn.get_submodule(q), attn.get_submodule(o)
        q_out = qm.weight.shape[1] // 3 if q == k else qm.weight.shape[0]
        kv_out = q_out if q == k else attn.get_submodule(k).weight.shape[0]
        d = om.weight.shape[0 if type(om).__name__ == "Conv1D" else 1] // (q_out // _head_dim(attn, q_out))
        heads, kv_heads = q_out // d, kv_out // d
        rep = heads // kv_heads
        gone_kv = [g for g in range(kv_heads) if g % 2 == 1]
        gone_q = [h for h in range(heads) if h // rep in gone_kv]
        rows_q = [h * d + i for h in gone_q for i in range(d)]
        rows_kv = [g * d + i for g in gone_kv for i in range(d)]
        if q == k:  # GPT-2: one Conv1D with q, k and v side by side
            _zero_outputs(qm, rows_q + [q_out + r for r in rows_q] + [2 * q_out + r for r in rows_q])
        else:
            _zero_outputs(qm, rows_q)
            _zero_outputs(attn.get_submodule(k), rows_kv)
            _zero_outputs(attn.get_submodule(v), rows_kv)
        _zero_inputs(om, rows_q)
    ins, out = FAMILIES[family][2]
    for name, mod in list(model.named_modules()):
        if not name.endswith("." + ins[0]):
            continue
        prefix = name[: -len(ins[0])]
        width = mod.weight.shape[1 if type(mod).__name__ == "Conv1D" else 0]
        odd = list(range(1, width, 2))
        for part in ins:
            _zero_outputs(model.get_submodule(prefix + part), odd)
        _zero_inputs(model.get_submodule(prefix + out), odd)


def _head_dim(attn: nn.Module, q_out: int) -> int:
    for a in ("head_dim", "attention_head_size"):
        if isinstance(getattr(attn, a, None), int):
            return getattr(attn, a)
    return q_out // HEADS


@pytest.mark.parametrize("family", list(FAMILIES))
def test_zero_heads_and_neurons_are_removed_without_changing_the_output(family):
    torch.manual_seed(0)
    model = FAMILIES[family][0]().double().eval()
    _zero_half_heads_and_neurons(model, family)
    x = _example(family)
    before = _out(model, x)
    n_before = sum(p.numel() for p in model.parameters())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned = prunekit.prune(model, x, ratio=0.5, criterion="l1", prune_heads=True, prune_hidden=False,
                                ignore=HEADS_KEPT.get(family, []))
    said = {str(w.message) for w in caught if issubclass(w.category, prunekit.errors.PruningWarning)}
    # nothing may be left whole or changed; Swin's per-stage head list in its config is named as stale
    expected = "model.config.num_attention_heads stays [2, 4]" if family == "swin" else None
    assert all(expected and m.startswith(expected) for m in said) and bool(said) == bool(expected), said
    assert (_out(pruned, x) - before).abs().max().item() <= 1e-5
    assert sum(p.numel() for p in pruned.parameters()) < 0.75 * n_before
    x2 = _example(family, seq=11, batch=3)  # another length and batch: no width was frozen in
    assert _out(pruned, x2).shape[0] == 3
    for name, attn in _attention_modules(pruned, family):
        _check_head_attributes(family, name, attn, _attention_modules(model, family))
    _check_config(family, pruned)


def _check_head_attributes(family: str, name: str, attn: nn.Module, originals) -> None:
    """Half the heads are gone, the head size kept, and every head attribute agrees with the weights."""
    q, k, _, o = FAMILIES[family][1]
    orig = dict(originals)[name]
    holder, orig_holder = _attribute_holder(attn), _attribute_holder(orig)  # BERT: attention.self
    heads_attr = next(a for a in ("num_attention_heads", "num_heads", "n_heads") if hasattr(orig_holder, a)) \
        if family not in ("llama", "mistral") else None
    d = _head_dim(holder, 0)
    assert d == _head_dim(orig_holder, 0)  # whole heads went: the head size is unchanged
    q_out = attn.get_submodule(q).weight.shape[1] // 3 if q == k else attn.get_submodule(q).weight.shape[0]
    orig_q = orig.get_submodule(q).weight.shape[1] // 3 if q == k else orig.get_submodule(q).weight.shape[0]
    assert q_out == orig_q // 2
    if heads_attr is not None:
        assert getattr(holder, heads_attr) * d == q_out
        assert getattr(holder, heads_attr) == getattr(orig_holder, heads_attr) // 2
    for a in ("all_head_size", "split_size"):
        if hasattr(holder, a):
            assert getattr(holder, a) == q_out
    if family in ("llama", "mistral"):
        assert attn.get_submodule(k).weight.shape[0] == attn.get_submodule(q).weight.shape[0] // attn.num_key_value_groups


def _attribute_holder(attn: nn.Module) -> nn.Module:
    """The module that keeps the head attributes: the attention module itself, or its ``self`` child (BERT)."""
    for m in attn.modules():
        if any(isinstance(getattr(m, a, None), int) for a in ("head_dim", "attention_head_size")):
            return m
    return attn


def _check_config(family: str, model: nn.Module) -> None:
    cfg = model.config
    if family == "swin":  # per-stage head counts: the config keeps them (layers differ); the modules hold the truth
        return
    heads = getattr(cfg, "num_attention_heads", getattr(cfg, "n_heads", None))
    assert heads == HEADS // 2
    if family in ("llama", "mistral"):
        assert cfg.num_key_value_heads == 1
    inner = {"bert": "intermediate_size", "roberta": "intermediate_size", "llama": "intermediate_size",
             "mistral": "intermediate_size", "vit": "intermediate_size", "distilbert": "hidden_dim",
             "gpt2": "n_inner"}[family]
    assert getattr(cfg, inner) == FFN // 2


def _rows_match(new: torch.Tensor, orig: torch.Tensor) -> bool:
    """Every row of ``new`` equals a row of ``orig``, in increasing order (an exact row subset)."""
    j = 0
    for row in new:
        while j < orig.shape[0] and not torch.equal(orig[j], row):
            j += 1
        if j == orig.shape[0]:
            return False
        j += 1
    return True


def _is_slice(new: torch.Tensor, orig: torch.Tensor, keep: torch.Tensor, hidden: int) -> bool:
    """``new`` is ``orig`` with the hidden dims cut to ``keep`` and any other dim cut to a subset."""
    if new.shape == orig.shape:
        return torch.equal(new, orig)
    if orig.dim() == 1:
        return (orig.shape[0] == hidden and torch.equal(new, orig[keep])) or _rows_match(new[:, None], orig[:, None])
    tries = []
    if orig.shape[1] == hidden:
        tries.append((new, orig[:, keep]))
    if orig.shape[0] == hidden:
        tries.append((new.t(), orig[keep].t()))
    tries += [(new, orig), (new.t(), orig.t())]
    return any(a.shape[1] == b.shape[1] and _rows_match(a, b) for a, b in tries)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_hidden_size_is_cut_by_one_kept_index_set_across_the_stream(family):
    torch.manual_seed(1)
    model = FAMILIES[family][0]().double().eval()
    x = _example(family)
    pruned = prunekit.prune(model, x, ratio=0.5, criterion="l1")
    embed = model.get_input_embeddings()
    key = next(g.key for g in pruned.prunekit_plan.groups
               if any(n == f"{g.module}" for n, m in model.named_modules() if m is embed))
    plan_group = next(g for g in pruned.prunekit_plan.groups if g.key == key)
    keep = torch.tensor(sorted(set(range(plan_group.size)) - set(plan_group.remove)))
    assert len(keep) == H // 2 and pruned.config.hidden_size == H // 2
    assert torch.equal(pruned.get_input_embeddings().weight, embed.weight[:, keep])
    originals = dict(model.named_parameters())
    for name, p in pruned.named_parameters():
        orig = originals[name]
        assert _is_slice(p.detach(), orig.detach(), keep, H), name
        if "norm" in name.lower() or "ln_" in name or "LayerNorm" in name:
            assert torch.equal(p.detach(), orig.detach()[keep]), name  # every norm of the stream: the same keep
    assert _out(pruned, x).shape == _out(model, x).shape


def test_gpt2_ties_stay_tied_stored_once_and_nothing_is_pruned_silently(tmp_path):
    model = _gpt2().eval()
    x = _example("gpt2")
    pruned = prunekit.prune(model, x, ratio=0.5, criterion="l1")
    assert pruned.lm_head.weight is pruned.transformer.wte.weight
    assert pruned.prunekit_plan.skipped == {}
    n = sum(p.numel() for p in pruned.parameters())  # the tied weight counted once
    assert n < 0.5 * sum(p.numel() for p in model.parameters())
    path = prunekit.save(pruned, tmp_path / "gpt2.safetensors")
    untied = copy.deepcopy(pruned)
    untied.lm_head.weight = nn.Parameter(untied.lm_head.weight.detach().clone())
    two_copies = prunekit.save(untied, tmp_path / "untied.safetensors").stat().st_size
    assert two_copies - path.stat().st_size >= 4 * pruned.transformer.wte.weight.numel()  # stored once
    loaded = prunekit.load(path, model=_gpt2())
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    assert torch.equal(_out(loaded, x), _out(pruned, x))


def test_macs_target_counts_on_the_token_input():
    model = _bert().eval()
    x = _example("bert")
    pruned = prunekit.prune(model, x, reduce="macs=2x", criterion="l1")
    from prunekit.measure import count_macs
    from prunekit.measure.state import InputSpec
    spec = InputSpec.from_example(x)
    ratio = count_macs(pruned, spec)[0] / count_macs(model, spec)[0]
    assert 0.4 <= ratio <= 0.6


def test_a_model_with_nothing_to_prune_is_an_error_not_a_copy():
    model = nn.Sequential(nn.Linear(4, 4))  # its only channels are the model's outputs
    with pytest.raises(NothingPrunedError, match="removed nothing"):
        prunekit.prune(model, torch.randn(1, 4), ratio=0.5)


def test_a_width_the_graph_cannot_see_is_left_whole_not_silently_wrong():
    class Counted(nn.Module):
        """Adds its hidden width to the output: removing any hidden channel changes the result."""

        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.b(h) + float(h.shape[1])

    with pytest.raises(NothingPrunedError, match="changes the output"):
        prunekit.prune(Counted().eval(), torch.randn(2, 4), ratio=0.5)


def test_a_config_the_layers_no_longer_agree_with_is_said_not_left_silently():
    model = _bert().eval()
    x = _example("bert")
    with pytest.warns(prunekit.errors.PruningWarning, match=r"config\.intermediate_size stays 48"):
        pruned = prunekit.prune(model, x, ratio=0.5, scope="global", criterion="l1")
    widths = {pruned.get_submodule(f"bert.encoder.layer.{i}.intermediate.dense").out_features for i in range(LAYERS)}
    assert len(widths) > 1 and pruned.config.intermediate_size == FFN  # global scope: the layers differ
