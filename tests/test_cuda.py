"""The same operations on a CUDA device as on the CPU: criteria, physical removal with optimizer state, every
schedule, whole jobs, checkpoints. Skipped where no GPU is visible (CI has none); on a GPU machine:
``pytest tests/test_cuda.py``. Each test compares against the CPU: criterion scores and pruned outputs numerically,
whole jobs by what they decide from counts (pruned shapes, reached sparsity) and by reloading their checkpoint on
both devices, so a tensor left on the wrong device (an error) or a device-dependent decision (a silent difference)
fails. ``PRUNEKIT_TEST_DEVICE=cpu`` runs the file CPU against CPU, which checks the tests themselves, not CUDA.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch

import prunekit
from prunekit.apply.oneshot import prune_structured
from prunekit.apply.structured import apply_plan
from prunekit.config import PruneOptions
from prunekit.graph import build_graph
from prunekit.importance import CRITERIA, score_groups
from prunekit.importance.attention import SCORES_ATTR
from prunekit.jobs.prune import prune_job
from prunekit.plan import make_plan
from prunekit.storage import checkpoint as ckpt

CUDA = torch.device(os.environ.get("PRUNEKIT_TEST_DEVICE", "cuda"))
pytestmark = pytest.mark.skipif(CUDA.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _model(name: str = "vgg_tiny", classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    model = prunekit.create_model(name, classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
    return model.eval()


def _data(device):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 3, 32, 32, generator=g).to(device), torch.randint(0, 4, (8,), generator=g).to(device))
            for _ in range(2)]


def _with_attention_scores(model: torch.nn.Module) -> torch.nn.Module:
    """Stored SE-attention scores for every convolution, as ``prunekit.attention`` leaves them, so the criteria
    that read them (attention, attention_gm) run here too; the others ignore them."""
    g = torch.Generator().manual_seed(3)
    setattr(model, SCORES_ATTR, {name: torch.rand(m.out_channels, generator=g) for name, m in model.named_modules()
                                 if isinstance(m, torch.nn.Conv2d)})
    return model


@pytest.mark.parametrize("name", CRITERIA.names())
def test_criterion_scores_match_cpu(name):
    cpu = _with_attention_scores(_model())
    gpu = copy.deepcopy(cpu).to(CUDA)
    s_cpu = score_groups(build_graph(cpu, X), cpu, name, ctx={"data": _data("cpu"), "seed": 0}, normalize="none")
    s_gpu = score_groups(build_graph(gpu, X.to(CUDA)), gpu, name, ctx={"data": _data(CUDA), "seed": 0},
                         normalize="none")
    assert set(s_cpu) == set(s_gpu) and s_cpu
    for k in s_cpu:
        assert s_gpu[k].device.type == "cpu"
        # data-driven scores see convolution outputs, which cuDNN computes in another order (TF32 by default):
        # an activation near zero can flip (APoZ counts it), so those compare to 1%, weight-only ones to 0.2%
        loose = name in ("apoz", "mean_activation", "taylor", "pfam_fmap")
        torch.testing.assert_close(s_gpu[k], s_cpu[k], rtol=1e-2 if loose else 2e-3, atol=5e-3 if loose else 1e-5)


@pytest.mark.parametrize("arch", ["torchvision/resnet18", "torchvision/mobilenet_v3_small", "timm/vit_tiny_patch16_224"])
def test_physical_removal_on_cuda_matches_cpu(arch):
    size = 224 if "vit" in arch else 64
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    cpu = _model(arch, 10)
    gpu = copy.deepcopy(cpu).to(CUDA)
    plan_cpu = make_plan(cpu, x, ratio=0.5, criterion="l2")
    plan_gpu = make_plan(gpu, x.to(CUDA), ratio=0.5, criterion="l2")
    assert [g.remove for g in plan_cpu.groups] == [g.remove for g in plan_gpu.groups]
    apply_plan(cpu, plan_cpu)
    apply_plan(gpu, plan_gpu)
    assert all(p.device.type == CUDA.type for p in gpu.parameters())
    with torch.no_grad():
        torch.testing.assert_close(gpu(x.to(CUDA)).cpu(), cpu(x), rtol=1e-3, atol=1e-3)


def test_optimizer_state_is_sliced_on_cuda():
    model = _model().to(CUDA).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = _data(CUDA)[0]
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    plan = make_plan(model, X.to(CUDA), ratio=0.5, criterion="l1")
    apply_plan(model, plan, optimizer=opt)
    for p in model.parameters():
        buf = opt.state[p]["momentum_buffer"]
        assert buf.shape == p.shape and buf.device == p.device
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


JOBS = {
    "unstructured_oneshot": dict(method="unstructured", ratio=0.8, scope="global"),
    "unstructured_lamp_gradual": dict(method="unstructured", ratio=0.8, criterion="lamp", schedule="gradual",
                                      start_epoch=0, end_epoch=2),
    "unstructured_dns": dict(method="unstructured", ratio=0.8, criterion="lamp", schedule="dns"),
    "unstructured_rigl": dict(method="unstructured", ratio=0.8, criterion="erk", schedule="rigl"),
    "unstructured_iterative": dict(method="unstructured", ratio=0.8, schedule="iterative"),
    "nm": dict(method="unstructured", nm="2:4"),
    "structured_l1": dict(method="structured", ratio=0.5, criterion="l1"),
    "structured_taylor_iterative": dict(method="structured", ratio=0.5, criterion="taylor", schedule="iterative"),
    "structured_attention": dict(method="structured", ratio=0.5, criterion="attention", attention_epochs=1),
    "structured_soft_pfam_energy": dict(method="structured", criterion="pfam_energy", schedule="soft",
                                        reduce="params=0.4"),
}


def _decided(res: dict, checkpoint: ckpt.Checkpoint) -> dict:
    """What a job decides from counts, not from trained values: the pruned shapes and the reached sparsity."""
    shapes = {k: tuple(v.shape) for k, v in checkpoint.model.state_dict().items()}
    after = res["after"]
    return {"shapes": shapes, "params": after["params"], "macs": after["macs"],
            "sparsity": 1 - after["nonzero_params"] / after["params"]}


@pytest.mark.parametrize("job", sorted(JOBS))
def test_jobs_on_cuda_decide_like_the_cpu_and_reload_alike(job, tiny_folder, tmp_path):
    """Training differs across devices in its last bits, so the two runs are compared on what the job decides from
    counts: the same pruned shapes and MACs, the same sparsity within half a point (DNS sets its thresholds from
    the weights' statistics, which can move a few weights either way); and the CUDA run's checkpoint gives the same
    outputs reloaded on either device."""
    runs = []
    for i, device in enumerate(("cpu", str(CUDA))):
        opts = PruneOptions(model="vgg_tiny", data=str(tiny_folder), image_size=16, epochs=3, finetune_epochs=2,
                            batch_size=8, out=tmp_path / f"{job}-{i}", progress=False, latency=False, val_frac=0.2,
                            device=device, **JOBS[job])
        res = prune_job(opts)
        runs.append((res, ckpt.load_checkpoint(res["checkpoint"], "cpu")))
    (res_cpu, on_cpu), (res_gpu, loaded) = runs
    cpu, gpu = _decided(res_cpu, on_cpu), _decided(res_gpu, loaded)
    assert gpu["shapes"] == cpu["shapes"] and gpu["macs"] == cpu["macs"] and gpu["params"] == cpu["params"]
    assert gpu["sparsity"] == pytest.approx(cpu["sparsity"], abs=0.005)
    assert res_gpu["after"]["params"] <= res_gpu["before"]["params"]
    again = ckpt.load_checkpoint(res_gpu["checkpoint"], CUDA)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again.model.eval()(x.to(CUDA)).cpu(), loaded.model.eval()(x), rtol=1e-3, atol=1e-4)


# --- GPU latency, rounding, deploy forms and the speed guard (issue 32); their CPU logic: test_cuda_timing.py ---
GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="times on a real GPU (CUDA events, graphs)")


@GPU
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_cuda_latency_times_on_the_gpu_and_restores_the_model(dtype):
    from prunekit.measure.latency_cuda import CudaSettings, measure_cuda_latency

    model = _model("resnet_tiny")
    median, iqr = measure_cuda_latency(model, (3, 32, 32), (1, 16), CudaSettings(dtype, repeats=10))
    assert set(median) == {1, 16} and all(0 < v < 1000 for v in median.values()) and all(v >= 0 for v in iqr.values())
    assert all(p.device.type == "cpu" and p.is_contiguous() for p in model.parameters())  # borrowed, given back


@GPU
@pytest.mark.parametrize("autocast", ["fp32", "bf16"])
def test_cuda_graph_form_replays_what_eager_computes_at_each_shape(autocast):
    from prunekit.deploy import prepare

    model = _model().cuda()
    graphed = prepare(model, "cuda_graph", X.cuda(), autocast=autocast)  # checked against eager inside
    half = torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast == "bf16")
    for batch in (2, 5, 2):  # a new shape captures its own graph; the first one is replayed again after it
        x = torch.randn(batch, 3, 32, 32, device="cuda")
        with torch.inference_mode(), half:
            ref, got = model(x).float(), graphed(x).float().clone()
        torch.testing.assert_close(got, ref, rtol=5e-2 if autocast == "bf16" else 1e-3, atol=5e-2)


@GPU
def test_compile_form_runs_on_the_gpu():
    from prunekit.deploy import prepare

    prepare(_model().cuda(), "compile", X.cuda())  # raises ConfigError if outputs differ or inductor fails


@GPU
def test_paired_cuda_timer_and_latency_allocation_time_on_the_gpu(tmp_path):
    from prunekit.allocate import AllocationRequest, allocate
    from prunekit.allocate.latency_target import paired_timer

    model = _model()
    pruned, _ = prune_structured(copy.deepcopy(model), X, ratio=0.5)
    dense_ms, pruned_ms = paired_timer((X,), "cuda-bf16")(model, pruned)
    assert dense_ms > 0 and pruned_ms > 0
    req = AllocationRequest(model, X, criterion="l2", ratio=0.0, reduce={"macs": 0.5}, plan_kwargs={},
                            options={"runtime": "cuda-bf16", "cache": str(tmp_path)})
    alloc = allocate("latency", req)
    assert alloc.record["allocation_runtime"] == "cuda-bf16-cl" and alloc.record["dense_latency_ms_b1"] > 0
    assert list(tmp_path.glob("*.json"))  # cached under the GPU's fingerprint


@GPU
def test_auto_multiple_on_the_gpu_is_a_tensor_core_candidate_and_cached(tmp_path, monkeypatch):
    from prunekit.allocate import round_to

    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))
    round_to.auto_multiple.cache_clear()
    try:
        first = round_to.auto_multiple("cuda-bf16")
        round_to.auto_multiple.cache_clear()
        assert first in round_to.CUDA_CANDIDATES and round_to.auto_multiple("cuda-bf16") == first
        assert len(list((tmp_path / "latency").glob("*.json"))) == 1  # measured once, then read back
    finally:
        round_to.auto_multiple.cache_clear()


@GPU
def test_prune_job_guard_times_dense_and_pruned_on_the_gpu(tiny_folder, tmp_path):
    opts = PruneOptions(model="vgg_tiny", data=str(tiny_folder), image_size=16, epochs=0, finetune_epochs=0,
                        batch_size=8, out=tmp_path / "p", progress=False, val_frac=0.2, device="cuda",
                        method="structured", ratio=0.5, latency_runtime="cuda", latency_dtype="bf16",
                        latency_batch=16, deploy="cuda_graph")
    guard = prune_job(opts)["pruning"]["speed_guard"]
    assert guard["runtime"] == "cuda-bf16"
    assert [(c["batch"], c["dtype"], c["form"]) for c in guard["cells"]] == [(1, "bf16", "cuda_graph"),
                                                                              (16, "bf16", "cuda_graph")]
    assert all(c["dense_ms"] > 0 and c["pruned_ms"] > 0 for c in guard["cells"])
