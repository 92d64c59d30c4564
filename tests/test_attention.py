"""Attention-guided pruning: SE insertion keeps the function, training/scoring/removal do what they say, and the
pruned model is a plain prunekit model that saves and loads."""
from __future__ import annotations

import copy

import pytest
import torch

import prunekit
from prunekit.attention import (
    ChannelAttention,
    attention_modules,
    attention_prune,
    attention_scores,
    insert_attention,
    remove_attention,
    scale_by_host,
    train_attention,
)
from prunekit.errors import ConfigError, ModelError
from prunekit.graph import build_graph
from prunekit.importance import score_groups
from prunekit.importance.attention import SCORES_ATTR
from prunekit.plan import make_plan
from prunekit.train import TrainConfig

X = torch.randn(2, 3, 32, 32)
MODELS = ["vgg_tiny", "resnet_tiny", "torchvision/mobilenet_v2"]


def _model(name: str = "vgg_tiny") -> torch.nn.Module:
    torch.manual_seed(0)
    kw = {"width_mult": 0.25} if "mobilenet" in name else {}
    return prunekit.create_model(name, 4, **kw).eval()


@pytest.mark.parametrize("name", MODELS)
def test_insertion_leaves_outputs_unchanged(name):
    model = _model(name)
    with torch.no_grad():
        before = model(X)
    hosts = insert_attention(model, X[:1])
    assert hosts and len(attention_modules(model)) == len(hosts)
    with torch.no_grad():
        after = model(X)
    assert torch.allclose(before, after, atol=1e-6)


def test_hosts_are_the_bns_after_prunable_convs():
    model = _model("resnet_tiny")
    hosts = insert_attention(model, X[:1])
    mods = dict(model.named_modules())
    assert all(isinstance(mods[h], torch.nn.BatchNorm2d) for h in hosts)
    assert "stem.1" in hosts and "layers.0.0.bn1" in hosts and "layers.1.0.downsample.1" in hosts
    assert not any(k.startswith("fc") for k in hosts)


def test_l1_penalty_adds_its_gradient():
    torch.manual_seed(0)
    se = ChannelAttention(8, reduction=2).train()
    x = torch.randn(3, 8, 4, 4)
    grads = []
    for lam in (0.0, 0.8):
        se.zero_grad()
        se.sparsity = lam
        se(x).sum().backward()
        grads.append(se.fc2.bias.grad.clone())
    # d(lam * mean_n sum_c g)/d bias_c = lam / N * sum_n dg/dz (= 2 * 0.25 at z = 0) = lam * 0.5
    assert torch.allclose(grads[1] - grads[0], torch.full((8,), 0.8 * 0.5), atol=1e-6)


def _dataset(tiny_folder):
    from prunekit.data import load_dataset

    return load_dataset(tiny_folder, image_size=32, cache=False)


def test_frozen_training_changes_only_attention(tiny_folder):
    data = _dataset(tiny_folder)
    model = prunekit.create_model("vgg_tiny", len(data.classes))
    insert_attention(model, X[:1])
    se_keys = {k for k in model.state_dict() if "prunekit_attention" in k}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_attention(model, data, epochs=1, mode="frozen", sparsity=1e-2,
                    cfg=TrainConfig(batch_size=8, augment=False), device="cpu", progress=False)
    after = model.state_dict()
    for k, v in before.items():
        if k in se_keys:
            continue
        if k.endswith("num_batches_tracked"):
            continue
        assert torch.equal(v, after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in se_keys)
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_joint_training_changes_backbone_too(tiny_folder):
    data = _dataset(tiny_folder)
    model = prunekit.create_model("vgg_tiny", len(data.classes))
    insert_attention(model, X[:1])
    before = model.features[0].weight.detach().clone()
    train_attention(model, data, epochs=1, mode="joint", cfg=TrainConfig(batch_size=8, augment=False), device="cpu")
    assert not torch.equal(before, model.features[0].weight)
    with pytest.raises(ConfigError, match="frozen' or 'joint"):
        train_attention(model, data, epochs=1, mode="both")


def test_zero_attention_channel_is_pruned_first():
    model = _model()
    insert_attention(model, X[:1])
    se = attention_modules(model)["features.1"]
    with torch.no_grad():
        se.fc2.bias[6] = -40.0  # gate 2 * sigmoid(-40) ~ 0 for every image
    data = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))]
    stats = attention_scores(model, data)
    assert float(stats.mean["features.1"][6]) < 1e-12
    assert stats.per_class["features.1"].shape == (4, 16)
    remove_attention(model, "fold", gate_means=stats.mean)
    plan = make_plan(model, X[:1], ratio=0.25, criterion="attention")
    first = next(g for g in plan.groups if g.key == "features.0.weight:0")
    assert 6 in first.remove


def test_fold_is_exact_for_constant_gates_and_drop_restores_original():
    model = _model("resnet_tiny")
    with torch.no_grad():
        plain = model(X)
    insert_attention(model, X[:1])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for se in attention_modules(model).values():
            se.fc1.weight.zero_()  # gates no longer depend on the input
            se.fc2.bias.copy_(torch.randn(se.fc2.bias.shape, generator=g))
        gated = model(X)
    twin = copy.deepcopy(model)  # attention hooks survive a deep copy
    with torch.no_grad():
        assert torch.equal(twin(X), gated)
    stats = attention_scores(model, [(X, None)])
    how = remove_attention(model, "fold", gate_means=stats.mean)
    assert set(how.values()) == {"fold"} and not attention_modules(model)
    with torch.no_grad():
        assert torch.allclose(model(X), gated, atol=1e-5)
    remove_attention(twin, "drop")
    with torch.no_grad():
        assert torch.allclose(twin(X), plain, atol=1e-6)
    assert not any("prunekit_attention" in k for k in model.state_dict())


@pytest.mark.parametrize("name", MODELS)
def test_attention_prune_end_to_end_saves_and_loads(tiny_folder, tmp_path, name):
    data = _dataset(tiny_folder)
    torch.manual_seed(0)
    kw = {"width_mult": 0.25} if "mobilenet" in name else {}
    model = prunekit.create_model(name, len(data.classes), **kw)
    n_before = sum(p.numel() for p in model.parameters())
    model, plan, report = attention_prune(model, data, torch.randn(1, 3, 32, 32), ratio=0.5, attention_epochs=1,
                                          sparsity=1e-3, train_cfg=TrainConfig(batch_size=8, augment=False),
                                          device="cpu")
    assert not attention_modules(model) and not hasattr(model, SCORES_ATTR)
    assert set(report["removal"].values()) == {"fold"} and report["scores"]
    assert sum(p.numel() for p in model.parameters()) < 0.6 * n_before
    path = tmp_path / "pruned.safetensors"
    prunekit.save(model, path)
    loaded = prunekit.load(path).eval()
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


def test_gate_x_scale_ranks_a_zero_gamma_channel_last_even_with_a_full_gate():
    model = _model()
    insert_attention(model, X[:1])
    with torch.no_grad():
        model.features[1].weight[3] = 0.0  # BN gamma 0: the channel passes nothing on, whatever its gate
        attention_modules(model)["features.1"].fc2.bias[3] = 40.0  # gate ~2, the highest of the layer
    stats = attention_scores(model, [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))])
    scaled = scale_by_host(model, stats.mean)
    gamma = model.features[1].weight.detach().abs()
    assert torch.allclose(scaled["features.1"], stats.mean["features.1"] * gamma)
    assert int(stats.mean["features.1"].argmax()) == 3 and int(scaled["features.1"].argmin()) == 3
    setattr(model, SCORES_ATTR, scaled)
    remove_attention(model, "drop")
    plan = make_plan(model, X[:1], ratio=0.25, criterion="attention")
    assert 3 in next(g for g in plan.groups if g.key == "features.0.weight:0").remove


def _first_layer_scores(model: torch.nn.Module, gates: torch.Tensor, criterion: str) -> torch.Tensor:
    """Scores of the first conv's group with ``gates`` stored as the first host's attention (others: all 1)."""
    graph = build_graph(model, X[:1])
    stored = {"features.1": gates}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.BatchNorm2d) and name not in stored:
            stored[name] = torch.ones(mod.num_features)
    setattr(model, SCORES_ATTR, stored)
    return score_groups(graph, model, criterion, normalize="none")["features.0.weight:0"]


def test_attention_gm_is_fpgm_under_equal_attention_and_attention_under_equal_distances():
    model = _model()
    fpgm = score_groups(build_graph(model, X[:1]), model, "fpgm", normalize="none")["features.0.weight:0"]
    equal = _first_layer_scores(model, torch.full((16,), 0.7), "attention_gm")
    assert torch.allclose(equal.double(), 0.49 * fpgm.double(), rtol=1e-5)  # w_c * sum_j w ||F_c - F_j|| = w^2 * FPGM
    with torch.no_grad():  # orthonormal filters: every pair at the same distance, only the attention ranks
        w = model.features[0].weight
        w.copy_(torch.eye(w[0].numel())[:16].reshape(w.shape))
    gates = torch.linspace(0.2, 1.8, 16)[torch.randperm(16, generator=torch.Generator().manual_seed(0))]
    s = _first_layer_scores(model, gates, "attention_gm")
    assert torch.equal(torch.argsort(s), torch.argsort(gates))


def test_attention_gm_prunes_a_channel_the_attended_filters_can_replace():
    model = _model()
    with torch.no_grad():  # orthonormal filters; 5 duplicates 2 and 9 duplicates 12, whose gate is off
        w = model.features[0].weight
        w.copy_(torch.eye(w[0].numel())[:16].reshape(w.shape))
        w[5] = w[2]
        w[9] = w[12]
    gates = torch.ones(16)
    gates[12] = 0.0
    s = _first_layer_scores(model, gates, "attention_gm")
    order = torch.argsort(s).tolist()
    assert float(s[12]) == 0.0 and order[0] == 12  # no attention: pruned first
    # 2 and 5 can stand in for each other; 9's twin is unattended, so 9 is as irreplaceable as any other channel
    assert set(order[1:3]) == {2, 5}
    assert torch.allclose(s[9], s[0]) and float(s[5]) < float(s[9])


@pytest.mark.parametrize("form", ["gate_x_scale", "gate_x_scale_gm"])
def test_attention_prune_records_its_form(tiny_folder, form):
    data = _dataset(tiny_folder)
    torch.manual_seed(0)
    model = prunekit.create_model("resnet_tiny", len(data.classes))
    model, _, report = attention_prune(model, data, torch.randn(1, 3, 32, 32), attention_epochs=1,
                                       score=form, reduce={"macs": 0.5},
                                       train_cfg=TrainConfig(batch_size=8, augment=False), device="cpu")
    assert report["score"] == form and not attention_modules(model)
    assert abs(report["ratio_search"]["achieved"] - 0.5) < 0.02
    with pytest.raises(ConfigError, match="gate_x_scale"):
        attention_prune(_model(), data, X[:1], score="gamma")


def test_a_layer_whose_gates_were_driven_off_is_reported(tiny_folder, caplog):
    """A strong gate penalty can silence whole layers, and folding them broke the model (UC Merced: 56-84% test
    after 20 epochs, ~90% with the gates dropped instead); say so when folding, name the layers."""
    data = _dataset(tiny_folder)
    cfg = TrainConfig(batch_size=8, augment=False)
    torch.manual_seed(0)
    with caplog.at_level("WARNING", logger="prunekit.attention"):
        _, _, mild = attention_prune(_model(), data, X[:1], ratio=0.5, attention_epochs=1, sparsity=1e-3,
                                     train_cfg=cfg, device="cpu")
    assert mild["silenced_layers"] == {} and "turned most channels off" not in caplog.text
    with caplog.at_level("WARNING", logger="prunekit.attention"):
        _, _, harsh = attention_prune(_model(), data, X[:1], ratio=0.5, attention_epochs=3, sparsity=10.0,
                                      train_cfg=cfg.model_copy(update={"lr": 0.5}), device="cpu")
    assert harsh["silenced_layers"] and all(v < 0.1 for v in harsh["silenced_layers"].values())
    assert "turned most channels off" in caplog.text and "--attention-removal drop" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="prunekit.attention"):  # dropped, not folded: the weights are intact
        _, _, dropped = attention_prune(_model(), data, X[:1], ratio=0.5, attention_epochs=3, sparsity=10.0,
                                        removal="drop", train_cfg=cfg.model_copy(update={"lr": 0.5}), device="cpu")
    assert dropped["silenced_layers"] and "turned most channels off" not in caplog.text


def test_misuse_is_reported():
    model = _model()
    with pytest.raises(ConfigError, match="attention scores"):
        make_plan(model, X[:1], ratio=0.5, criterion="attention")
    insert_attention(model, X[:1])
    with pytest.raises(ModelError, match="already has attention"):
        insert_attention(model, X[:1])
    with pytest.raises(ConfigError, match="attention_scores first"):
        remove_attention(model, "fold")
    with pytest.raises(ConfigError, match="fold' or 'drop"):
        remove_attention(model, "squash")


def test_hidden_linear_gets_attention_and_folds_exactly():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x = torch.randn(5, 3, 2, 2)
    assert insert_attention(mlp, x[:1]) == ["1"]
    se = attention_modules(mlp)["1"]
    with torch.no_grad():
        se.fc2.bias.copy_(torch.linspace(-2, 2, 8))  # constant gates (fc1 input-independent below)
        se.fc1.weight.zero_()
        gated = mlp(x)
    stats = attention_scores(mlp, [(x, None)])
    assert remove_attention(mlp, "fold", gate_means=stats.mean) == {"1": "fold"}
    with torch.no_grad():
        assert torch.allclose(mlp(x), gated, atol=1e-6)


def test_attention_prune_to_a_params_target_with_global_scope(tiny_folder):
    data = _dataset(tiny_folder)
    torch.manual_seed(0)
    model = prunekit.create_model("vgg_tiny", len(data.classes))
    n_before = sum(p.numel() for p in model.parameters())
    model, plan, report = attention_prune(model, data, torch.randn(1, 3, 32, 32), attention_epochs=1,
                                          train_cfg=TrainConfig(batch_size=8, augment=False), device="cpu",
                                          reduce={"params": 0.4}, scope="global")
    achieved = 1 - sum(p.numel() for p in model.parameters()) / n_before
    assert abs(achieved - 0.4) <= 0.01
    assert report["ratio_search"]["achieved"] == pytest.approx(achieved)
    assert plan.settings["scope"] == "global"


def test_budget_penalty_falls_only_on_the_lowest_gates():
    from prunekit.attention.budget import GroupBudget

    torch.manual_seed(0)
    se = ChannelAttention(8, reduction=2).train()
    with torch.no_grad():
        se.fc2.bias.copy_(torch.tensor([0.5, -1.0, 0.2, -2.0, 1.0, -0.5, 0.0, 0.3]))  # distinct gates
        se.fc1.weight.zero_()  # gates independent of the input: the lowest are channels 3, 1, 5
    x = torch.randn(3, 8, 4, 4)
    grads = []
    for lam, budget in ((0.0, None), (0.8, GroupBudget(3, 8, {"h": torch.arange(8)}))):
        se.zero_grad()
        se.sparsity, se.budget = lam, (None if budget is None else (lambda g, b=budget: b.mask("h", g)))
        se(x).sum().backward()
        grads.append(se.fc2.bias.grad.clone())
    extra = grads[1] - grads[0]
    assert set(extra.nonzero().flatten().tolist()) == {1, 3, 5}
    z = se.fc2.bias.detach()[[1, 3, 5]]  # lam / N * sum_n dg/dz with dg/dz = 2 s (1 - s)
    assert torch.allclose(extra[[1, 3, 5]], 0.8 * 2 * torch.sigmoid(z) * (1 - torch.sigmoid(z)), atol=1e-6)


def test_hosts_of_one_group_push_the_same_channels():
    """A residual stream gated by two BNs: the channels pushed are the lowest of the summed gates, in both hosts,
    even where each host alone would pick others; a host holding part of the group (a concat input) gets its
    positions of those channels."""
    from prunekit.attention.budget import GroupBudget

    b = GroupBudget(2, 4, {"a": torch.arange(4), "b": torch.arange(4), "c": torch.tensor([-1, 2, 3])})
    assert b.mask("a", torch.tensor([0.1, 0.2, 0.9, 1.0])).tolist() == [1, 1, 0, 0]  # b, c unseen: gate 1
    mask_b = b.mask("b", torch.tensor([1.5, 1.6, 0.1, 0.2]))  # sums 1.6, 1.8, 1.0, 1.2 (+ c at 1): 2 and 3 lowest
    assert mask_b.tolist() == [0, 0, 1, 1]
    assert b.mask("a", torch.tensor([0.1, 0.2, 0.9, 1.0])).tolist() == [0, 0, 1, 1]  # the same channels in a
    assert b.mask("c", torch.tensor([5.0, 0.5, 0.5])).tolist() == [0, 1, 1]
    assert b.counts() == {"a": 2, "b": 2, "c": 1}  # c holds half the group: its expected share


def test_budget_groups_are_the_plans_removed_counts_shared_by_a_groups_hosts():
    from prunekit.attention.budget import budget_groups

    model = _model("resnet_tiny")
    plan = make_plan(model, X[:1], ratio=0.5, criterion="l2")
    budgets = budget_groups(model, X[:1], ratio=0.5)
    hosts = insert_attention(copy.deepcopy(model), X[:1])
    assert set(hosts) <= set(budgets)
    removed = {g.module: len(g.remove) for g in plan.groups}
    assert budgets["stem.1"].k == removed["stem.0"] and budgets["layers.0.0.bn1"].k == removed["layers.0.0.conv1"]
    assert budgets["stem.1"] is budgets["layers.0.0.bn2"]  # the residual stream of stage 0
    assert budgets["layers.1.0.bn2"] is budgets["layers.1.0.downsample.1"]
    with pytest.raises(ConfigError, match="uniform scope"):
        budget_groups(model, X[:1], ratio=0.5, scope="global")


def test_budget_training_drives_the_planned_channels_off_and_prunes_them(tiny_folder):
    """With a budget the penalty drives as many channels per layer as the plan removes well under the others, and
    the plan then removes that many."""
    from prunekit.attention.budget import budget_groups

    data = _dataset(tiny_folder)
    cfg = TrainConfig(batch_size=8, augment=False, lr=0.5)
    model = _model()
    budgets = budget_groups(model, X[:1], ratio=0.5)
    counts = {h: b.k for h, b in budgets.items()}
    hosts = insert_attention(model, X[:1])
    torch.manual_seed(0)
    train_attention(model, data, epochs=3, sparsity=1.0, budget=budgets, cfg=cfg, device="cpu")
    stats = attention_scores(model, data)
    for host in hosts:  # the k pushed channels sit well under every other one
        k, gates = counts[host], stats.mean[host].sort().values
        assert 0 < k < len(gates) and gates[k - 1] < 0.2 and gates[k - 1] < 0.5 * gates[k], host
    torch.manual_seed(0)
    pruned, plan, report = attention_prune(_model(), data, X[:1], ratio=0.5, attention_epochs=3, sparsity=1.0,
                                           budget=True, score="gate", train_cfg=cfg, device="cpu")
    assert report["budget"] == {h: counts[h] for h in hosts}
    assert sum(len(g.remove) for g in plan.groups) == sum(counts[h] for h in hosts)
    with pytest.raises(ConfigError, match="sparsity > 0"):
        attention_prune(_model(), data, X[:1], ratio=0.5, budget=True, train_cfg=cfg, device="cpu")
