"""Criteria: every score has the group's shape and is finite; each ranks a planted unimportant channel last."""
from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.errors import ConfigError
from prunekit.graph import build_graph
from prunekit.importance import CRITERIA, score_groups
from prunekit.plan import make_plan

ALL = ["bn_scale", "taylor", "fpgm", "mean_activation", "apoz", "pfam", "pfam_fmap"]
FIRST = "features.0.weight:0"  # group of the first conv's 16 output channels in vgg_tiny
PLANT = 5


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = prunekit.create_model("vgg_tiny", 4)
    with torch.no_grad():  # non-trivial BN so channels differ in scale
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    return model.eval()


def _data(batches: int = 2):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(batches)]


def _silence(model: torch.nn.Module, ch: int) -> None:
    """Zero every coupled slice of channel ``ch`` of the first conv: filter, BN scale/shift, next conv's inputs."""
    f = model.features
    with torch.no_grad():
        f[0].weight[ch] = 0
        f[1].weight[ch] = 0
        f[1].bias[ch] = 0
        f[3].weight[:, ch] = 0


X = torch.randn(1, 3, 32, 32)


@pytest.mark.parametrize("name", ALL)
def test_scores_have_group_shape_and_are_finite(name):
    model = _model()
    graph = build_graph(model, X)
    scores = score_groups(graph, model, name, ctx={"data": _data()}, normalize="none")
    prunable = [g for g in graph.groups if g.prunable]
    assert set(scores) == {g.key for g in prunable}
    for g in prunable:
        assert scores[g.key].shape == (g.size,)
        assert torch.isfinite(scores[g.key]).all()


@pytest.mark.parametrize("name", ["bn_scale", "taylor", "mean_activation", "apoz", "pfam", "pfam_fmap", "fpgm"])
def test_silenced_channel_ranks_last(name):
    model = _model()
    _silence(model, PLANT)
    if name == "fpgm":  # FPGM keeps far-from-median filters; a zero filter is not redundant, plant the median
        with torch.no_grad():
            w = model.features[0].weight
            others = torch.cat([w[:PLANT], w[PLANT + 1:]])
            w[PLANT] = others.mean(0)
    graph = build_graph(model, X)
    s = score_groups(graph, model, name, ctx={"data": _data()}, normalize="none")[FIRST]
    assert int(torch.argmin(s)) == PLANT
    assert float(s[PLANT]) < float(torch.cat([s[:PLANT], s[PLANT + 1:]]).min())


@pytest.mark.parametrize("name", ["taylor", "mean_activation", "apoz", "bn_scale"])
def test_silenced_channel_scores_exactly_zero(name):
    model = _model()
    _silence(model, PLANT)
    graph = build_graph(model, X)
    s = score_groups(graph, model, name, ctx={"data": _data()}, normalize="none")[FIRST]
    assert float(s[PLANT]) == 0.0
    assert bool((torch.cat([s[:PLANT], s[PLANT + 1:]]) > 0).all())


def test_make_plan_with_data_criterion_removes_planted_channel():
    model = _model()
    _silence(model, PLANT)
    plan = make_plan(model, X, ratio=0.25, criterion="taylor", data=_data())
    first = next(gp for gp in plan.groups if gp.key == FIRST)
    assert PLANT in first.remove and len(first.remove) == 4


class _Counting:
    """An iterable that counts how often it is iterated (to prove one data pass serves all groups)."""

    def __init__(self, batches):
        self.batches, self.passes = batches, 0

    def __iter__(self):
        self.passes += 1
        return iter(self.batches)


@pytest.mark.parametrize("name", ["taylor", "mean_activation", "pfam_fmap"])
def test_data_is_read_once_for_all_groups(name):
    model = _model()
    graph = build_graph(model, X)
    data = _Counting(_data())
    score_groups(graph, model, name, ctx={"data": data})
    assert data.passes == 1


def test_max_batches_bounds_the_pass():
    model = _model()
    graph = build_graph(model, X)
    seen = []
    data = [(x, y) for x, y in _data(5)]

    def gen():
        for b in data:
            seen.append(1)
            yield b

    score_groups(graph, model, "mean_activation", ctx={"data": gen(), "max_batches": 2})
    assert len(seen) == 2


@pytest.mark.parametrize("name", ["taylor", "mean_activation", "apoz", "pfam_fmap"])
def test_data_criteria_without_data_say_so(name):
    model = _model()
    graph = build_graph(model, X)
    with pytest.raises(ConfigError, match="needs data"):
        score_groups(graph, model, name, ctx={})


def test_taylor_needs_labels():
    model = _model()
    graph = build_graph(model, X)
    with pytest.raises(ConfigError, match="labelled"):
        score_groups(graph, model, "taylor", ctx={"data": [torch.randn(2, 3, 32, 32)]})


def test_calibration_leaves_model_untouched():
    model = _model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.features[0].weight.requires_grad_(False)
    graph = build_graph(model, X)
    for name in ("taylor", "mean_activation"):
        score_groups(graph, model, name, ctx={"data": _data()})
    assert model.training
    assert not model.features[0].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_taylor_equals_definition_on_one_batch():
    """score_c = (sum over coupled params of g * w)^2 with g from autograd on the same batch."""
    model = _model()
    graph = build_graph(model, X)
    data = _data(1)
    s = score_groups(graph, model, "taylor", ctx={"data": data}, normalize="none")[FIRST]
    x, y = data[0]
    loss = torch.nn.functional.cross_entropy(model(x), y)
    f = model.features
    params = [f[0].weight, f[1].weight, f[1].bias, f[3].weight]
    grads = torch.autograd.grad(loss, params)
    c = 3
    total = sum((g[c] * p[c]).sum() for g, p in zip(grads[:3], params[:3])) + (grads[3][:, c] * params[3][:, c]).sum()
    assert float(s[c]) == pytest.approx(float(total.detach()) ** 2, rel=1e-4)


def test_resnet_groups_are_scored_by_every_criterion():
    torch.manual_seed(0)
    model = prunekit.create_model("resnet_tiny", 4).eval()
    graph = build_graph(model, X)
    for name in ALL:
        scores = score_groups(graph, model, name, ctx={"data": _data(1)})
        assert len(scores) == sum(g.prunable for g in graph.groups)
        assert all(torch.isfinite(v).all() for v in scores.values())


def test_all_criteria_registered():
    for name in ALL + ["attention", "l1", "l2", "random"]:
        assert name in CRITERIA
