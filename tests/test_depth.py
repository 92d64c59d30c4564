"""Depth pruning: whole identity-residual blocks replaced by identity, chosen by a block criterion."""
import copy
import json

import pytest
import torch
from torch import nn

import prunekit
from prunekit.allocate import AllocationRequest, allocate
from prunekit.apply.oneshot import prune_structured
from prunekit.cli.main import main
from prunekit.errors import ConfigError
from prunekit.graph import build_graph
from prunekit.importance import BLOCK_CRITERIA, score_blocks
from prunekit.measure import count_macs
from prunekit.models import create_model
from prunekit.plan import Plan, make_plan

ZEROED = "layers.1.1"


def _resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("resnet_small", num_classes=5, widths=(8, 16, 24, 32)).eval()


def _batches(n: int = 2, labels: bool = False):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 5, (4,), generator=g) if labels else None)
            for _ in range(n)]


def _zero_branch(model: nn.Module, name: str, whole: bool = False) -> None:
    """The block's residual branch outputs exactly zero: its last BN's weight and bias (or every parameter)."""
    block = model.get_submodule(name)
    with torch.no_grad():
        for p in (block.parameters() if whole else block.bn2.parameters()):
            p.zero_()


def test_trace_finds_whole_blocks_not_the_activation_after_the_add():
    model = _resnet()
    graph = build_graph(model, torch.randn(1, 3, 16, 16))
    # layers.N.0 of stages 2-4 have projection shortcuts (not x + f(x)); the shared ReLU is not a block
    assert graph.residual_blocks == ["layers.0.0", "layers.0.1", "layers.1.1", "layers.2.1", "layers.3.1"]


def test_removing_a_zero_branch_block_keeps_the_output():
    model, x = _resnet(), torch.randn(3, 3, 16, 16)
    _zero_branch(model, ZEROED)
    before = model(x)
    model, plan = prune_structured(model, x, ratio=0.0, depth_blocks=1, depth_criterion="contribution", data=_batches())
    assert plan.blocks == [ZEROED] and isinstance(model.get_submodule(ZEROED), nn.Identity)
    assert torch.allclose(model(x), before, atol=1e-6)


@pytest.mark.parametrize("criterion", ["magnitude", "contribution", "skip_loss"])
def test_each_criterion_ranks_the_zero_branch_block_first(criterion):
    model = _resnet()
    _zero_branch(model, ZEROED, whole=criterion == "magnitude")  # magnitude only sees weights: zero them all
    plan = make_plan(model, torch.randn(2, 3, 16, 16), ratio=0.0, depth_blocks=1, depth_criterion=criterion,
                     data=_batches())
    scores = plan.settings["depth_scores"]
    assert plan.blocks == [ZEROED] and plan.settings["depth_criterion"] == criterion
    assert abs(scores[ZEROED]) < 1e-9 and scores[ZEROED] < min(v for k, v in scores.items() if k != ZEROED)


def _without(model: nn.Module, name: str) -> nn.Module:
    """A copy of ``model`` with block ``name`` replaced by identity."""
    twin = copy.deepcopy(model)
    parent, _, child = name.rpartition(".")
    setattr(twin.get_submodule(parent), child, nn.Identity())
    return twin


def _by_hand(model: nn.Module, name: str, batches) -> float:
    """skip_loss written out: per batch, mean over samples of sum_c p log(p / q) (full p, skipped q) without
    labels, or the increase of -log q[y] averaged over samples with them."""
    skipped, total = _without(model, name), 0.0
    with torch.no_grad():
        for x, y in batches:
            log_p, log_q = model(x).log_softmax(-1), skipped(x).log_softmax(-1)
            if y is None:
                total += float((log_p.exp() * (log_p - log_q)).sum(-1).mean())
            else:
                rows = torch.arange(len(y))
                total += float((log_p[rows, y] - log_q[rows, y]).mean())
    return total


@pytest.mark.parametrize("labels", [False, True])
def test_skip_loss_is_the_loss_increase_of_skipping_the_block(labels):
    model, batches = _resnet(), _batches(labels=labels)
    blocks = build_graph(model, torch.randn(1, 3, 16, 16)).residual_blocks
    scores = score_blocks(model, blocks, "skip_loss", {"data": batches})
    want = {b: _by_hand(model, b, batches) for b in blocks}
    assert len(set(want.values())) == len(blocks)  # the blocks differ, so a mix-up shows
    assert scores == pytest.approx(want, rel=1e-4, abs=1e-7)


def test_depth_fraction_blocks_and_bad_values():
    model, x = _resnet(), torch.randn(1, 3, 16, 16)
    assert len(make_plan(model, x, ratio=0.0, depth=0.4).blocks) == 2  # 0.4 of 5 candidates
    assert sorted(BLOCK_CRITERIA.names()) == ["contribution", "magnitude", "skip_loss"]
    for kwargs, needle in [({"depth_blocks": 6}, "out of range"), ({"depth": 0.3, "depth_blocks": 1}, "not both"),
                           ({"depth": 0.3, "depth_criterion": "nope"}, "unknown depth criterion")]:
        with pytest.raises(ConfigError, match=needle):
            make_plan(model, x, ratio=0.0, **kwargs)
    vgg = create_model("vgg_tiny", num_classes=3).eval()
    with pytest.raises(ConfigError, match="no identity-residual blocks"):
        make_plan(vgg, torch.randn(1, 3, 32, 32), ratio=0.0, depth=0.5)


def test_depth_beside_channels_and_the_plan_json_round_trip():
    model, x = _resnet(), torch.randn(2, 3, 16, 16)
    model, plan = prune_structured(model, x, ratio=0.5, depth_blocks=2)
    assert plan.groups and len(plan.blocks) == 2 and "2 blocks removed (magnitude)" in str(plan)
    assert Plan.from_json(plan.to_json()) == plan
    assert model(x).shape == (2, 5)


def test_checkpoint_round_trips_removed_blocks_bit_exact(tmp_path):
    model, x = _resnet(), torch.randn(2, 3, 16, 16)
    model, plan = prune_structured(model, x, ratio=0.25, depth_blocks=2, depth_criterion="contribution")
    path = tmp_path / "m.safetensors"
    prunekit.save(model, path)
    loaded = prunekit.load(path)
    for name in plan.blocks:
        assert isinstance(loaded.get_submodule(name), nn.Identity)
    assert torch.equal(loaded(x), model(x))


def test_depth_allocator_reaches_a_macs_target_with_blocks_alone():
    model, x = _resnet(), torch.randn(2, 3, 16, 16)
    dense = count_macs(model, (3, 16, 16))[0]
    alloc = allocate("depth", AllocationRequest(model, x, reduce={"macs": 0.15},
                                                options={"depth_criterion": "magnitude"}))
    kw = alloc.plan_kwargs
    assert kw["ratio"] == 0.0 and kw["depth_criterion"] == "magnitude" and kw["depth_blocks"] >= 1
    pruned, plan = prune_structured(model, x, **kw)
    assert not plan.groups and len(plan.blocks) == kw["depth_blocks"]
    red = 1 - count_macs(pruned, (3, 16, 16))[0] / dense
    assert red >= 0.15 and red == pytest.approx(alloc.record["reduce_achieved"])
    assert kw["depth_blocks"] >= 2  # so "one block fewer" below is a real model, not the dense one
    fewer, _ = prune_structured(_resnet(), x, ratio=0.0, depth_blocks=kw["depth_blocks"] - 1,
                                depth_criterion="magnitude")
    assert 1 - count_macs(fewer, (3, 16, 16))[0] / dense < 0.15  # one block fewer misses: the fewest blocks
    with pytest.raises(ConfigError, match="depth alone cannot"):
        allocate("depth", AllocationRequest(model, x, reduce={"macs": 0.95}))


def _prune(folder, tmp_path, capsys, *extra):
    code = main(["prune", "--model", "resnet_tiny", "--data", str(folder), "--image-size", "16", "--epochs", "1",
                 "--finetune-epochs", "0", "--structured", "--no-progress", "--no-latency", "--json",
                 "--out", str(tmp_path / "o"), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_depth_alone_removes_blocks_not_channels(tiny_folder, tmp_path, capsys):
    code, out, _ = _prune(tiny_folder, tmp_path, capsys, "--depth", "0.5", "--depth-criterion", "contribution")
    assert code == 0
    done = json.loads(out)["pruning"]
    assert done["blocks_removed"] == ["layers.0.0"] and done["depth_criterion"] == "contribution"
    assert done["ratio"] == 0.0 and done["plan"]["groups"] == []
    model = prunekit.load(json.loads(out)["checkpoint"])
    assert isinstance(model.layers[0][0], nn.Identity)


def test_cli_depth_beside_a_macs_target(tiny_folder, tmp_path, capsys):
    code, out, _ = _prune(tiny_folder, tmp_path, capsys, "--depth-blocks", "1", "--reduce", "macs=0.5")
    assert code == 0
    res = json.loads(out)
    assert res["pruning"]["blocks_removed"] == ["layers.0.0"] and res["pruning"]["plan"]["groups"]
    assert res["pruning"]["reduce_achieved"] == pytest.approx(0.5, abs=0.02)  # the block counts toward the target


@pytest.mark.parametrize("extra, needle", [
    (["--depth", "1.5"], "--depth"),
    (["--depth", "0.3", "--depth-criterion", "nope"], "unknown depth criterion 'nope'"),
    (["--depth", "0.3", "--depth-blocks", "1"], "not both"),
    (["--depth-blocks", "0"], "--depth-blocks"),
    (["--depth-blocks", "3"], "out of range"),
    (["--allocation", "depth"], "--allocation depth"),
    (["--depth", "0.3", "--criterion", "attention"], "--depth"),
])
def test_cli_bad_depth_values_are_one_line_and_exit_2(tiny_folder, tmp_path, capsys, extra, needle):
    code, _, err = _prune(tiny_folder, tmp_path, capsys, *extra)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err
