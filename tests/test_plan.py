"""Plan: selection rules (ratio, global scope, overrides, rounding, rows, pins), validation, printing."""
from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.allocate import resolve_round_to
from prunekit.errors import ConfigError
from prunekit.graph import Group, Member
from prunekit.plan import Plan, make_plan, select
from tests.test_graph import TinyNet


def group(size: int, rows=None, kind: str = "") -> Group:
    g = Group(key="g", size=size, members=[Member("m", "weight", 0, "param", torch.arange(size))])
    if rows is not None:
        g.rows, g.row_kind = rows, kind
    return g


def test_select_removes_lowest_scores():
    scores = torch.tensor([5.0, 1.0, 4.0, 0.5, 3.0, 2.0])
    assert select(group(6), scores, 0.5, None, 1, False) == [1, 3, 5]


def test_select_rounds_kept_count_to_multiple():
    scores = torch.arange(32, dtype=torch.float)
    removed = select(group(32), scores, 0.4, 8, 1, False)  # keep 19.2 -> 16
    assert len(removed) == 16 and removed == list(range(16))


def test_select_keeps_equal_rows_and_whole_heads():
    rows = torch.arange(12).view(3, 4)
    scores = torch.tensor([9, 1, 8, 2, 1, 9, 2, 8, 5, 6, 0, 7], dtype=torch.float)
    removed = select(group(12, rows, "groups"), scores, 0.5, None, 1, False)
    assert removed == [1, 3, 4, 6, 8, 10]  # two lowest of each row
    g = group(12, rows, "heads")
    g.scopes = [("attn", (3, 4))]
    removed = select(g, scores, 0.34, None, 1, True)  # drop 1 of 3 heads: whole row 2 (sum 18)
    assert removed == [8, 9, 10, 11]


def test_select_respects_pins_and_min_channels():
    g = group(4)
    g.pinned = torch.tensor([True, False, False, False])
    assert select(g, torch.tensor([0.0, 1.0, 2.0, 3.0]), 0.75, None, 1, False) == [1, 2, 3]  # lowest is pinned
    assert select(group(4), torch.zeros(4), 0.99, None, 3, False) == [0]


def test_uniform_vs_global_and_overrides():
    model, x = TinyNet().eval(), torch.randn(1, 3, 16, 16)
    uni = make_plan(model, x, ratio=0.5)
    assert all(len(g.remove) >= g.size // 2 - 1 for g in uni.groups)
    glob = make_plan(model, x, ratio=0.5, scope="global")
    total = sum(g.size for g in uni.groups)
    assert abs(sum(len(g.remove) for g in glob.groups) - total / 2) <= total * 0.15
    over = make_plan(model, x, ratio=0.5, overrides={"head": 0.0})
    assert "head" not in {g.module for g in over.groups}


def test_bad_settings_raise_config_error():
    model, x = TinyNet().eval(), torch.randn(1, 3, 16, 16)
    for kw in ({"ratio": 1.0}, {"scope": "local"}, {"min_channels": 0}, {"round_to": "fast"},
               {"criterion": "nope"}, {"overrides": {"head": 2.0}}):
        with pytest.raises(ConfigError):
            make_plan(model, x, **{"ratio": 0.5, **kw})
    with pytest.raises(ConfigError, match="format"):
        Plan.from_json('{"groups": []}')


@pytest.fixture
def measured_multiple_8(monkeypatch, tmp_path):
    """'auto' as if this machine had measured 8 (a fresh cache, the measurement replaced), forgotten afterwards."""
    from prunekit.allocate import round_to as channel_multiple

    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(channel_multiple, "_measure", lambda runtime: 8)
    channel_multiple.auto_multiple.cache_clear()
    yield 8
    channel_multiple.auto_multiple.cache_clear()


def test_auto_rounding_gives_multiples(measured_multiple_8):
    model, x = prunekit.create_model("vgg_tiny", 4).eval(), torch.randn(1, 3, 16, 16)
    plan = make_plan(model, x, ratio=0.3, round_to=resolve_round_to("auto"))
    exact = make_plan(model, x, ratio=0.3)
    rounded = {g.key: g.size - len(g.remove) for g in plan.groups}
    kept = {g.key: rounded.get(g.key, g.size) for g in exact.groups}  # a group rounded back to whole is not listed
    assert plan.settings["round_to"] == 8 and len(kept) == 8  # every conv of vgg_tiny
    assert all(k % 8 == 0 for k in kept.values()), kept
    assert any(g.size - len(g.remove) != kept[g.key] for g in exact.groups)  # rounding changed some width


def test_grouped_rows_keep_a_multiple_in_total():
    model, x = TinyNet().eval(), torch.randn(1, 3, 16, 16)
    plan = make_plan(model, x, ratio=0.5, round_to=16)
    for g in plan.groups:
        kept = g.size - len(g.remove)
        assert g.size < 16 or kept % 16 == 0, (g.module, g.size, kept)


def test_make_plan_refuses_an_unresolved_auto_multiple_naming_the_fix():
    model, x = TinyNet().eval(), torch.randn(1, 3, 16, 16)
    with pytest.raises(ConfigError, match=r"resolve_round_to\('auto'\)"):
        make_plan(model, x, ratio=0.5, round_to="auto")


def _widths(plan):
    return {g.key: g.size - len(g.remove) for g in plan.groups}


@pytest.mark.parametrize("scope", ["uniform", "global"])
def test_original_widths_make_a_second_round_land_where_one_round_does(scope):
    """A model an earlier plan shrank, planned again with ``original=``: the ratio counts against the original widths,
    so two rounds leave what one round leaves (uniform: every width; global: the channel total)."""
    from prunekit.apply.structured import apply_plan
    from prunekit.graph import build_graph

    torch.manual_seed(0)
    model, x = prunekit.create_model("vgg_tiny", 4, widths=[16, 32]).eval(), torch.randn(1, 3, 16, 16)
    original = {g.key: g.size for g in build_graph(model, (x,)).groups}
    once = make_plan(model, x, ratio=0.6, scope=scope)
    first, graph = make_plan(model, x, ratio=0.3, scope=scope, return_graph=True)
    apply_plan(model, first, graph=graph)
    second = make_plan(model, x, ratio=0.6, scope=scope, original=original)
    after = {k: original[k] - len(g.remove) - len(next(f for f in second.groups if f.key == k).remove)
             for k, g in ((g.key, g) for g in first.groups)}
    if scope == "uniform":
        assert after == _widths(once) == {k: n - int(0.6 * n + 1e-9) for k, n in original.items()}
    else:
        assert sum(after.values()) == sum(_widths(once).values()) == 96 - int(0.6 * 96 + 1e-9)
    without = make_plan(model, x, ratio=0.6, scope=scope)  # against the current widths: a second 0.6 of the rest
    assert sum(len(g.remove) for g in without.groups) > sum(len(g.remove) for g in second.groups)


def test_global_scope_removes_the_exact_share_of_all_channels():
    """0.7 of 90 channels is 63 (0.7 * 90 is 62.99.. in floats); each group's count is exact (not a float32 mean)."""
    torch.manual_seed(0)
    model, x = prunekit.create_model("vgg_tiny", 4, widths=[15, 30]).eval(), torch.randn(1, 3, 16, 16)
    plan = make_plan(model, x, ratio=0.7, scope="global")
    assert sum(g.size for g in plan.groups) == 90 and sum(len(g.remove) for g in plan.groups) == 63
