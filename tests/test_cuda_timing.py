"""The GPU timing paths checked on a CPU: a fake clock stands in for CUDA events (warm-up rule, median and spread,
round-robin, autocast and channels-last applied, models restored), fake timings for the GPU's channel multiple,
cache keys per GPU and dtype, and the speed guard's verdict. The real-GPU versions are in tests/test_cuda.py."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import prunekit.allocate.latency as latency_mod
import prunekit.allocate.round_to as round_to_mod
from prunekit.allocate.latency import cuda_latency, latency_allocation, runtime_label
from prunekit.allocate.latency_target import paired_timer
from prunekit.allocate.round_to import CUDA_WIDTHS, cuda_multiple, resolve_round_to
from prunekit.deploy import prepare
from prunekit.errors import ConfigError, PruningWarning
from prunekit.measure import latency_cache
from prunekit.measure.guard import SpeedCell, cells_from_report, fixes, speed_guard, verdict
from prunekit.measure.latency_cuda import (CudaSettings, check_runtime, measure_cuda_latency_together,
                                           parse_runtime, runtime_spec, warm_until_stable)

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where no GPU is visible")


class Clock:
    """A fake clock the models below advance by their cost; the timer reads it around each call."""

    def __init__(self):
        self.now = 0.0

    def timer(self, fn) -> float:
        t0 = self.now
        fn()
        return self.now - t0


class Costly(nn.Module):
    """A conv whose calls cost ``costs`` in turn, the first ``cold`` ones ``slow / (1 + call)`` ms more (autotuning
    and clock ramp-up fade out); it records the autocast state and the layouts it saw."""

    def __init__(self, clock: Clock, costs, cold: int = 0, slow: float = 100.0):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.clock, self.costs, self.cold, self.slow, self.calls = clock, list(costs), cold, slow, 0
        self.seen = []

    def forward(self, x):
        cost = self.costs[self.calls % len(self.costs)] + (self.slow / (1 + self.calls) if self.calls < self.cold
                                                           else 0.0)
        self.calls += 1
        self.clock.now += cost
        out = self.conv(x)
        self.seen.append((out.dtype, x.is_contiguous(memory_format=torch.channels_last), self.conv.weight.is_contiguous(
            memory_format=torch.channels_last)))
        return out


def test_warm_up_stops_when_two_window_medians_agree_within_the_tolerance():
    times = iter([50.0] * 10 + [12.0] * 10 + [10.0] * 10 + [10.1] * 10 + [99.0] * 100)
    medians = warm_until_stable(lambda: next(times), CudaSettings(window=10, tolerance=0.02))
    assert medians == [50.0, 12.0, 10.0, 10.1]  # 12 -> 10 is 17%: on; 10 -> 10.1 is 1%: stop before the 99s


def test_warm_up_is_capped_when_times_never_settle():
    times = iter([10.0, 20.0] * 1000)
    calls = []
    medians = warm_until_stable(lambda: calls.append(1) or next(times),
                                CudaSettings(window=1, tolerance=0.02, max_windows=7))
    assert len(medians) == 7 and len(calls) == 7


def test_fake_clock_timing_gives_median_and_iqr_after_warm_up_in_dtype_and_layout():
    clock = Clock()
    dense, pruned = Costly(clock, [10.0, 12.0], cold=25), Costly(clock, [4.0, 4.0, 8.0, 4.0])
    settings = CudaSettings("bf16", channels_last=True, window=5, repeats=8)
    (d_med, d_iqr), (p_med, p_iqr) = measure_cuda_latency_together(
        [dense, pruned], (3, 8, 8), (2,), settings, device="cpu", timer=clock.timer)
    assert d_med == {2: 11.0} and p_med == {2: 4.0}  # the cold calls were all spent in the warm-up
    assert d_iqr[2] == pytest.approx(2.0) and p_iqr[2] == pytest.approx(1.0)
    assert dense.calls >= 25 + 8
    assert all(s == (torch.bfloat16, True, True) for s in dense.seen + pruned.seen)  # autocast, channels-last
    assert dense.conv.weight.is_contiguous() and dense.training  # layout and train mode restored


def test_fp32_nchw_settings_time_without_autocast_or_layout_change():
    clock = Clock()
    model = Costly(clock, [3.0]).train()
    (med, _), = measure_cuda_latency_together([model], (3, 8, 8), (1, 4), CudaSettings("fp32", channels_last=False,
                                                                                         repeats=3),
                                              device="cpu", timer=clock.timer)
    assert med == {1: 3.0, 4: 3.0} and all(s == (torch.float32, False, False) for s in model.seen)
    assert model.training  # restored


def test_runtime_strings_and_the_dtype_refusal():
    assert parse_runtime("cuda-bf16")[1].dtype == "bf16" and parse_runtime("eager") == ("eager", None)
    assert runtime_spec("cuda", "fp16") == "cuda-fp16" and runtime_spec("ort") == "ort"
    with pytest.raises(ConfigError, match="--latency-runtime cuda"):
        runtime_spec("eager", "bf16")
    with pytest.raises(ConfigError, match="dtype"):
        CudaSettings("int8")


@NO_GPU
def test_a_cuda_runtime_without_a_gpu_is_refused_up_front():
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        check_runtime("cuda", "bf16")


def test_cache_labels_and_keys_name_the_dtype_and_the_gpu(monkeypatch):
    assert runtime_label("cuda-bf16") == "cuda-bf16-cl" != runtime_label("cuda-fp32")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")
    monkeypatch.setattr(latency_cache, "gpu_driver", lambda: "570.1")
    fp = latency_cache.device_fingerprint("cuda")
    assert fp["gpu"] == "NVIDIA H200" and fp["driver"] == "570.1" and "cudnn" in fp and fp["device"] == "cuda"
    other = {**fp, "driver": "575.2"}
    assert latency_cache.LatencyCache.digest({"device": fp}) != latency_cache.LatencyCache.digest({"device": other})


def test_a_cuda_latency_allocation_is_cached_under_the_gpu_fingerprint(monkeypatch, tmp_path):
    asked = []
    real = latency_mod.device_fingerprint
    monkeypatch.setattr(latency_mod, "device_fingerprint", lambda d: asked.append(str(d)) or real("cpu"))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
    fake = lambda m: float(sum(p.numel() for p in m.parameters()))  # noqa: E731 - ms = parameters, deterministic
    x = torch.randn(1, 3, 12, 12)
    latency_allocation(model, x, {"macs": 0.3}, latency_fn=fake, runtime="cuda-bf16-cl", cache=tmp_path,
                       check_uniform=False)
    latency_allocation(model, x, {"macs": 0.3}, latency_fn=fake, runtime="eager-1thread", cache=tmp_path,
                       check_uniform=False)
    assert asked == ["cuda", "cpu"]
    assert len(list(tmp_path.glob("*.json"))) == 2  # one entry per runtime: GPU and CPU timings never mix


def test_cuda_timers_of_the_allocators_run_the_models_through_the_injected_clock():
    clock = Clock()
    dense, twin = Costly(clock, [9.0]), Costly(clock, [3.0])
    x = torch.randn(2, 3, 8, 8)
    assert paired_timer((x,), "cuda-fp16", timer=clock.timer)(dense, twin) == (9.0, 3.0)
    assert cuda_latency((x,), CudaSettings("bf16"), timer=clock.timer)(twin) == 3.0
    assert twin.seen[-1][0] == torch.bfloat16


@pytest.mark.parametrize("step", [8, 64, 128])
def test_the_gpu_multiple_is_the_step_of_a_tile_staircase(step):
    ms = lambda c: 0.01 * step * -(-c // step) + 0.002  # noqa: E731 - time of the padded width, plus a launch
    assert cuda_multiple(ms) == step


def test_the_gpu_multiple_defaults_to_8_when_widths_cost_in_proportion():
    assert cuda_multiple(lambda c: 0.01 * c + 0.002, CUDA_WIDTHS) == 8


def test_auto_on_a_cuda_device_asks_for_the_gpu_multiple_at_that_dtype(monkeypatch):
    asked = []
    monkeypatch.setattr(round_to_mod, "auto_multiple", lambda runtime: asked.append(runtime) or 64)
    assert resolve_round_to("auto", device="cuda", dtype="bf16") == 64
    assert resolve_round_to("auto-cuda-fp16") == 64
    assert asked == ["cuda-bf16", "cuda-fp16"]
    with pytest.raises(ConfigError, match="auto-cuda"):
        resolve_round_to("auto-tpu")


def _cells(*pairs, batch=(1, 128)):
    return [SpeedCell(b, "bf16", "eager", d, p) for b, (d, p) in zip(batch, pairs)]


def test_the_verdict_is_silent_when_faster_everywhere_and_names_the_slow_cell_and_fixes():
    assert verdict(_cells((2.0, 1.0), (8.0, 5.0)), "cuda-bf16", {}) is None
    line = verdict(_cells((2.0, 1.0), (7.67, 13.06)), "cuda-bf16", {"round_to": None, "allocation": "uniform"})
    assert "batch 128 bf16 eager: 13.1 ms vs dense 7.67 ms (0.59x)" in line and "batch 1 " not in line
    assert "--round-to auto-cuda-bf16" in line and "--allocation latency --latency-runtime cuda" in line
    assert "--deploy" not in line and "\n" not in line  # a big batch is not launch-bound


def test_fixes_follow_what_was_used():
    slow = _cells((1.0, 1.0))
    assert fixes(slow, "cuda-bf16", {"round_to": "8", "allocation": "uniform", "deploy": "eager"})[0].startswith(
        "--round-to auto-cuda-bf16")  # 8 is not the GPU's measured multiple
    done = fixes(slow, "cuda-bf16", {"round_to": "auto-cuda-bf16", "allocation": "latency", "deploy": "cuda_graph"})
    assert done == ["fewer MACs do not buy time here: prune less, or prune the layers that dominate the time"]
    cpu = fixes(slow, "eager", {"round_to": "auto", "allocation": "latency", "deploy": "eager"})
    assert cpu == ["--deploy compile (at small batches eager time is per-op overhead, not MACs)"]


def test_the_guard_reads_the_reports_latencies_off_the_gpu_and_warns_once():
    before = {"latency_ms_b1": 2.0, "latency_ms_b32": 10.0, "params": 5}
    after = {"latency_ms_b1": 2.1, "latency_ms_b32": 6.0, "params": 3}
    assert [c.batch for c in cells_from_report(before, after)] == [1, 32]
    with pytest.warns(PruningWarning, match="batch 1 fp32 eager") as got:
        record = speed_guard(nn.Identity(), nn.Identity(), (3, 8, 8), "eager", (1,), {"round_to": None},
                             before, after)
    assert len(got) == 1 and record["warning"] and record["cells"][1]["speedup"] == pytest.approx(10 / 6, abs=1e-3)


def test_the_guard_times_on_the_gpu_runtime_through_the_clock():
    clock = Clock()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # faster at both batches: no warning
        record = speed_guard(Costly(clock, [6.0]), Costly(clock, [2.0]), (3, 8, 8), "cuda-bf16", (1, 4), {},
                             timer=clock.timer, device="cpu")
    assert [(c["batch"], c["dtype"], c["speedup"]) for c in record["cells"]] == [(1, "bf16", 3.0), (4, "bf16", 3.0)]


def test_cuda_graph_form_is_refused_off_the_gpu_and_half_checks_pass_on_the_cpu():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval()
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ConfigError, match="put the model and the example inputs on a GPU"):
        prepare(model, "cuda_graph", x)
    prepare(model, "channels_last", x, autocast="bf16")  # folded BN under bf16: within the half tolerance
    with pytest.raises(ConfigError, match="autocast"):
        prepare(model, "eager", x, autocast="int8")


@pytest.mark.parametrize("flags, says", [
    # a run whose allocation times candidates on the CPU (outside one, the flag is refused as out of its mode)
    (["--reduce", "macs=2x", "--allocation", "latency", "--latency-dtype", "bf16"],
     "--latency-dtype bf16 is timed on the GPU only"),
    pytest.param(["--latency-runtime", "cuda"], "needs a CUDA device", marks=NO_GPU),
])
def test_the_cli_refuses_gpu_timing_it_cannot_do_before_any_work(flags, says, tiny_folder, tmp_path, capsys):
    from prunekit.cli.main import main

    code = main(["prune", "--data", str(tiny_folder), "--model", "vgg_tiny", "--epochs", "1", "--structured", "--out",
                 str(tmp_path / "p"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and says in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "p").exists()  # refused before training or writing anything


def test_round_to_auto_in_a_run_on_cuda_is_the_gpu_multiple(monkeypatch):
    """`prunekit prune --device cuda --round-to auto` rounds for the GPU it runs on (was: the CPU's eager multiple)."""
    import prunekit.config as config
    from prunekit.config import PruneOptions

    asked = []
    monkeypatch.setattr(round_to_mod, "auto_multiple", lambda runtime: asked.append(runtime) or 64)
    monkeypatch.setattr(config, "pick_device", lambda name: torch.device("cuda" if name != "cpu" else "cpu"))
    opts = PruneOptions(model="vgg_tiny", epochs=1, method="structured", round_to="auto", device="cuda",
                        latency_runtime="cuda", latency_dtype="bf16")
    assert opts.round_to_value() == 64 and asked == ["cuda-bf16"]
    opts = PruneOptions(model="vgg_tiny", epochs=1, method="structured", round_to="auto", device="cpu")
    assert opts.round_to_value() == 64 and asked == ["cuda-bf16", "eager"]
