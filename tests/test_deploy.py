"""Deploy forms: each computes what the eager model computes (dense and pruned), and bad input fails clearly."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.apply.oneshot import prune_structured
from prunekit.deploy import FORMS, prepare
from prunekit.errors import ConfigError


class Residual(nn.Module):
    """Conv-BN-ReLU twice around an identity shortcut: the pattern BN folding and pruning both meet."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(), nn.Conv2d(width, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + x)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                          Residual(16), nn.MaxPool2d(2), nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5))
    for m in model.modules():  # non-trivial statistics, so a wrong fold shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def pruned_net() -> nn.Module:
    x = torch.randn(1, 3, 16, 16)
    model, _ = prune_structured(small_net(), x, ratio=0.5)
    return model.eval()


def assert_same(model: nn.Module, form: str) -> None:
    x = torch.randn(3, 3, 16, 16)
    deployed = prepare(model, form, x)
    with torch.inference_mode():
        expected, got = model(x), deployed(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4), (got - expected).abs().max()


@pytest.mark.parametrize("form", [f for f in FORMS if f not in ("compile", "cuda_graph")])  # GPU: test_cuda.py
@pytest.mark.parametrize("make", [small_net, pruned_net], ids=["dense", "pruned"])
def test_each_form_computes_what_eager_computes(form, make):
    assert_same(make(), form)


@pytest.mark.slow
@pytest.mark.parametrize("make", [small_net, pruned_net], ids=["dense", "pruned"])
def test_compiled_form_computes_what_eager_computes(make):
    assert_same(make(), "compile")


def test_fold_bn_removes_batchnorm_and_leaves_the_model_alone():
    model = small_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = prepare(model, "fold_bn", torch.randn(1, 3, 16, 16))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unknown_form_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown; use one of eager, fold_bn"):
        prepare(small_net(), "tensorrt", torch.randn(1, 3, 16, 16))


def test_untraceable_model_names_the_fix():
    class Branchy(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else -self.conv(x)

    with pytest.raises(ConfigError, match="torch.fx-traceable.*form='eager'"):
        prepare(Branchy().eval(), "fold_bn", torch.randn(1, 3, 8, 8))


@pytest.mark.slow
def test_many_compiled_models_in_one_process_each_compile():
    """Dynamo keeps 8 graphs per code object; past that a compiled model would silently run eager."""
    from torch._dynamo.utils import counters

    x = torch.randn(1, 3, 16, 16)
    for seed in range(10):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten()).eval()
        graphs = counters["stats"]["unique_graphs"]
        deployed = prepare(model, "compile", x)
        assert counters["stats"]["unique_graphs"] == graphs + 1
        with torch.inference_mode():
            assert torch.allclose(deployed(x), model(x), atol=1e-5)
