"""The front door (prunekit.prune / sparsify / compare) and the README's Python example, run as written."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.errors import ConfigError
from prunekit.measure import count_macs, count_params
from prunekit.sparse.nm import as_rows

X = torch.randn(2, 3, 32, 32)
README = Path(__file__).resolve().parents[1] / "README.md"


def _model():
    torch.manual_seed(0)
    return prunekit.create_model("vgg_tiny", 4).eval()


def test_prune_reaches_the_macs_target_on_a_copy_and_round_trips(tmp_path):
    model = _model()
    before = model(X)
    small = prunekit.prune(model, X[:1], criterion="fpgm", reduce="macs=2x").eval()
    assert torch.equal(model(X), before)  # the original is left whole
    red = 1 - count_macs(small, (3, 32, 32))[0] / count_macs(model, (3, 32, 32))[0]
    assert red == pytest.approx(0.5, abs=0.01)
    assert count_params(small) < count_params(model) and small(X).shape == before.shape
    assert small.prunekit_plan.groups and small.prunekit_plan.settings["criterion"] == "fpgm"
    prunekit.save(small, tmp_path / "small.safetensors")
    again = prunekit.load(tmp_path / "small.safetensors").eval()
    assert torch.equal(again(X), small(X))


def test_prune_without_the_exact_check_plans_the_same_on_a_target():
    """``exact=False`` only skips the numeric check; it is the front door's keyword, not a plan option, so it also
    works beside a target that the allocator searches for."""
    model = _model()
    checked = prunekit.prune(model, X[:1], reduce="macs=2x")
    unchecked = prunekit.prune(model, X[:1], reduce="macs=2x", exact=False)
    assert unchecked.prunekit_plan.groups == checked.prunekit_plan.groups


def test_prune_at_ratio_zero_is_the_identity():
    model = _model()
    same = prunekit.prune(model, X[:1], ratio=0.0).eval()
    assert count_params(same) == count_params(model)
    assert torch.allclose(same(X), model(X), atol=1e-6)


def test_prune_inplace_returns_the_same_module_smaller():
    model = _model()
    n = count_params(model)
    small = prunekit.prune(model, X[:1], ratio=0.5, inplace=True)
    assert small is model and count_params(model) < n


@pytest.mark.parametrize("kw, msg", [
    ({"ratio": 0.5, "reduce": "macs=2x"}, "not both"),
    ({"allocation": "latency"}, "give reduce"),
    ({"allocation": "greedy"}, "allocation='greedy'"),
    ({"criterion": "attention"}, "attention_prune"),
    ({"reduce": "flops=2x"}, "flops"),
    ({"round_to": "auto-gpu"}, "auto-gpu"),
])
def test_prune_refuses_bad_arguments_with_a_message_naming_them(kw, msg):
    with pytest.raises(ConfigError, match=re.escape(msg)):
        prunekit.prune(_model(), X[:1], **kw)


def test_sparsify_masks_the_asked_fraction_and_zeroes_it():
    model = _model()
    masks = prunekit.sparsify(model, ratio=0.8, scope="global")
    sp = masks.sparsity()
    assert sp.overall == pytest.approx(0.8, abs=0.01)
    for name, mask in masks.items():
        weight = dict(model.named_parameters())[name]
        assert int((weight[~mask] != 0).sum()) == 0


def test_sparsify_nm_keeps_two_of_every_four():
    model = _model()
    masks = prunekit.sparsify(model, nm="2:4")
    assert masks
    for mask in masks.values():
        rows = as_rows(mask)  # input channels innermost: the groups of four run along them
        assert rows.shape[1] % 4 == 0 and bool((rows.reshape(-1, 4).sum(1) == 2).all())


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's Python block, run as written except for the training length (1 epoch) and the model size."""
    text = README.read_text()
    block = re.search(r"## Python\n.*?```python\n(.*?)```", text, re.S).group(1)
    assert "prunekit.prune(" in block and "prunekit.sparsify(" in block and "prunekit.save(" in block
    fast = re.sub(r"epochs=\d+", "epochs=1", block).replace('"vgg_small"', '"vgg_tiny"')
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(fast, "README.md", "exec"), ns)
    model, small, x, masks = ns["model"], ns["small"], ns["x"], ns["masks"]
    shape = tuple(x.shape[1:])
    # "reduce='macs=2x'": half the MACs (the reduce search lands within a few percent), channels gone for real
    assert count_macs(small, shape)[0] / count_macs(model, shape)[0] == pytest.approx(0.5, abs=0.05)
    assert count_params(small) < count_params(model)
    # "prunekit.load('small.safetensors') rebuilds it": the same outputs from the file alone
    loaded = prunekit.load(tmp_path / "small.safetensors")
    with torch.no_grad():
        assert torch.equal(loaded(x), small.eval()(x))
    # "sparsify(model, ratio=0.9, scope='global')": 90% of the masked weights are zero in the model itself
    assert masks.sparsity().overall == pytest.approx(0.9, abs=0.01)
    weights = dict(model.named_parameters())
    assert all(int((weights[n][~m] != 0).sum()) == 0 for n, m in masks.items())
