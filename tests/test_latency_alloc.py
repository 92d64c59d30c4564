"""Latency-aware allocation: groups whose removal saves more time per MAC get higher ratios; the target is met."""
from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.apply.structured import apply_plan
from prunekit.errors import ConfigError
from prunekit.latency_alloc import latency_allocation
from prunekit.measure import count_macs
from prunekit.plan import make_plan

X = torch.randn(1, 3, 32, 32)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return prunekit.create_model("vgg_tiny", 4).eval()


def fake_latency(model: torch.nn.Module) -> float:
    """A device on which only the first conv's width costs time (every other layer is free)."""
    return 10.0 * model.features[0].out_channels + 0.001 * count_macs(model, (3, 32, 32))[0] / 1e6


def test_allocation_prunes_where_latency_falls_and_meets_the_target():
    model = _model()
    alloc = latency_allocation(model, X, {"macs": 0.3}, latency_fn=fake_latency, max_ratio=0.9)
    assert alloc.saved_ms["features.0"] > 0
    assert alloc.chosen == "latency" and alloc.pruned_ms["latency"] < alloc.pruned_ms["uniform"]
    first = alloc.overrides["features.0"]
    others = [r for n, r in alloc.overrides.items() if n != "features.0"]
    assert first == pytest.approx(0.9) and all(r < first for r in others)
    plan = make_plan(model, X, criterion="l2", **alloc.plan_kwargs())
    twin = apply_plan(_model(), plan)
    red = 1 - count_macs(twin, (3, 32, 32))[0] / count_macs(model, (3, 32, 32))[0]
    assert red == pytest.approx(0.3, abs=0.01) and red == pytest.approx(alloc.achieved, abs=1e-9)
    assert fake_latency(twin) < fake_latency(model) - 10.0 * 0.8 * 16


def test_allocation_refuses_an_unreachable_target():
    with pytest.raises(ConfigError, match="cannot remove"):
        latency_allocation(_model(), X, {"macs": 0.99}, latency_fn=fake_latency, max_ratio=0.5)


def test_prune_job_with_latency_allocation_meets_the_target(tiny_folder, tmp_path):
    from prunekit.cli.schemas import PruneOptions
    from prunekit.pipeline import prune_job

    opts = PruneOptions(model="vgg_tiny", data=str(tiny_folder), image_size=16, epochs=1, finetune_epochs=0,
                        batch_size=8, out=tmp_path / "lat", progress=False, latency=False, val_frac=0.2,
                        method="structured", reduce="macs=0.5", allocation="latency", criterion="l2")
    res = prune_job(opts)
    assert res["after"]["macs"] / res["before"]["macs"] == pytest.approx(0.5, abs=0.02)
    assert res["pruning"]["allocation"] == "latency" and res["pruning"]["allocation_ratios"]


def test_latency_allocation_without_a_target_is_refused(tiny_folder, tmp_path):
    from prunekit.cli.schemas import PruneOptions
    from prunekit.pipeline import prune_job

    opts = PruneOptions(model="vgg_tiny", data=str(tiny_folder), method="structured", allocation="latency",
                        out=tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="--allocation latency"):
        prune_job(opts)


def test_the_uniform_plan_is_kept_when_it_measured_faster():
    from prunekit.latency_alloc import LatencyAllocation

    alloc = LatencyAllocation(overrides={"features.0": 0.9}, base_ratio=0.5, metric="macs", target=0.3, achieved=0.3,
                              dense_ms=1.0, chosen="uniform", uniform_kwargs={"ratio": 0.2})
    assert alloc.plan_kwargs() == {"ratio": 0.2}
    alloc.chosen = "latency"
    assert alloc.plan_kwargs() == {"ratio": 0.0, "overrides": {"features.0": 0.9}}
