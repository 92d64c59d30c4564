"""--reduce latency=2x: blocks, channels or both, whichever reaches a measured latency target keeping the most MACs.

Latency is injected (a fake proportional to conv MACs plus a per-block overhead), so every test is deterministic.
"""
import copy
import json

import pytest
import torch
from torch import nn

import prunekit
from prunekit.allocate import AllocationRequest, allocate, latency_target, parse_reduce
from prunekit.apply.oneshot import prune_structured
from prunekit.cli.main import main
from prunekit.errors import ConfigError
from prunekit.models import create_model
from prunekit.schedules.iterative import Iterative

SHAPE = (3, 16, 16)


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet_small", num_classes=5, widths=(8, 16, 24, 32)).eval()


def _weights(modules) -> int:
    return sum(m.weight.numel() for m in modules if isinstance(m, nn.Conv2d))


def _pixels(model: nn.Module) -> dict:
    """Output pixels of each conv of the dense model (pruning keeps every feature map's size)."""
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o.shape[-1] * o.shape[-2]))
             for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    model(torch.randn(1, *SHAPE))
    for h in hooks:
        h.remove()
    return seen


PIXELS = _pixels(_resnet())


def fake_latency(block_cost: float, per_block: float):
    """ms = conv MACs outside blocks + ``block_cost`` x conv MACs inside blocks (in thousands) + ``per_block`` per
    residual block still there: a large ``per_block`` makes depth cheap, a small ``block_cost`` makes it dear."""
    def macs(model: nn.Module, prefix: str = "") -> float:
        return sum(m.weight.numel() * PIXELS[prefix + n] for n, m in model.named_modules() if isinstance(m, nn.Conv2d))

    def fn(model: nn.Module) -> float:
        blocks = [(n, m) for n, m in model.named_modules() if type(m).__name__ == "BasicBlock"]
        inside = sum(macs(m, n + ".") for n, m in blocks)
        return ((macs(model) - inside) + block_cost * inside) / 1000 + per_block * len(blocks)
    return fn


def _pair(fn):
    """A fake ``paired_timer``: (dense, candidate) -> their fake latencies."""
    return lambda dense, twin: (fn(dense), fn(twin))


DEPTH_CHEAP = fake_latency(1.0, 400.0)
WIDTH_CHEAP = fake_latency(0.2, 0.0)


def test_parse_latency_target_only_where_it_is_measured():
    assert parse_reduce("latency=2x", measured=True) == {"latency": 0.5}
    assert parse_reduce("latency=40%", measured=True) == pytest.approx({"latency": 0.4})
    assert parse_reduce("latency=0.4", measured=True) == {"latency": 0.4}
    with pytest.raises(ConfigError, match="only by structured one-shot pruning"):
        parse_reduce("latency=2x")  # compare, schedules, the macs/params searches


@pytest.mark.parametrize("fn, arm", [(DEPTH_CHEAP, "depth"), (WIDTH_CHEAP, "width")])
def test_chooses_the_arm_that_keeps_the_most_macs_and_records_every_candidate(fn, arm):
    model, x = _resnet(), torch.randn(1, *SHAPE)
    found = latency_target(model, x, 0.4, latency_fn=fn, mixes=0)  # depth alone against width alone
    assert found.chosen.arm == arm
    reached = [c for c in found.candidates if c.reduction >= 0.4 - found.tol]
    assert found.chosen.macs == max(c.macs for c in reached)  # the fewest MACs removed among those that reach it
    assert {c.arm for c in found.candidates} >= {"depth", "width"}
    rows = found.record()["candidates"]
    assert len(rows) == len(found.candidates)
    assert set(rows[0]) >= {"arm", "blocks", "ratio", "macs", "params", "ms", "dense_ms", "reduction"}
    pruned, plan = prune_structured(copy.deepcopy(model), torch.randn(2, *SHAPE), **found.plan_kwargs())
    assert 1 - fn(pruned) / fn(model) >= 0.4 - found.tol  # the chosen plan reaches the target
    assert len(plan.blocks) == found.chosen.blocks


def test_allocator_records_why_and_width_alone_without_blocks():
    model, x = _resnet(), torch.randn(2, *SHAPE)
    alloc = allocate("latency_target", AllocationRequest(model, x, reduce={"latency": 0.4},
                                                         options={"latency_fn": DEPTH_CHEAP}))
    rec = alloc.record["latency_target"]
    assert alloc.record["allocation"] == "latency_target" and "fewest MACs" in rec["why"]
    assert {c["arm"] for c in rec["candidates"]} == {"depth", "width", "mix"}  # blocks + channels tried too
    assert rec["blocks"] >= 1 and alloc.plan_kwargs["depth_blocks"] == rec["blocks"] and rec["reached"] >= 0.39
    vgg = create_model("vgg_tiny", num_classes=3).eval()  # no residual block: width alone, not an error
    found = latency_target(vgg, torch.randn(1, 3, 32, 32), 0.3, latency_fn=lambda m: _weights(m.modules()) / 1e3)
    assert found.chosen.arm == "width" and found.blocks_available == 0 and found.notes


def test_unreachable_target_is_one_line_with_the_best_reached():
    model, x = _resnet(), torch.randn(1, *SHAPE)
    with pytest.raises(ConfigError, match=r"cannot remove 90% of the measured latency.*ask for less") as err:
        latency_target(model, x, 0.9, latency_fn=lambda m: 20.0 + _weights(m.modules()) / 1e3, mixes=0)
    assert "\n" not in str(err.value)


def test_compare_and_schedules_refuse_latency_targets_with_the_fix(tmp_path, capsys):
    code, _, err = _run(["compare", "--reduce", "latency=2x", "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "prunekit prune --structured --reduce latency=2x" in err
    with pytest.raises(ConfigError, match="only by structured one-shot pruning"):
        Iterative(method="structured", reduce="latency=2x")


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _prune(folder, tmp_path, capsys, *extra):
    return _run(["prune", "--model", "resnet_tiny", "--data", str(folder), "--image-size", "16", "--epochs", "1",
                 "--finetune-epochs", "0", "--no-progress", "--no-latency", "--json", "--out", str(tmp_path / "o"),
                 *extra], capsys)


@pytest.mark.parametrize("extra, needle", [
    (["--unstructured"], "--reduce shapes structured pruning"),
    (["--structured", "--schedule", "iterative"], "one-shot pruning (no --schedule)"),
    (["--structured", "--depth", "0.5"], "without --allocation / --depth"),
    (["--structured", "--allocation", "latency"], "without --allocation / --depth"),
])
def test_cli_refuses_latency_targets_where_nothing_times_them(extra, needle, tmp_path, capsys):
    code, _, err = _prune(None, tmp_path, capsys, "--reduce", "latency=2x", *extra)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_cli_latency_target_end_to_end(tiny_folder, tmp_path, capsys, monkeypatch):
    from prunekit.allocate import allocators

    monkeypatch.setattr(allocators, "paired_timer", lambda inputs, runtime: _pair(DEPTH_CHEAP))
    code, out, err = _prune(tiny_folder, tmp_path, capsys, "--structured", "--reduce", "latency=1.5x")
    assert code == 0, err
    done = json.loads(out)["pruning"]
    rec = done["latency_target"]
    assert done["allocation"] == "latency_target" and rec["runtime"].startswith("eager") and rec["candidates"]
    assert rec["reached"] >= 1 / 3 - rec["tol"] and done["latency_arm"].startswith(rec["arm"])
    assert len(done.get("blocks_removed", [])) == rec["blocks"]


def test_api_prune_takes_a_latency_target(monkeypatch):
    from prunekit.allocate import allocators

    monkeypatch.setattr(allocators, "paired_timer", lambda inputs, runtime: _pair(WIDTH_CHEAP))
    model = _resnet()
    small = prunekit.prune(model, torch.randn(2, *SHAPE), reduce="latency=1.5x")
    assert 1 - WIDTH_CHEAP(small) / WIDTH_CHEAP(model) >= 1 / 3 - 0.01


def test_a_lucky_first_timing_is_not_chosen():
    """The first width candidate times 2x faster once (a noisy sample): the re-timing catches it, depth is kept."""
    lucky = [True]

    def pair(dense, twin):
        ms = DEPTH_CHEAP(twin)
        if lucky[0] and len([m for m in twin.modules() if type(m).__name__ == "BasicBlock"]) == 8:
            lucky[0], ms = False, ms / 2
        return DEPTH_CHEAP(dense), ms

    found = latency_target(_resnet(), torch.randn(1, *SHAPE), 0.4, pair_fn=pair, mixes=0)
    assert found.chosen.arm == "depth" and found.chosen.confirm >= 0.39
    assert [c.arm for c in found.candidates if c.confirm is not None and c.confirm < 0.39] == ["width"]
