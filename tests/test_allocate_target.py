"""Target -> plan: one typed target, one function every route calls, and a search that hands back its plan."""
from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.allocate import Target, plan_for_target, search_ratio
from prunekit.allocate import reduce as reduce_module
from prunekit.apply.oneshot import checked_plan
from prunekit.errors import ConfigError

X = torch.randn(1, 3, 32, 32)


def _model():
    torch.manual_seed(0)
    return prunekit.create_model("resnet_tiny", 4, widths=[16, 32], blocks=[1, 1]).eval()


def _removed(plan):
    return [(g.key, g.remove) for g in plan.groups]


@pytest.mark.parametrize("kw, kind", [
    ({}, "ratio"), ({"ratio": 0.3}, "ratio"), ({"reduce": "macs=2x"}, "reduce"), ({"reduce": {"params": 0.4}}, "reduce"),
    ({"reduce": "latency=2x"}, "latency_target"), ({"reduce": "macs=2x", "allocation": "fastest"}, "fastest"),
    ({"allocation": "budget"}, "budget"),
])
def test_target_names_its_allocator(kw, kind):
    target = Target.of(**kw)
    assert target.kind == kind
    assert target.ratio == (None if "reduce" in kw else kw.get("ratio", 0.5))  # no target at all: ratio 0.5


@pytest.mark.parametrize("kw, match", [({"ratio": 0.5, "reduce": "macs=2x"}, "not both"),
                                       ({"allocation": "latency"}, "give reduce"),
                                       ({"allocation": "greedy"}, "allocation='greedy'"),
                                       ({"reduce": "flops=2x"}, "flops")])
def test_target_refuses_what_it_cannot_reach(kw, match):
    with pytest.raises(ConfigError, match=match):
        Target.of(**kw)


def test_a_ratio_target_is_the_one_shot_plan():
    model = _model()
    found = plan_for_target(model, X, Target.of(ratio=0.4), "l1", scope="global", round_to=4)
    plan, _ = checked_plan(model, X, ratio=0.4, criterion="l1", scope="global", round_to=4)
    assert _removed(found.plan) == _removed(plan) and found.plan_kwargs["ratio"] == 0.4


def test_the_search_hands_back_its_plan_traced_and_scored_once(monkeypatch):
    """plan_for_target(reduce) plans nothing again: one trace and one scoring by the criterion, in the search; the
    plan it returns is the make_plan plan of the ratio (and overrides) it found."""
    calls = {"trace": 0, "score": 0}

    def counted(fn, what):
        def wrapper(*a, **k):
            calls[what] += 1
            return fn(*a, **k)
        return wrapper

    monkeypatch.setattr(reduce_module, "build_graph", counted(reduce_module.build_graph, "trace"))
    monkeypatch.setattr(reduce_module, "score_groups", counted(reduce_module.score_groups, "score"))
    import prunekit.plan as plan_module
    monkeypatch.setattr(plan_module, "build_graph", counted(plan_module.build_graph, "trace"))
    monkeypatch.setattr(plan_module, "score_groups", counted(plan_module.score_groups, "score"))
    model = _model()
    found = plan_for_target(model, X, Target.of(reduce="macs=2x"), "fpgm")
    assert calls == {"trace": 1, "score": 1}
    assert found.record["reduce_target"]["target_reached"]
    again, _ = checked_plan(model, X, criterion="fpgm", **found.plan_kwargs)
    assert _removed(found.plan) == _removed(again) and found.plan.settings["criterion"] == "fpgm"
    search = search_ratio(model, X, {"macs": 0.5}, criterion="fpgm")
    assert search.plan is not None and search.graph is not None and _removed(search.plan) == _removed(found.plan)
