"""Criteria: registry, shapes, magnitude sums over every coupled slice, normalisation."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph import build_graph
from prunekit.importance import CRITERIA, score_groups


def two_layer() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(1, 3, 1, bias=False), nn.Conv2d(3, 1, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, -2.0, 0.0]).view(3, 1, 1, 1))
        model[1].weight.copy_(torch.tensor([3.0, 0.0, -4.0]).view(1, 3, 1, 1))
    return model


def test_registry_lists_builtins():
    assert {"l1", "l2", "random"} <= set(CRITERIA.names())
    with pytest.raises(ConfigError, match="l1"):
        CRITERIA.get("nope")


def test_magnitudes_sum_over_producer_and_consumer():
    model = two_layer()
    graph = build_graph(model, torch.randn(1, 1, 2, 2))
    g = graph.groups[0]
    assert torch.allclose(CRITERIA.get("l1")(g, model, {}), torch.tensor([4.0, 2.0, 4.0], dtype=torch.float64))
    assert torch.allclose(CRITERIA.get("l2")(g, model, {}), torch.tensor([10 ** 0.5, 2.0, 4.0], dtype=torch.float64))


def test_score_groups_normalises_and_random_is_seeded():
    model = two_layer()
    graph = build_graph(model, torch.randn(1, 1, 2, 2))
    s = score_groups(graph, model, "l1")
    assert torch.allclose(s[graph.groups[0].key].mean(), torch.tensor(1.0))
    r1 = score_groups(graph, model, "random", ctx={"seed": 3})
    r2 = score_groups(graph, model, "random", ctx={"seed": 3})
    r3 = score_groups(graph, model, "random", ctx={"seed": 4})
    key = graph.groups[0].key
    assert torch.equal(r1[key], r2[key]) and not torch.equal(r1[key], r3[key])
