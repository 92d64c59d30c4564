"""Physical removal: exactness, shapes, counts, gradients, state carry-over, structure restore, compile, ONNX."""
from __future__ import annotations

import copy
import json

import onnxruntime as ort
import pytest
import torch
import torchvision as tv
from torch import nn

from prunekit.apply.oneshot import prune_structured
from prunekit.apply.structured import apply_plan, channel_masks, zero_channels
from prunekit.apply.structured_state import restore_structure, structure_of
from prunekit.graph import build_graph
from prunekit.plan import Plan, make_plan
from tests.test_graph import TinyNet, TinyViT


def randomize_bn(model: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def bn_cnn() -> nn.Module:
    """TinyNet minus the channel-statistics layers (GroupNorm, LayerNorm) for which zeroing is not removal."""
    torch.manual_seed(0)
    model = TinyNet()
    model.grouped[1] = nn.BatchNorm2d(32)
    model.norm = nn.Identity()
    return randomize_bn(model)


def test_removing_zeroed_channels_keeps_outputs():
    model, x = bn_cnn(), torch.randn(2, 3, 16, 16)
    plan = make_plan(model, x[:1], ratio=0.5)
    assert plan.groups
    zero_channels(model, plan)
    want = model(x)
    apply_plan(model, plan)
    assert n_params(model) < n_params(bn_cnn())
    torch.testing.assert_close(model(x), want, atol=1e-5, rtol=1e-5)


def test_removing_zeroed_attention_channels_keeps_outputs():
    torch.manual_seed(0)
    model, x = TinyViT().eval(), torch.randn(2, 3, 16, 16)
    plan = make_plan(model, x[:1], ratio=0.5, ignore=["patch"])  # residual stream whole: LayerNorm stats stay
    assert {g.key for g in plan.groups} == {"attn.qkv.weight:0", "mlp.0.weight:0"}
    zero_channels(model, plan)
    want = model(x)
    apply_plan(model, plan)
    assert model.attn.head_dim == 4 and model.attn.num_heads == 4 and model.attn.qkv.out_features == 48
    torch.testing.assert_close(model(x), want, atol=1e-5, rtol=1e-5)


def test_head_pruning_removes_whole_heads():
    torch.manual_seed(0)
    model, x = TinyViT().eval(), torch.randn(2, 3, 16, 16)
    plan = make_plan(model, x[:1], ratio=0.5, ignore=["patch"], prune_heads=True)
    zero_channels(model, plan)
    want = model(x)
    apply_plan(model, plan)
    assert model.attn.num_heads == 2 and model.attn.head_dim == 8
    torch.testing.assert_close(model(x), want, atol=1e-5, rtol=1e-5)


def test_ratio_zero_is_identity():
    model, x = bn_cnn(), torch.randn(1, 3, 16, 16)
    before = copy.deepcopy(model.state_dict())
    model, plan = prune_structured(model, x, ratio=0.0)
    assert plan.groups == []
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("make", [TinyNet, TinyViT])
def test_output_shape_and_classifier_kept(make):
    torch.manual_seed(0)
    model, x = make().eval(), torch.randn(1, 3, 16, 16)
    head = model.fc if hasattr(model, "fc") else model.head
    out_before = head.out_features
    model, plan = prune_structured(model, x, ratio=0.5)
    assert model(x).shape == (1, 10) and head.out_features == out_before
    assert plan.skipped == {}


def test_parameter_count_hand_computed():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    prune_structured(model, torch.randn(1, 3, 8, 8), ratio=0.5)
    # conv 3->4 (108+4) + bn 4 (8) + conv 4->4 (144+4) + linear 4->5 (20+5)
    assert n_params(model) == 112 + 8 + 148 + 25
    assert model[0].out_channels == 4 and model[1].num_features == 4 and model[3].in_channels == 4
    assert model[7].in_features == 4


def test_gradients_flow_with_new_shapes():
    model, x = TinyNet(), torch.randn(2, 3, 16, 16)
    prune_structured(model, x[:1], ratio=0.5)
    model.train()
    model(x).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, name


def test_plan_json_roundtrip_and_replay():
    torch.manual_seed(0)
    model, x = TinyNet().eval(), torch.randn(1, 3, 16, 16)
    fresh = copy.deepcopy(model)
    plan = make_plan(model, x, ratio=0.4, criterion="l1")
    again = Plan.from_json(plan.to_json())
    assert again == plan and json.loads(plan.to_json())["format"] == "prunekit.plan/1"
    assert "->" in str(plan)
    apply_plan(model, plan)
    apply_plan(fresh, again)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in fresh.state_dict().items()}
    torch.testing.assert_close(model(x), fresh(x))


@pytest.mark.parametrize("via_plan", [False, True])
def test_structure_restore_then_load(via_plan):
    torch.manual_seed(0)
    model, x = TinyViT().eval(), torch.randn(1, 3, 16, 16)
    model, plan = prune_structured(model, x, ratio=0.5, depth=0.0)
    structure = json.loads(json.dumps(structure_of(plan if via_plan else model)))
    torch.manual_seed(123)
    fresh = restore_structure(TinyViT().eval(), structure)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(x), model(x))
    assert fresh.attn.head_dim == model.attn.head_dim


def test_optimizer_state_is_sliced():
    model, x = TinyNet(), torch.randn(2, 3, 16, 16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(x).sum().backward()
    opt.step()
    m_before = opt.state[model.stem[0].weight]["exp_avg"].clone()
    plan = make_plan(model, x[:1], ratio=0.5)
    keep = channel_masks(plan)["stem.0.weight:0"]
    apply_plan(model, plan, optimizer=opt)
    w = model.stem[0].weight
    assert opt.param_groups[0]["params"][0] is w
    assert torch.equal(opt.state[w]["exp_avg"], m_before[keep])
    for p in model.parameters():
        assert opt.state[p]["exp_avg"].shape == p.shape
    model(x).sum().backward()
    opt.step()  # training goes on


def test_min_channels_respected():
    model, x = TinyNet().eval(), torch.randn(1, 3, 16, 16)
    plan = make_plan(model, x, ratio=0.9, min_channels=6)
    for g in plan.groups:
        assert g.size - len(g.remove) >= min(6, g.size)


def test_depth_mode_replaces_residual_blocks():
    model, x = TinyNet().eval(), torch.randn(1, 3, 16, 16)
    graph = build_graph(model, x)
    assert graph.residual_blocks == ["res"]
    model, plan = prune_structured(model, x, ratio=0.0, depth=0.5)
    assert plan.blocks == ["res"] and isinstance(model.res, nn.Identity)
    assert model(x).shape == (1, 10)


def test_onnx_export_matches(tmp_path):
    model, x = bn_cnn(), torch.randn(1, 3, 16, 16)
    prune_structured(model, x, ratio=0.5)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"])
    got = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_torch_compile_runs():
    model, x = bn_cnn(), torch.randn(1, 3, 16, 16)
    prune_structured(model, x, ratio=0.5)
    compiled = torch.compile(model)
    torch.testing.assert_close(compiled(x), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x1_0"])
def test_torchvision_models_prune_and_match_zeroed(name):
    torch.manual_seed(0)
    model, x = randomize_bn(getattr(tv.models, name)()), torch.randn(2, 3, 64, 64)
    plan = make_plan(model, x[:1], ratio=0.5)
    zero_channels(model, plan)
    want = model(x)
    apply_plan(model, plan)
    torch.testing.assert_close(model(x), want, atol=1e-5, rtol=1e-5)
