"""Sparse inference kernels compute what the dense layers compute, and the swap follows the measurements."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError, ModelError
from prunekit.sparse import kernels, magnitude_prune
from prunekit.sparse.kernels import SparseConv2d, SparseLinear, apply_decisions, sparsify_for_inference

warnings.filterwarnings("ignore", message="Sparse (CSR|BSR) tensor support is in beta")


def _sparse_(module: nn.Module, ratio: float = 0.8) -> nn.Module:
    with torch.no_grad():
        module.weight[torch.rand_like(module.weight) < ratio] = 0
    return module


@pytest.mark.parametrize("kind", ["csr", "bsr"])
@pytest.mark.parametrize("bias", [True, False])
def test_sparse_linear_matches_dense(kind, bias):
    torch.manual_seed(0)
    lin = _sparse_(nn.Linear(16, 12, bias=bias))
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        assert torch.allclose(SparseLinear(lin, kind)(x), lin(x), atol=1e-5)


@pytest.mark.parametrize("kw", [dict(kernel_size=3, padding=1), dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=1), dict(kernel_size=1, stride=2), dict(kernel_size=(3, 1)),
                                dict(kernel_size=3, dilation=2, padding=2, bias=False)])
def test_sparse_conv_matches_dense(kw):
    torch.manual_seed(0)
    conv = _sparse_(nn.Conv2d(8, 12, **kw))
    x = torch.randn(3, 8, 9, 7)
    with torch.no_grad():
        for kind in ("csr", "bsr"):
            if kind == "bsr" and (8 * conv.kernel_size[0] * conv.kernel_size[1]) % 4:
                continue
            assert torch.allclose(SparseConv2d(conv, kind)(x), conv(x), atol=1e-5), kind


def test_sparse_weight_uses_less_memory_and_keeps_dense_state_dict():
    torch.manual_seed(0)
    lin = _sparse_(nn.Linear(256, 256), 0.9)
    sparse = SparseLinear(lin)
    assert kernels.sparse_bytes(sparse.weight_sparse) < 0.3 * lin.weight.numel() * 4
    state = sparse.state_dict()
    assert set(state) == {"weight", "bias"} and torch.equal(state["weight"], lin.weight.detach())
    other = _sparse_(nn.Linear(256, 256), 0.5)
    sparse.load_state_dict(other.state_dict())
    x = torch.randn(4, 256)
    with torch.no_grad():
        assert torch.allclose(sparse(x), other(x), atol=1e-5)


def test_grouped_conv_is_not_a_candidate_and_bad_kind_is_an_error():
    with pytest.raises(ConfigError, match="grouped"):
        SparseConv2d(nn.Conv2d(8, 8, 3, groups=8))
    with pytest.raises(ConfigError, match="coo"):
        sparsify_for_inference(nn.Sequential(nn.Linear(2, 2)), None, torch.randn(1, 2), kinds=("coo",))


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def _fake_times(winner: str):
    def fake(fns, repeats=15, min_seconds=0.0, stat="min", clock="auto"):
        return {k: (1.0 if k == winner else 5.0) for k in fns}
    return fake


@pytest.mark.parametrize("winner", ["dense", "csr"])
def test_decisions_follow_the_measurements(monkeypatch, winner):
    monkeypatch.setattr(kernels, "time_candidates", _fake_times(winner))
    model = tiny_cnn()
    masks = magnitude_prune(model, 0.8, skip_first=False, skip_last=False)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model.eval()(x)
    model, decisions = sparsify_for_inference(model, masks, x)
    assert set(decisions["layers"]) == {"0", "2", "7", "9"}  # the grouped conv (4) is left alone
    assert all(d["kind"] == winner for d in decisions["layers"].values())
    swapped = {n for n, m in model.named_modules() if isinstance(m, (SparseLinear, SparseConv2d))}
    assert swapped == (set(decisions["layers"]) if winner == "csr" else set())
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-5)
    json.dumps(decisions)  # stored in the checkpoint as JSON

    fresh = tiny_cnn()
    magnitude_prune(fresh, 0.8, skip_first=False, skip_last=False)
    apply_decisions(fresh, json.loads(json.dumps(decisions)))
    assert {n for n, m in fresh.named_modules() if isinstance(m, SparseLinear | SparseConv2d)} == swapped
    assert set(fresh.state_dict()) == set(tiny_cnn().state_dict())


def test_small_speedups_keep_dense(monkeypatch):
    monkeypatch.setattr(kernels, "time_candidates", lambda fns, repeats=15: {k: 1.0 if k == "dense" else 0.95
                                                                            for k in fns})
    model, decisions = sparsify_for_inference(tiny_cnn(), None, torch.randn(1, 3, 8, 8), min_speedup=1.1)
    assert all(d["kind"] == "dense" for d in decisions["layers"].values())


def test_real_timing_runs_and_records_times():
    model = tiny_cnn()
    masks = magnitude_prune(model, 0.95, skip_first=False, skip_last=False)
    _, decisions = sparsify_for_inference(model, masks, torch.randn(1, 3, 8, 8), kinds=("csr", "bsr"), repeats=2)
    for d in decisions["layers"].values():
        assert d["times_ms"]["dense"] > 0 and d["kind"] in d["times_ms"]


def test_apply_decisions_rejects_unknown_layers():
    with pytest.raises(ModelError, match="nope"):
        apply_decisions(tiny_cnn(), {"layers": {"nope": {"kind": "csr"}}})
    with pytest.raises(ModelError):
        apply_decisions(tiny_cnn(), {"kind": "csr"})
