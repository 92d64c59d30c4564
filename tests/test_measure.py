"""Measurement: exact counts on hand-made modules, closed-form MACs, JSON round-trip, latency and memory records."""
from __future__ import annotations

import json

import pytest
import timm
import torch
import torchvision
from torch import nn

from prunekit.errors import ConfigError
from prunekit.measure import (
    Measurement,
    count_macs,
    count_nonzero,
    count_params,
    measure_latency,
    measure_model,
    peak_forward_memory,
)


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )


def test_count_params_and_nonzero_drop_exactly_by_zeroed_entries():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    assert count_params(model) == 4 * 3 + 3 + 3 * 2
    assert count_nonzero(model) == count_params(model)
    with torch.no_grad():
        model[0].weight[0, :] = 0.0  # 4 entries
        model[1].weight[1, 2] = 0.0  # 1 entry
    assert count_nonzero(model) == count_params(model) - 5


def test_shared_parameter_counted_once():
    a = nn.Linear(5, 5, bias=False)
    model = nn.Sequential(a, a)
    assert count_params(model) == 25
    assert count_nonzero(model) == 25
    with torch.no_grad():
        a.weight[0].zero_()
    assert count_nonzero(model) == 20  # the zeros of the shared tensor are counted once too


def test_macs_linear_closed_form():
    macs, flops = count_macs(nn.Linear(10, 20), input_shape=(10,))
    assert macs == 200 and flops == 400


@pytest.mark.parametrize("groups,stride", [(1, 1), (1, 2), (4, 1)])
def test_macs_conv_closed_form(groups, stride):
    cin, cout, k, h = 8, 12, 3, 16
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=1, groups=groups)
    out_hw = (h + 2 - k) // stride + 1
    expected = cout * (cin // groups) * k * k * out_hw * out_hw
    macs, flops = count_macs(conv, input_shape=(cin, h, h))
    assert macs == expected and flops == 2 * expected


def test_macs_include_attention():
    # Fused-MHA fast path must be off during counting, else projections vanish from the count.
    d, tokens = 16, 7
    mha = nn.MultiheadAttention(d, num_heads=2, batch_first=True)

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = mha

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mha(x, x, x, need_weights=False)[0]

    macs, _ = count_macs(Wrap().eval(), input_shape=(tokens, d))
    projections = tokens * d * 3 * d + tokens * d * d
    attention = 2 * tokens * tokens * d  # QK^T and AV
    assert macs == projections + attention
    assert torch.backends.mha.get_fastpath_enabled()  # restored


def test_measurement_json_round_trip_exact():
    m = Measurement(
        params=10, nonzero_params=7, macs=123, flops=246, file_bytes=None,
        latency_ms={1: 0.1 + 0.2, 32: 1e-7}, latency_spread_ms={1: 0.0, 32: 1 / 3},
        threads=2, device="cpu", input_shape=(3, 8, 8), peak_memory_bytes=4096,
    )
    text = json.dumps(m.to_dict())
    back = Measurement.from_dict(json.loads(text))
    assert back == m
    assert back.to_dict() == m.to_dict() == json.loads(text)
    assert isinstance(back.input_shape, tuple) and set(back.latency_ms) == {1, 32}


def test_measurement_from_dict_rejects_bad_dicts():
    good = Measurement(1, 1, 1, 2).to_dict()
    with pytest.raises(ConfigError, match="lacks"):
        Measurement.from_dict({k: v for k, v in good.items() if k != "macs"})
    with pytest.raises(ConfigError, match="unknown"):
        Measurement.from_dict({**good, "bogus": 1})


def test_latency_keys_positive_and_mode_restored():
    model = tiny_cnn().train()
    model[1].eval()  # a frozen BN inside a training model must stay frozen
    median, spread = measure_latency(model, (3, 8, 8), batch_sizes=(4, 1), warmup=1, repeats=3)
    assert set(median) == set(spread) == {1, 4}
    assert all(v > 0 for v in median.values())
    assert model.training and model[0].training and not model[1].training


def test_latency_time_cap_still_gives_a_number():
    median, _ = measure_latency(tiny_cnn(), (3, 8, 8), batch_sizes=(1,), warmup=0, repeats=1000, max_seconds=1e-6)
    assert median[1] > 0


def test_peak_memory_grows_with_batch_on_cpu():
    model = tiny_cnn()
    small = peak_forward_memory(model, (3, 32, 32), batch_size=1)
    large = peak_forward_memory(model, (3, 32, 32), batch_size=16)
    assert small is not None and large is not None
    activation = 16 * 8 * 32 * 32 * 4  # conv output at batch 16, float32
    assert large >= activation > small


def test_measure_model_full_record(tmp_path):
    model = tiny_cnn()
    path = tmp_path / "w.bin"
    path.write_bytes(b"x" * 1234)
    m = measure_model(model, input_shape=(3, 8, 8), batch_sizes=(1, 2), file_path=path, warmup=1, repeats=2)
    assert m.params == count_params(model) and m.nonzero_params == count_nonzero(model)
    assert m.macs == 8 * 3 * 9 * 64 + 8 * 5 and m.flops == 2 * m.macs
    assert m.file_bytes == 1234
    assert set(m.latency_ms) == {1, 2} and m.threads == torch.get_num_threads() and m.device == "cpu"
    assert m.input_shape == (3, 8, 8) and m.peak_memory_bytes and m.peak_memory_bytes > 0
    assert model.training
    json.dumps(m.to_dict())


def test_measure_model_without_latency_is_static_only():
    m = measure_model(tiny_cnn(), input_shape=(3, 8, 8), latency=False)
    assert m.latency_ms == {} and m.peak_memory_bytes is None and m.file_bytes is None


def test_bad_inputs_raise_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="input_shape"):
        count_macs(tiny_cnn(), input_shape=(3, 0, 8))
    with pytest.raises(ConfigError, match="batch_sizes"):
        measure_latency(tiny_cnn(), (3, 8, 8), batch_sizes=(0,))
    with pytest.raises(ConfigError, match="not a file"):
        measure_model(tiny_cnn(), (3, 8, 8), file_path=tmp_path / "missing.safetensors", latency=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_measurement_restores_device():
    model = tiny_cnn()
    m = measure_model(model, input_shape=(3, 8, 8), batch_sizes=(1, 2), device="cuda", warmup=1, repeats=2)
    assert m.device.startswith("cuda") and m.peak_memory_bytes is not None
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "vit_b_16"])
def test_torchvision_macs_and_params_match_its_published_metadata(name):
    """torchvision publishes each model's GMACs (``meta["_ops"]``, which it labels GFLOPS, 3 decimals) and its
    parameter count beside the weights: figures counted by torchvision, not by us."""
    meta = torchvision.models.get_model_weights(name).DEFAULT.meta
    model = getattr(torchvision.models, name)()  # random init: weights do not change MACs
    macs, _ = count_macs(model, input_shape=(3, 224, 224))
    assert macs / 1e9 == pytest.approx(meta["_ops"], abs=5e-4)
    assert count_params(model) == meta["num_params"]


def _vit_by_hand(dim: int, depth: int, hidden: int, patch: int, size: int, classes: int) -> tuple[int, int]:
    """(MACs, params) of a timm ViT written out: patch-embedding conv, per block the qkv projection, q@k^T and
    attn@v over all tokens (class token included), the output projection and the two MLP layers, then the head.
    Params add the class token, position embeddings, two LayerNorms per block and the final one."""
    patches = (size // patch) ** 2
    tokens = patches + 1
    block_macs = tokens * dim * 3 * dim + 2 * tokens * tokens * dim + tokens * dim * dim + 2 * tokens * dim * hidden
    macs = patches * dim * 3 * patch * patch + depth * block_macs + dim * classes
    block_params = 2 * 2 * dim + (dim * 3 * dim + 3 * dim) + (dim * dim + dim) + (dim * hidden + hidden) \
        + (hidden * dim + dim)
    params = (3 * patch * patch * dim + dim) + dim + tokens * dim + depth * block_params + 2 * dim \
        + (dim * classes + classes)
    return macs, params


@pytest.mark.slow
def test_timm_vit_measures_match_the_formula():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    m = measure_model(model, input_shape=(3, 224, 224), batch_sizes=(1,), warmup=0, repeats=1)
    assert (m.macs, m.params) == _vit_by_hand(dim=192, depth=12, hidden=768, patch=16, size=224, classes=1000)


def test_peak_memory_leaves_a_running_profiler_alone():
    from torch.profiler import profile

    with profile() as prof:
        assert peak_forward_memory(tiny_cnn(), (3, 8, 8), batch_size=2) is None
    assert any(e.name == "aten::conv2d" for e in prof.events())


def test_cpu_peak_memory_matches_live_activation_closed_form():
    # During layer 2 its input (32x256) and output (32x64) are alive: the peak; float32 = 4 bytes.
    model = nn.Sequential(nn.Linear(16, 256), nn.Linear(256, 64), nn.Linear(64, 8))
    assert peak_forward_memory(model, (16,), batch_size=32) == 4 * (32 * 256 + 32 * 64)
    # A non-in-place ReLU keeps its input and output alive together: 2 x (32x256) is the new peak.
    model = nn.Sequential(nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 64))
    assert peak_forward_memory(model, (16,), batch_size=32) == 4 * (2 * 32 * 256)


def test_count_macs_on_models_whose_tracker_needs_grad_mode():
    """timm's PiT passes a tuple through Sequential; the counter's module tracker then needs autograd on."""
    import timm

    from prunekit.measure import count_macs as macs_of

    model = timm.create_model("pit_ti_224", pretrained=False, img_size=64)
    macs, flops = macs_of(model, (3, 64, 64))
    assert macs > 0 and flops == 2 * macs
    assert all(p.grad is None for p in model.parameters())


class _Logged(nn.Module):
    """Records each forward's name in a shared log, so the timing order can be checked."""

    def __init__(self, name: str, log: list):
        super().__init__()
        self.name, self.log, self.lin = name, log, nn.Linear(4, 4)

    def forward(self, x):
        self.log.append(self.name)
        return self.lin(x)


def test_models_timed_together_run_round_robin_in_alternating_order():
    from prunekit.measure import measure_latency_together

    log: list = []
    a, b = _Logged("a", log), _Logged("b", log)
    (ma, sa), (mb, sb) = measure_latency_together([a, b], (4,), batch_sizes=(1,), warmup=0, repeats=4)
    assert set(ma) == set(mb) == {1} and ma[1] > 0 and mb[1] > 0
    timed = log[-8:]  # warm-up (at least one run each) comes first
    assert timed == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert a.training and b.training  # modes handed back


def test_measure_models_matches_measure_model_on_counts_and_checks_paths():
    from prunekit.measure import measure_models

    model, small = tiny_cnn(), nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    both = measure_models([model, small], (3, 16, 16), batch_sizes=(1,), repeats=2)
    alone = measure_model(model, (3, 16, 16), batch_sizes=(1,), latency=False)
    assert both[0].macs == alone.macs and both[0].params == alone.params and both[1].macs < both[0].macs
    assert both[0].latency_ms[1] > 0 and both[1].latency_ms[1] > 0
    with pytest.raises(ConfigError, match="file paths"):
        measure_models([model, small], (3, 16, 16), file_paths=[None])
