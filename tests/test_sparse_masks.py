"""Magnitude / N:M masks are exact to the count, and pruned weights stay exactly 0 through training."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunekit.errors import CheckpointError, ConfigError, ModelError
from prunekit.sparse import Masks, magnitude_prune, masked_sparsity, nm_prune, select_targets
from prunekit.train import MaskCallback
from prunekit.sparse.allocation import erk_ratios, exact_counts, lamp_scores
from prunekit.train.callbacks import TrainState


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 1)
        self.fc1 = nn.Linear(16, 30)
        self.head = nn.Linear(30, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(self.conv2(torch.relu(self.conv(x))))
        return self.head(torch.relu(self.fc1(x.mean((2, 3)))))


def net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    model = Net()
    with torch.no_grad():  # give layers very different scales, so global and layer-wise differ
        model.conv.weight.mul_(10.0)
    return model


def pruned_count(m: torch.Tensor) -> int:
    return int((~m).sum())


# -- which weights ----------------------------------------------------------------------------------------------
def test_skip_first_last_and_skip_list():
    names = [t.param_name for t in select_targets(net())]
    assert names == ["conv.weight", "conv2.weight", "fc1.weight"]
    names = [t.param_name for t in select_targets(net(), skip_first=False, skip_last=False, skip=["conv*"])]
    assert names == ["stem.weight", "fc1.weight", "head.weight"]
    masks = magnitude_prune(net(), 0.5, skip=["fc1"])
    assert set(masks) == {"conv.weight", "conv2.weight"}


def test_unknown_skip_or_override_is_a_config_error():
    with pytest.raises(ConfigError, match="nope"):
        magnitude_prune(net(), 0.5, skip=["nope"])
    with pytest.raises(ConfigError, match="stem"):
        magnitude_prune(net(), 0.5, overrides={"stem": 0.2})  # skipped by skip_first
    with pytest.raises(ConfigError, match="ratio"):
        magnitude_prune(net(), 1.5)


def test_attention_and_embedding_are_targets():
    model = nn.Sequential(nn.Embedding(50, 16), nn.MultiheadAttention(16, 2), nn.Linear(16, 4))
    names = [t.param_name for t in select_targets(model, skip_first=False, skip_last=False)]
    assert names == ["0.weight", "1.in_proj_weight", "1.out_proj.weight", "2.weight"]


# -- magnitude ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.0, 0.37, 0.9])
def test_layerwise_is_exact_per_layer(ratio):
    model = net()
    masks = magnitude_prune(model, ratio, scope="layer")
    params = dict(model.named_parameters())
    for name, m in masks.items():
        assert pruned_count(m) == round(ratio * m.numel())
        assert int((params[name] == 0).sum()) == pruned_count(m)  # applied, and only there
        if m.any() and not m.all():  # the kept weights are the largest of the layer
            assert params[name].detach()[m].abs().min() >= net().state_dict()[name][~m].abs().max()


def test_global_is_exact_overall_and_one_threshold():
    original = net().state_dict()
    model = net()
    masks = magnitude_prune(model, 0.8, scope="global")
    total = sum(m.numel() for m in masks.values())
    assert masks.sparsity().pruned == round(0.8 * total)
    kept = torch.cat([original[n][m].abs() for n, m in masks.items()])
    gone = torch.cat([original[n][~m].abs() for n, m in masks.items()])
    assert kept.min() >= gone.max()
    per_layer = masks.sparsity().per_layer
    assert per_layer["conv.weight"] < 0.8 < per_layer["fc1.weight"]  # scaled-up layer keeps more
    assert masked_sparsity(model, masks).pruned == masks.sparsity().pruned


def test_normalized_global_differs_and_stays_exact():
    plain = magnitude_prune(net(), 0.8).sparsity()
    normed = magnitude_prune(net(), 0.8, normalize=True).sparsity()
    assert normed.pruned == plain.pruned
    assert normed.per_layer["conv.weight"] > plain.per_layer["conv.weight"] + 0.1


def test_ratio_zero_is_identity():
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    magnitude_prune(model, 0.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_ties_still_exact():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    masks = magnitude_prune(model, 0.5, skip_first=False, skip_last=False)
    assert masks.sparsity().pruned == 96


def test_overrides_fixed_and_rest_absorbs_target():
    masks = magnitude_prune(net(), 0.7, overrides={"conv2": 0.1})
    assert pruned_count(masks["conv2.weight"]) == round(0.1 * 256)
    assert masks.sparsity().pruned == round(0.7 * masks.sparsity().total)
    layer = magnitude_prune(net(), 0.7, scope="layer", overrides={"conv2.weight": 0.25})
    assert pruned_count(layer["conv2.weight"]) == 64
    assert pruned_count(layer["fc1.weight"]) == round(0.7 * 480)
    with pytest.raises(ConfigError, match="impossible"):
        magnitude_prune(net(), 0.1, overrides={"conv": 1.0})


@pytest.mark.parametrize("allocation", ["lamp", "erk"])
@pytest.mark.parametrize("ratio", [0.5, 0.9, 0.98])
def test_adaptive_allocations_hit_the_target(allocation, ratio):
    masks = magnitude_prune(net(), ratio, allocation=allocation)
    s = masks.sparsity()
    assert s.pruned == round(ratio * s.total)


def test_lamp_scores_and_erk_ratios():
    w = torch.tensor([3.0, -1.0, 2.0])
    # sorted squares 1, 4, 9: scores 1/14, 4/13, 9/9
    assert torch.allclose(lamp_scores(w), torch.tensor([1.0, 1 / 14, 4 / 13]))
    shapes = [(64, 3, 3, 3), (256, 256, 3, 3), (10, 256)]
    ratios = erk_ratios(shapes, 0.9)
    sizes = [math.prod(s) for s in shapes]
    assert sum(r * n for r, n in zip(ratios, sizes)) == pytest.approx(0.9 * sum(sizes), rel=1e-9)
    assert ratios[1] > ratios[0]  # the big layer is pruned hardest
    assert sum(exact_counts(ratios, sizes, round(0.9 * sum(sizes)))) == round(0.9 * sum(sizes))


# -- N:M ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8), (3, 5)])
def test_nm_pattern_in_every_group(n, m):
    model = net()
    masks = nm_prune(model, n, m, skip_first=False, skip_last=False)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        w = params[name].detach()
        rows = (w.movedim(1, -1) if w.ndim > 2 else w).reshape(w.shape[0], -1)
        k = rows.shape[1]
        for start in range(0, k, m):
            group = rows[:, start:start + m]
            assert ((group != 0).sum(1) == min(n, group.shape[1])).all(), (name, start)
        # the kept ones are the largest in their group
    lin = net().fc1.weight.detach()
    keep = masks["fc1.weight"]
    g_kept = lin.abs().reshape(30, -1, m)[:, : 16 // m] if 16 % m == 0 else None
    if g_kept is not None:
        kept = torch.where(keep.reshape(30, -1, m), lin.abs().reshape(30, -1, m), torch.inf).amin(-1)
        gone = torch.where(~keep.reshape(30, -1, m), lin.abs().reshape(30, -1, m), -torch.inf).amax(-1)
        assert (kept >= gone).all()


def test_nm_conv_groups_run_along_input_channels():
    conv = nn.Conv2d(8, 4, 3)
    masks = nm_prune(nn.Sequential(conv), 2, 4, skip_first=False, skip_last=False)
    keep = masks["0.weight"]  # [out, in, kh, kw]: every 4 consecutive input channels at one position keep 2
    assert (keep.reshape(4, 2, 4, 3, 3).sum(2) == 2).all()


def test_nm_rejects_bad_pattern():
    with pytest.raises(ConfigError, match="4:2"):
        nm_prune(net(), 4, 2)


# -- masks as data -----------------------------------------------------------------------------------------------
def test_masks_state_dict_round_trip(tmp_path):
    from safetensors.torch import load_file, save_file

    masks = magnitude_prune(net(), 0.6)
    save_file(masks.state_dict(), str(tmp_path / "m.safetensors"))
    back = Masks.from_state_dict(load_file(str(tmp_path / "m.safetensors")))
    assert list(back) == list(masks) and all(torch.equal(back[k], masks[k]) for k in masks)
    with pytest.raises(CheckpointError, match="bool"):
        Masks.from_state_dict({"conv.weight": torch.ones(3)})


def test_masks_for_another_model_are_rejected():
    masks = magnitude_prune(net(), 0.5)
    with pytest.raises(ModelError, match="conv.weight"):
        masks.apply(nn.Sequential(nn.Linear(2, 2)))


def test_callback_state_round_trip():
    masks = magnitude_prune(net(), 0.5)
    cb = MaskCallback(Masks())
    cb.load_state_dict(MaskCallback(masks).state_dict())
    assert all(torch.equal(cb.masks[k], masks[k]) for k in masks)
    with pytest.raises(CheckpointError):
        cb.load_state_dict({})


# -- through training --------------------------------------------------------------------------------------------
def _train(model, optimizer, masks, steps=6, clip=None, autocast=None, scaler=None, wrap=None):
    """Mirrors the order of prunekit.train.loop: backward, (unscale), on_after_backward, clip, step, on_step_end."""
    cb = MaskCallback(masks)
    run_model = wrap(model) if wrap else model
    state = TrainState(model=run_model, optimizer=optimizer)
    cb.on_train_start(state)
    torch.manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
        with autocast() if autocast else torch.enable_grad():
            loss = nn.functional.cross_entropy(run_model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(optimizer)
        cb.on_after_backward(state)
        if clip:
            nn.utils.clip_grad_norm_(run_model.parameters(), clip)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        cb.on_step_end(state)


def _optimizers():
    yield "sgd", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    yield "adamw", lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.05)
    yield "adam-l2", lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.05)
    yield "rmsprop", lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.9, weight_decay=1e-4)


def _cpu_bf16_autocast():
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            nn.Linear(2, 2)(torch.randn(1, 2))
    except Exception:  # pragma: no cover - platform without CPU bf16 autocast
        return None
    return lambda: torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("opt_name,make_opt", list(_optimizers()))
@pytest.mark.parametrize("extra", ["plain", "clip", "bf16-autocast", "grad-scaler"])
def test_pruned_weights_stay_exactly_zero(opt_name, make_opt, extra):
    model = net()
    masks = magnitude_prune(model, 0.75, scope="layer")
    optimizer = make_opt(model.parameters())
    _warm_up(model, optimizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kwargs = {}
    if extra == "clip":
        kwargs["clip"] = 0.01
    if extra in ("bf16-autocast", "grad-scaler"):
        kwargs["autocast"] = _cpu_bf16_autocast()
        if kwargs["autocast"] is None:
            pytest.skip("no bf16 autocast on this CPU")
    if extra == "grad-scaler":
        kwargs["scaler"] = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    _train(model, optimizer, masks, **kwargs)
    _assert_masked_training(model, optimizer, masks, before)


def _warm_up(model, optimizer):
    """Two unmasked steps after the masks were chosen: pruned weights are nonzero again and the optimizer holds
    state (momentum, moments) at pruned positions, as when masks are adopted mid-run; the callback must clear both."""
    _train(model, optimizer, Masks(), steps=2)


def _assert_masked_training(model, optimizer, masks, before):
    """What docs/sparse.md claims after masked training: pruned weights exactly +0.0, every kept weight moved,
    optimizer state zero at pruned positions."""
    params = dict(model.named_parameters())
    for name, keep in masks.items():
        assert keep.any() and not keep.all(), f"{name}: the mask must keep some and prune some weights"
        w = params[name].detach()
        assert (w[~keep] == 0).all() and not torch.signbit(w[~keep]).any(), name  # exactly +0.0
        assert (w[keep] != before[name][keep]).all(), f"{name}: a kept weight did not train"
        state = [v for v in optimizer.state[params[name]].values()
                 if isinstance(v, torch.Tensor) and v.shape == w.shape]
        assert state, f"{name}: no per-weight optimizer state to check"
        assert all((value[~keep] == 0).all() for value in state), f"{name}: optimizer state at pruned positions"
    assert masked_sparsity(model, masks).pruned == masks.sparsity().pruned


def test_without_the_callback_pruned_weights_come_back():
    """Guards the test above against passing vacuously."""
    model = net()
    masks = magnitude_prune(model, 0.75, scope="layer")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(model, optimizer, Masks(), steps=2)
    assert masked_sparsity(model, masks).pruned < masks.sparsity().pruned // 2


def test_pruned_weights_stay_zero_under_ddp(tmp_path):
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdv'}", rank=0, world_size=1)
    try:
        model = net()
        masks = magnitude_prune(model, 0.75, scope="layer")  # every layer keeps a quarter (global empties conv2, fc1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        _warm_up(model, optimizer)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        _train(model, optimizer, masks, wrap=lambda m: nn.parallel.DistributedDataParallel(m))
    finally:
        dist.destroy_process_group()
    _assert_masked_training(model, optimizer, masks, before)
