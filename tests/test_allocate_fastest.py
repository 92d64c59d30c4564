"""--allocation fastest: a MACs target split between whole blocks and channels, the split measured fastest.

Latency is injected (the fakes of test_allocate_latency_target: conv MACs plus a per-block overhead), so the choice
is deterministic; the API test times for real and checks only what timing cannot move.
"""
import pytest
import torch

import prunekit
from prunekit.allocate import AllocationRequest, allocate, fastest_at
from prunekit.apply.oneshot import prune_structured
from prunekit.cli.main import main
from prunekit.measure import count_macs
from prunekit.models import create_model
from tests.test_allocate_latency_target import DEPTH_CHEAP, PIXELS, SHAPE, _resnet

TARGET = {"macs": 0.5}


def WIDTH_CHEAP(model) -> float:
    """ms = sum over convs of MACs^1.5: a narrower conv saves more than its MACs, a removed block only its own."""
    return sum((m.weight.numel() * PIXELS[n] / 1000) ** 1.5 for n, m in model.named_modules()
               if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("fn, depth_wins", [(DEPTH_CHEAP, True), (WIDTH_CHEAP, False)])
def test_picks_the_split_that_runs_fastest_at_the_same_macs(fn, depth_wins):
    model, x = _resnet(), torch.randn(1, *SHAPE)
    found = fastest_at(model, x, TARGET, latency_fn=fn)
    arms = {c.arm for c in found.candidates}
    assert "width" in arms and arms & {"mix", "depth"}, arms  # both kinds were timed
    assert all(abs(c.reduction - 0.5) <= 0.01 for c in found.candidates)  # every candidate at the same MACs
    assert found.chosen is min(found.candidates, key=lambda c: c.relative)
    assert (found.chosen.blocks > 0) == depth_wins
    dense = fn(model)
    for c in found.candidates:  # the fake timer is exact: each timing is the candidate's fake ms over the dense one
        twin, _ = prune_structured(_resnet(), x, **_kwargs(found, c))
        assert count_macs(twin, SHAPE)[0] == c.macs
        assert c.timings == pytest.approx([fn(twin) / dense] * len(c.timings))


def _kwargs(found, cand):
    kwargs = {"ratio": cand.ratio, "overrides": cand.overrides}
    if cand.blocks:
        kwargs.update(depth_blocks=cand.blocks, depth_criterion=found.depth_criterion)
    return kwargs


def test_plan_kwargs_rebuild_the_chosen_model_and_the_record_lists_every_candidate():
    model, x = _resnet(), torch.randn(1, *SHAPE)
    alloc = allocate("fastest", AllocationRequest(model, x, reduce=TARGET, options={"latency_fn": DEPTH_CHEAP}))
    record = alloc.record["fastest"]
    pruned, plan = prune_structured(_resnet(), x, **alloc.plan_kwargs)
    assert len(plan.blocks) == record["blocks"] > 0
    assert 1 - count_macs(pruned, SHAPE)[0] / count_macs(model, SHAPE)[0] == pytest.approx(record["reached"], abs=1e-4)
    assert alloc.record["reduce_target"]["target_reached"]
    assert len(record["candidates"]) >= 2 and record["runtime"] == "given latency_fn"


def test_a_model_without_residual_blocks_gets_width_alone():
    torch.manual_seed(0)
    model, x = create_model("vgg_small", num_classes=5).eval(), torch.randn(1, *SHAPE)
    found = fastest_at(model, x, TARGET, latency_fn=lambda m: float(count_macs(m, SHAPE)[0]))
    assert [c.arm for c in found.candidates] == ["width"] and found.blocks_available == 0


def test_api_times_for_real_and_lands_on_the_target():
    model, x = _resnet(), torch.randn(1, *SHAPE)
    small = prunekit.prune(model, x, reduce="macs=2x", allocation="fastest")
    assert small(x).shape == model(x).shape
    assert 1 - count_macs(small, SHAPE)[0] / count_macs(model, SHAPE)[0] == pytest.approx(0.5, abs=0.011)


@pytest.mark.parametrize("extra", [[], ["--reduce", "macs=2x", "--global"], ["--reduce", "macs=2x", "--depth", "0.3"]])
def test_cli_refuses_fastest_without_a_target_it_can_split(extra, tmp_path, capsys):
    code = main(["prune", "--model", "resnet_small", "--structured", "--allocation", "fastest", *extra,
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--allocation fastest" in err and len(err.splitlines()) == 1


def test_cli_end_to_end_records_the_split_and_removes_its_blocks(tiny_folder, tmp_path, capsys, monkeypatch):
    import json

    from prunekit.allocate import allocators
    from tests.test_allocate_latency_target import _pair, _prune

    monkeypatch.setattr(allocators, "paired_timer", lambda inputs, runtime: _pair(DEPTH_CHEAP))
    code, out, err = _prune(tiny_folder, tmp_path, capsys, "--structured", "--reduce", "macs=2x",
                            "--allocation", "fastest")
    assert code == 0, err
    done = json.loads(out)["pruning"]
    rec = done["fastest"]
    assert done["allocation"] == "fastest" and rec["runtime"].startswith("eager") and len(rec["candidates"]) >= 2
    assert done["reduce_target"]["target_reached"] and len(done.get("blocks_removed", [])) == rec["blocks"]


def test_candidates_are_timed_at_the_latency_batch(monkeypatch):
    from prunekit.allocate import allocators

    seen = []

    def timer(inputs, runtime):
        seen.append(tuple(inputs[0].shape))
        return lambda dense, twin: (DEPTH_CHEAP(dense), DEPTH_CHEAP(twin))

    monkeypatch.setattr(allocators, "paired_timer", timer)
    model, x = _resnet(), torch.randn(2, *SHAPE)
    alloc = allocate("fastest", AllocationRequest(model, x, reduce=TARGET, options={"batch": 8}))
    assert seen == [(8, *SHAPE)] and alloc.record["fastest"]["batch"] == 8
    prunekit.prune(model, x, reduce="latency=1.5x", latency_batch=4)
    assert seen[-1] == (4, *SHAPE)


def INSIDE_DEAR(model) -> float:
    """ms = conv MACs + a per-channel cost for the normalizations inside the blocks (as a depthwise layer on a
    block's expanded channels costs time but few MACs): at the same MACs, the split that cuts the streams less and
    the blocks' insides more is the faster one."""
    inside = [m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and n.endswith("bn1")]
    return count_macs(model, SHAPE)[0] / 1000 + 20.0 * sum(m.num_features for m in inside)


def test_residual_streams_are_the_groups_that_cross_a_block_boundary():
    from prunekit.graph import build_graph

    model, x = _resnet(), torch.randn(1, *SHAPE)
    graph = build_graph(model, (x,))
    # Read off resnet_small by hand: the stem's channels run through the first stage's two identity blocks, each later
    # stage's channels are set by its first block's downsample conv (plus that block's conv2) and run through its
    # second, identity block; every conv1 output stays inside its own block.
    assert graph.stream_modules() == ["stem.0", "layers.1.0.downsample.0", "layers.2.0.downsample.0",
                                      "layers.3.0.downsample.0"]
    inside = {f"layers.{s}.{b}.conv1" for s in range(4) for b in range(2)}
    assert set(graph.prunable_modules()) - set(graph.stream_modules()) == inside
    vgg = create_model("vgg_small", num_classes=5).eval()
    assert build_graph(vgg, (x,)).stream_modules() == []  # no residual block, no stream


def test_stream_candidates_land_on_the_target_and_keep_their_stream_ratio():
    from prunekit.graph import build_graph

    model, x = _resnet(), torch.randn(1, *SHAPE)
    found = fastest_at(model, x, TARGET, latency_fn=INSIDE_DEAR, points=0)
    streams = build_graph(model, (x,)).stream_modules()
    assert {c.stream for c in found.candidates} == {None, 0.0, 0.25}
    assert all(abs(c.reduction - 0.5) <= 0.01 for c in found.candidates)
    for c in found.candidates:
        if c.stream is not None:
            assert all(c.overrides[name] == c.stream for name in streams)
    assert found.chosen.stream == 0.0  # the insides cost time per channel: cut there
    assert found.record()["stream_ratio"] == 0.0
    pruned, _ = prune_structured(_resnet(), x, **found.plan_kwargs())
    assert count_macs(pruned, SHAPE)[0] == found.chosen.macs
    assert INSIDE_DEAR(pruned) / INSIDE_DEAR(model) == pytest.approx(found.chosen.relative)
    no_streams = fastest_at(model, x, TARGET, latency_fn=INSIDE_DEAR, points=0, stream_ratios=())
    assert [c.stream for c in no_streams.candidates] == [None]
