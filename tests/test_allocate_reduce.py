"""Targets users think in: --reduce parsing and the ratio search that lands on a parameter/MAC reduction."""
from __future__ import annotations

import copy

import pytest
import torch

import prunekit
from prunekit.apply.structured import apply_plan
from prunekit.errors import ConfigError
from prunekit.measure import count_macs, count_params
from prunekit.plan import make_plan
from prunekit.allocate.reduce import parse_reduce, ratio_for_target, reach, search_ratio

X = torch.randn(1, 3, 32, 32)


@pytest.mark.parametrize("text, want", [("params=0.4", {"params": 0.4}), ("macs=50%", {"macs": 0.5}),
                                        ("MACS = 2x", {"macs": 0.5}), ("params=4x", {"params": 0.75})])
def test_parse_reduce(text, want):
    got = parse_reduce(text)
    assert got.keys() == want.keys() and got[next(iter(want))] == pytest.approx(next(iter(want.values())))


@pytest.mark.parametrize("text, match", [("params", "METRIC=AMOUNT"), ("flops=0.5", "unknown"),
                                         ("params=abc", "not a number"), ("params=1.2", r"\(0, 1\)"),
                                         ("macs=0", r"\(0, 1\)"), ("macs=1x", "factor must be > 1")])
def test_parse_reduce_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_reduce(text)


def _reduction(model, ratio, metric, **kw):
    plan, graph = make_plan(model, X, ratio=ratio, return_graph=True, **kw)
    twin = apply_plan(copy.deepcopy(model), plan, graph=graph)
    if metric == "params":
        return 1 - count_params(twin) / count_params(model)
    return 1 - count_macs(twin, (3, 32, 32))[0] / count_macs(model, (3, 32, 32))[0]


def test_ratio_for_target_hits_params_within_one_percent():
    model = prunekit.create_model("vgg_tiny", 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ratio = ratio_for_target(model, X, {"params": 0.4}, criterion="l1")
    assert 0 < ratio < 0.95
    assert abs(_reduction(model, ratio, "params") - 0.4) <= 0.01
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # dry runs on copies


def test_search_with_overrides_lands_on_macs_target():
    model = prunekit.create_model("vgg_tiny", 4)
    found = search_ratio(model, X, {"macs": 0.5})
    assert abs(found.achieved - 0.5) <= 0.01
    assert abs(_reduction(model, metric="macs", **found.plan_kwargs()) - found.achieved) < 1e-12


def test_unreachable_target_is_a_config_error():
    model = prunekit.create_model("vgg_tiny", 4)
    with pytest.raises(ConfigError, match="cannot remove"):
        search_ratio(model, X, {"params": 0.9}, max_ratio=0.2)
    with pytest.raises(ConfigError, match="exactly one metric"):
        search_ratio(model, X, {"params": 0.4, "macs": 0.5})


@pytest.mark.parametrize("target, achieved, ok", [(0.999, 0.99436, False), (0.5, 0.4975, True), (0.5, 0.48, False),
                                                   (0.9, 0.89, True), (0.9, 0.87, False), (0.5, 0.6, True)])
def test_reach_compares_what_is_kept_not_only_the_fraction_removed(target, achieved, ok):
    rec = reach("macs", target, achieved)
    assert rec["target_reached"] is ok and rec["requested"] == target and rec["reached"] == achieved
    assert rec["requested_factor"] == pytest.approx(1 / (1 - target), abs=0.01)


def test_a_factor_no_plan_reaches_is_a_warning_with_both_numbers(caplog):
    model = prunekit.create_model("vgg_tiny", 4)
    with caplog.at_level("WARNING", logger="prunekit.allocate.reduce"):
        found = search_ratio(model, X, parse_reduce("macs=1000x"))
    assert found.achieved < 0.999 - 0.002  # the per-layer cap keeps more than a thousandth
    warned = [r.getMessage() for r in caplog.records if r.name == "prunekit.allocate.reduce"]
    assert len(warned) == 1 and "not reached" in warned[0] and "1000x" in warned[0] and "\n" not in warned[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="prunekit.allocate.reduce"):
        search_ratio(model, X, {"macs": 0.5})
    assert not caplog.records  # a reached target says nothing


def test_the_ratio_search_traces_the_model_once_and_its_ratio_reproduces_the_reduction(monkeypatch):
    from prunekit import graph as graph_module
    from prunekit import plan as plan_module
    from prunekit.allocate import reduce as reduce_module

    torch.manual_seed(0)
    model = prunekit.create_model("vgg_tiny", 4).eval()
    x = torch.randn(1, 3, 32, 32)
    traces = []
    real = plan_module.build_graph
    for module in (graph_module, plan_module, reduce_module):
        monkeypatch.setattr(module, "build_graph", lambda *a, **k: traces.append(1) or real(*a, **k))
    found = search_ratio(model, x, {"macs": 0.5}, round_to=4)
    assert len(found.trials) > 2 and len(traces) == 1  # every trial reuses the one traced graph
    for module in (graph_module, plan_module, reduce_module):
        monkeypatch.setattr(module, "build_graph", real)
    twin = apply_plan(copy.deepcopy(model), make_plan(model, x, round_to=4, **found.plan_kwargs()))
    red = 1 - count_macs(twin, (3, 32, 32))[0] / count_macs(model, (3, 32, 32))[0]
    assert red == pytest.approx(found.achieved, abs=1e-9) and red == pytest.approx(0.5, abs=0.01)


class _DataDependent(torch.nn.Module):
    """Its forward reads a value (``float(...)``), which the meta device cannot give."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.b = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.a(x))
        if float(x.mean()) > -1.0:
            x = torch.relu(self.b(x))
        return self.head(x.mean((2, 3)))


def test_trials_are_counted_on_the_meta_device_without_copying_weights(monkeypatch):
    import types

    from prunekit.allocate import reduce as targets

    model = prunekit.create_model("vgg_tiny", 4).eval()

    def no_copy(*_):
        raise AssertionError("a trial copied the real model")

    monkeypatch.setattr(targets, "copy", types.SimpleNamespace(deepcopy=no_copy))
    found = search_ratio(model, X, {"params": 0.4})
    monkeypatch.undo()
    assert abs(found.achieved - 0.4) <= 0.01
    assert _reduction(model, metric="params", **found.plan_kwargs()) == pytest.approx(found.achieved, abs=1e-12)


def test_a_model_that_cannot_run_on_meta_is_counted_on_real_copies():
    torch.manual_seed(0)
    model = _DataDependent().eval()
    x = torch.randn(1, 3, 16, 16)
    found = search_ratio(model, x, {"macs": 0.5})
    plan = make_plan(model, x, **found.plan_kwargs())  # verified on real copies (it cannot run on meta)
    twin = apply_plan(copy.deepcopy(model), plan)
    red = 1 - count_macs(twin, (3, 16, 16))[0] / count_macs(model, (3, 16, 16))[0]
    assert red == pytest.approx(found.achieved, abs=1e-12) and 0.4 < red < 0.6
    assert twin(x).shape == (1, 4)
