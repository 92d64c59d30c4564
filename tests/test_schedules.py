"""Schedules: each follows its rule (cubic ramp, constant-sparsity regrowth, splicing, soft zero -> regrow ->
remove, physical shrinking), and each one resumes from a mid-epoch kill bit-identical to an uninterrupted run."""
from __future__ import annotations

import copy

import pytest
import torch

from prunekit.apply.structured import zero_channels
from prunekit.data import load_dataset
from prunekit.plan import Plan
from prunekit.errors import CheckpointError, ConfigError
from prunekit.models import create_model
from prunekit.schedules import (SCHEDULES, DynamicSurgery, Gradual, ScheduleConfig, SoftFilter, build_schedule,
                                ratio_at)
from prunekit.sparse import masked_sparsity
from prunekit.storage.nested import flatten, unflatten
from prunekit.train import Callback, TrainConfig, TrainState, fit

CFG = TrainConfig(epochs=4, batch_size=8, warmup_epochs=0.5, lr=0.05)


@pytest.fixture
def tiny_ds(tiny_folder):
    return load_dataset(tiny_folder, image_size=16, seed=0, test_frac=0.2, val_frac=0.2)


def tiny_model(seed: int = 0, name: str = "vgg_tiny"):
    torch.manual_seed(seed)
    return create_model(name, num_classes=3, widths=[8, 16]) if name == "vgg_tiny" else \
        create_model(name, num_classes=3, widths=[8, 16], blocks=[1, 1])


def train(ds, schedule, model=None, callbacks=(), **kw):
    return fit(model or tiny_model(), ds, CFG, device="cpu", callbacks=[schedule, *callbacks], progress=False, **kw)


# -- kill-and-resume, every schedule -----------------------------------------------------------------------------------
RESUME_CASES = {
    "oneshot": ("oneshot", dict(target=0.8, start_epoch=1)),
    "oneshot-structured": ("oneshot", dict(method="structured", target=0.5, start_epoch=1)),
    "iterative": ("iterative", dict(target=0.8, end_epoch=3, every=1)),
    "iterative-structured": ("iterative", dict(method="structured", target=0.5, start_epoch=1, end_epoch=3, every=1)),
    "gradual": ("gradual", dict(target=0.8, end_epoch=3, update_every=1)),
    "dns": ("dns", dict(target=0.8, end_epoch=3, update_every=1)),
    "rigl": ("rigl", dict(target=0.8, end_epoch=4, update_every=1)),
    "soft": ("soft", dict(method="structured", target=0.5, criterion="random", seed=3)),
    "soft-resnet": ("soft", dict(method="structured", target=0.5, criterion="l1"), "resnet_tiny"),
    "soft-then-hard": ("soft", dict(method="structured", target=0.5, criterion="random", seed=3, hard_epochs=2)),
    "iterative-structured-resnet": ("iterative", dict(method="structured", target=0.5, start_epoch=1, end_epoch=3,
                                                      every=1), "resnet_tiny"),
}


class KillAt(Callback):
    """Raises inside epoch ``epoch`` after its ``step_in_epoch``-th step, like a Ctrl-C mid-epoch."""

    def __init__(self, epoch: int, step_in_epoch: int) -> None:
        self.epoch, self.step_in_epoch = epoch, step_in_epoch

    def on_step_end(self, state):
        if state.epoch == self.epoch and state.step - state.epoch * state.steps_per_epoch == self.step_in_epoch:
            raise KeyboardInterrupt


def _same_state(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu()), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _same_state(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_state(x, y, f"{where}/{i}")
    else:
        assert a == b, where


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_killed_mid_epoch_resumes_bit_identical(case, tiny_ds, tmp_path):
    name, kw, arch = (*RESUME_CASES[case], "vgg_tiny")[:3]
    ref_sched = build_schedule(name, **kw)
    ref = train(tiny_ds, ref_sched, model=tiny_model(name=arch), out_dir=tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        train(tiny_ds, build_schedule(name, **kw), model=tiny_model(name=arch),
              callbacks=[KillAt(epoch=2, step_in_epoch=1)], out_dir=tmp_path / "run")
    resumed_sched = build_schedule(name, **kw)
    res = train(tiny_ds, resumed_sched, model=tiny_model(seed=123, name=arch), out_dir=tmp_path / "run")
    assert res.resumed_from == 2
    ref_w, res_w = ref.model.state_dict(), res.model.state_dict()
    assert ref_w.keys() == res_w.keys()
    for k in ref_w:
        assert ref_w[k].shape == res_w[k].shape and torch.equal(ref_w[k], res_w[k]), k
    _same_state(ref_sched.state_dict(), resumed_sched.state_dict())
    if ref_sched.masks is not None:
        assert masked_sparsity(res.model, resumed_sched.masks).overall >= kw["target"] - 1e-3


def test_state_round_trips_through_checkpoint_format(tiny_ds):
    for name, kw, *arch in RESUME_CASES.values():
        sched = build_schedule(name, **kw)
        train(tiny_ds, sched, model=tiny_model(name=(arch or ["vgg_tiny"])[0]))
        spec, tensors = flatten(sched.state_dict(), "@s")
        again = build_schedule(name, **kw)
        again.load_state_dict(unflatten(spec, tensors))
        _same_state(sched.state_dict(), again.state_dict())


def test_loading_another_schedules_state_is_a_clear_error():
    with pytest.raises(CheckpointError, match="Gradual"):
        build_schedule("rigl").load_state_dict(build_schedule("gradual").state_dict())


# -- gradual ---------------------------------------------------------------------------------------------------------
def test_gradual_follows_the_cubic_formula_at_every_update(tiny_ds):
    seen = []

    class Probe(Callback):  # runs after the schedule: the weights themselves must be that sparse
        def on_step_end(self, state):
            if sched.history and sched.history[-1]["step"] == state.step:
                seen.append((state.step, masked_sparsity(state.model, sched.masks).overall))

    sched = Gradual(target=0.8, initial_ratio=0.1, start_epoch=1, end_epoch=4, update_every=2)
    train(tiny_ds, sched, callbacks=[Probe()])
    spe = 3  # 19 training images, batches of 8 (+3)
    t0, dt, n = spe, 2, (3 * spe) // 2
    assert [h["step"] for h in sched.history] == [t0 + k * dt for k in range(n + 1)]
    total = sum(m.numel() for m in sched.masks.values())
    for k, h in enumerate(sched.history):
        expected = 0.8 + (0.1 - 0.8) * (1 - k / n) ** 3
        assert h["ratio"] == pytest.approx(expected, abs=1e-12)
        assert h["sparsity"] == round(expected * total) / total  # exact count
    assert sched.history[-1]["ratio"] == 0.8
    assert seen == [(h["step"], h["sparsity"]) for h in sched.history]  # the weights are that sparse too


def test_gradual_window_arithmetic():
    sched = Gradual(target=0.9, start_epoch=2, end_epoch=20, update_every=100)
    state = TrainState(model=None, optimizer=None, epochs=30, steps_per_epoch=50)
    t0, dt, n = sched.window(state)
    assert (t0, dt, n) == (100, 100, 9)
    assert sched.sparsity_at(state, 99) is None and sched.sparsity_at(state, 150) is None
    assert sched.sparsity_at(state, 100) == 0.0 and sched.sparsity_at(state, 1000) == 0.9
    assert sched.sparsity_at(state, 1100) is None
    assert sched.sparsity_at(state, 400) == pytest.approx(0.9 - 0.9 * (1 - 3 / 9) ** 3)


# -- RigL ------------------------------------------------------------------------------------------------------------
def test_rigl_keeps_sparsity_constant_and_moves_masks(tiny_ds):
    start = {}

    class Probe(Callback):
        def on_train_start(self, state):
            start.update({k: v.clone() for k, v in sched.masks.items()})

        def on_step_end(self, state):
            for name, mask in sched.masks.items():  # every layer keeps its count of active weights
                assert int(mask.sum()) == int(start[name].sum()), name
            assert masked_sparsity(state.model, sched.masks).overall >= sched.masks.sparsity().overall

    sched = build_schedule("rigl", target=0.8, end_epoch=4, update_every=1, update_fraction=0.5)
    train(tiny_ds, sched, callbacks=[Probe()])
    updates = [h for h in sched.history if "moved" in h]
    assert len(updates) == 4 * 3 - 1  # every step strictly inside the window
    assert len({h["sparsity"] for h in sched.history}) == 1
    assert sum(h["moved"] for h in updates) > 0
    moved = sum(int((start[k] != v).sum()) for k, v in sched.masks.items())
    assert moved > 0
    fractions = [h["fraction"] for h in updates]
    assert fractions == sorted(fractions, reverse=True) and fractions[0] < 0.5


# -- DNS -------------------------------------------------------------------------------------------------------------
def test_dns_splices_back_a_recovered_weight():
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = TrainState(model=model, optimizer=opt, epochs=4, steps_per_epoch=3)
    sched = DynamicSurgery(target=0.8, margin=0.1, end_epoch=3)
    sched.on_train_start(state)
    name = next(iter(sched.masks))
    pruned = (~sched.masks[name]).flatten().nonzero()[0].item()
    assert dict(model.named_parameters())[name].detach().flatten()[pruned] == 0  # forward sees it pruned
    assert sched.dense[name].flatten()[pruned] != 0  # ... but its dense value is kept and trains on
    sched.dense[name].view(-1)[pruned] = 10.0  # its magnitude recovers
    event = sched.update_masks()
    assert sched.masks[name].flatten()[pruned]
    assert event["spliced"] >= 1


def test_dns_pruned_weights_keep_learning_and_end_at_target(tiny_ds):
    first = {}

    class Probe(Callback):
        def on_train_start(self, state):
            first.update({k: v.clone() for k, v in sched.dense.items()})

    sched = DynamicSurgery(target=0.8, end_epoch=3, update_every=1)
    res = train(tiny_ds, sched, callbacks=[Probe()])
    assert sum(h.get("spliced", 0) for h in sched.history) > 0
    assert sched.history[-1]["event"] == "freeze" and not sched.dense
    assert masked_sparsity(res.model, sched.masks).overall == pytest.approx(sched.masks.sparsity().overall)
    assert sched.masks.sparsity().overall == pytest.approx(0.8, abs=1e-3)


def test_global_magnitude_at_init_empties_a_layer_lamp_and_dns_with_lamp_do_not():
    """Why the sweep shares the budget with LAMP: at random init the widest layer has the smallest weights, so one
    global magnitude threshold removes it entirely; LAMP keeps every layer alive, and DNS with criterion="lamp"
    keeps each layer's share through its mask updates."""
    from prunekit.sparse import magnitude_prune

    torch.manual_seed(0)
    model = create_model("vgg_tiny", num_classes=21)
    dens = lambda masks: {n: float(m.float().mean()) for n, m in masks.items()}  # noqa: E731
    with pytest.warns(UserWarning, match="removed every weight of"):
        assert min(dens(magnitude_prune(model, 0.9, scope="global", apply=False)).values()) == 0.0
    assert min(dens(magnitude_prune(model, 0.9, scope="global", allocation="lamp", apply=False)).values()) > 0.0
    model = create_model("vgg_tiny", num_classes=21)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = TrainState(model=model, optimizer=opt, epochs=4, steps_per_epoch=3)
    sched = DynamicSurgery(target=0.9, criterion="lamp", end_epoch=3)
    sched.on_train_start(state)
    shares = {n: 1 - d for n, d in dens(sched.masks).items()}
    with torch.no_grad():
        for w in sched.dense.values():  # scramble magnitudes: a global threshold would now move budget around
            w.mul_(torch.rand_like(w) * 3)
    sched.update_masks()
    after = {n: 1 - d for n, d in dens(sched.masks).items()}
    for n in shares:
        assert after[n] == pytest.approx(shares[n], abs=0.05 + sched.margin) and after[n] < 1.0, n


# -- soft filter pruning ---------------------------------------------------------------------------------------------
def _zeroed(sched):
    return {g["module"]: g["remove"] for g in sched.plan["groups"]}


def _bn_after(model, conv_name):
    prefix, _, idx = conv_name.rpartition(".")
    return model.get_submodule(f"{prefix}.{int(idx) + 1}")


def test_soft_zeroes_chosen_filters_then_training_rebuilds_them(tiny_ds):
    checks = {"zero": 0, "regrown": 0}

    class Before(Callback):  # runs before the schedule's stage: last stage's filters after one epoch of training
        def on_epoch_end(self, state):
            if sched.plan is None:
                return
            for conv, remove in _zeroed(sched).items():
                w = state.model.get_submodule(conv).weight[remove]
                assert (w.abs().flatten(1).sum(1) > 0).all(), f"{conv} filters {remove} were not updated"
                checks["regrown"] += 1

    class After(Callback):  # runs after the stage: the chosen filters and their BN entries are exactly zero
        def on_epoch_end(self, state):
            for conv, remove in _zeroed(sched).items():
                bn = _bn_after(state.model, conv)
                assert torch.all(state.model.get_submodule(conv).weight[remove] == 0)
                assert torch.all(bn.weight[remove] == 0) and torch.all(bn.bias[remove] == 0)
                checks["zero"] += 1

    sched = SoftFilter(target=0.5, criterion="l2", remove=False)
    fit(tiny_model(), tiny_ds, CFG, device="cpu", callbacks=[Before(), sched, After()], progress=False)
    assert checks["zero"] > 0 and checks["regrown"] > 0
    assert [h["epoch"] for h in sched.history] == [1, 2, 3, 4]


def test_soft_filters_mode_zeroes_only_filters_and_gradients_rebuild_them(tiny_ds):
    """zero="filters" (SFP): BN and the next layer stay alive, so the zeroed filters get real gradients back
    (they move further than with the default, where only leftover momentum moves them); the last stage zeroes
    the whole group and the removal is exact."""
    moved = {}

    def run(zero):
        seen = []

        class Before(Callback):
            def on_epoch_end(self, state):
                if sched.plan is not None and state.epoch >= 1:
                    for conv, remove in _zeroed(sched).items():
                        seen.append(float(state.model.get_submodule(conv).weight[remove].detach().abs().mean()))

        class After(Callback):
            def on_epoch_end(self, state):
                for conv, remove in _zeroed(sched).items():
                    bn = _bn_after(state.model, conv)
                    assert torch.all(state.model.get_submodule(conv).weight[remove] == 0)
                    live = bool((bn.weight[remove] != 0).any())
                    assert live == (zero == "filters"), (zero, conv)

        sched = SoftFilter(target=0.5, criterion="l2", zero=zero, remove=False)
        fit(tiny_model(), tiny_ds, CFG, device="cpu", callbacks=[Before(), sched, After()], progress=False)
        moved[zero] = sum(seen) / len(seen)

    run("group")
    run("filters")
    assert moved["filters"] > 2 * moved["group"] > 0, moved
    snap = {}

    class Snap(Callback):
        def on_train_end(self, state):
            snap["model"] = copy.deepcopy(state.model).eval()

    sched = SoftFilter(target=0.5, criterion="l2", zero="filters")
    res = fit(tiny_model(), tiny_ds, CFG, device="cpu", callbacks=[Snap(), sched], progress=False)
    zero_channels(snap["model"], Plan.from_dict(sched.plan))  # what the last stage did to the whole group
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(snap["model"](x), res.model.eval()(x), atol=1e-5)
    with pytest.raises(ConfigError, match="zero="):
        SoftFilter(target=0.5, zero="bn")


@pytest.mark.parametrize("arch", ["vgg_tiny", "resnet_tiny"])
def test_soft_final_removal_keeps_outputs_and_shrinks(arch, tiny_ds):
    snap = {}

    class Before(Callback):
        def on_train_end(self, state):
            snap["model"] = copy.deepcopy(state.model).eval()

    sched = SoftFilter(target=0.5, criterion="l1", ramp_epochs=2)
    res = fit(tiny_model(name=arch), tiny_ds, CFG, device="cpu", callbacks=[Before(), sched], progress=False)
    assert [h["ratio"] for h in sched.history[:4]] == [0.25, 0.5, 0.5, 0.5]
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        want, got = snap["model"](x), res.model.eval()(x)
    assert torch.allclose(want, got, atol=1e-5), (want - got).abs().max()
    convs = [m for m in res.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert {c.out_channels for c in convs} == {4, 8}  # every group of 8 -> 4, of 16 -> 8
    assert sum(p.numel() for p in res.model.parameters()) < sum(p.numel() for p in snap["model"].parameters())


def test_soft_then_hard_removes_early_and_trains_the_small_model(tiny_ds):
    sizes = []

    class Widths(Callback):
        def on_epoch_end(self, state):
            sizes.append(sum(p.numel() for p in state.unwrapped.parameters()))

    sched = SoftFilter(target=0.5, criterion="random", seed=1, hard_epochs=2)
    start = tiny_model()
    full = sum(p.numel() for p in start.parameters())
    snap = {}

    class Snap(Callback):
        def on_epoch_start(self, state):
            if state.epoch == CFG.epochs - 1:
                snap["weights"] = {k: v.clone() for k, v in state.unwrapped.state_dict().items()}

    res = fit(start, tiny_ds, CFG, device="cpu", callbacks=[sched, Widths(), Snap()], progress=False)
    hard = CFG.epochs - 2
    removed = [h for h in sched.history if h.get("event") == "removed"]
    assert len(removed) == 1 and removed[0]["epoch"] == hard
    assert [h["epoch"] for h in sched.history if "zeroed" in h] == [1, hard]  # no soft stage after removal
    assert sizes[:hard - 1] == [full] * (hard - 1) and all(s < full for s in sizes[hard:])  # small from there on
    final = res.model.state_dict()
    assert any(not torch.equal(final[k], snap["weights"][k]) for k in final if k.endswith("weight"))  # still trained
    convs = [m for m in res.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert {c.out_channels for c in convs} == {4, 8}
    with pytest.raises(ConfigError, match="hard_epochs"):
        fit(tiny_model(), tiny_ds, CFG, device="cpu", callbacks=[SoftFilter(target=0.5, hard_epochs=CFG.epochs)],
            progress=False)


# -- iterative structured --------------------------------------------------------------------------------------------
def test_iterative_structured_reaches_target_and_shrinks_every_round(tiny_ds, tmp_path):
    sched = build_schedule("iterative", method="structured", target=0.5, criterion="l2", start_epoch=1, end_epoch=3,
                           every=1, curve="linear")
    res = train(tiny_ds, sched, model=tiny_model(name="resnet_tiny"), out_dir=tmp_path)
    params = [h["params"] for h in sched.history]
    assert params == sorted(params, reverse=True) and len(set(params)) == 3  # smaller every round
    assert [h["ratio"] for h in sched.history] == pytest.approx([1 / 6, 1 / 3, 0.5])
    assert sched.history[-1]["channels"] == sched.history[-1]["channels_original"] // 2
    convs = {n: m.out_channels for n, m in res.model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert max(convs.values()) == 8 and min(convs.values()) == 4  # widths 16 -> 8, 8 -> 4
    fresh = create_model("resnet_tiny", num_classes=3, widths=[8, 16], blocks=[1, 1])
    assert sum(p.numel() for p in res.model.parameters()) < 0.5 * sum(p.numel() for p in fresh.parameters())
    assert len(sched.plans) == 3 and all(p["format"] == "prunekit.plan/1" for p in sched.plans)


def test_structured_targets_in_params_reduction(tiny_ds):
    """``reduce="params=0.4"``: measured on the original model, reached after the final removal / last round."""
    n0 = sum(p.numel() for p in tiny_model().parameters())
    soft = build_schedule("soft", method="structured", criterion="l2", reduce="params=0.4")
    res = fit(tiny_model(), tiny_ds, CFG, device="cpu", callbacks=[soft], progress=False)
    assert soft.resolved["reduce"] == {"params": 0.4}
    assert 1 - sum(p.numel() for p in res.model.parameters()) / n0 == pytest.approx(0.4, abs=0.02)
    # A round at epoch 0, before any batch was seen, takes the input size from the loop's data.
    it = build_schedule("iterative", method="structured", reduce={"params": 0.4}, end_epoch=2, every=1)
    res = fit(tiny_model(), tiny_ds, CFG, device="cpu", callbacks=[it], progress=False)
    assert 1 - sum(p.numel() for p in res.model.parameters()) / n0 == pytest.approx(0.4, abs=0.02)
    assert [h["epoch"] for h in it.history] == [0, 1, 2]
    with pytest.raises(ConfigError, match="method='structured'"):
        build_schedule("gradual", reduce="params=0.4")
    with pytest.raises(ConfigError, match="metric 'flops'"):
        build_schedule("soft", method="structured", reduce="flops=0.4")


def test_iterative_unstructured_rounds_follow_the_curve(tiny_ds):
    sched = build_schedule("iterative", target=0.6, start_epoch=1, end_epoch=3, every=1, curve="linear", scope="layer")
    train(tiny_ds, sched)
    assert [(h["epoch"], h["ratio"]) for h in sched.history] == [(1, pytest.approx(0.2)), (2, pytest.approx(0.4)),
                                                                  (3, 0.6)]
    assert all(s == pytest.approx(0.6, abs=0.01) for s in sched.masks.sparsity().per_layer.values())


def test_structured_global_scope_removes_the_ratio_of_all_channels(tiny_ds):
    sched = build_schedule("oneshot", method="structured", target=0.5, scope="global", input_size=16)
    res = train(tiny_ds, sched)
    widths = [m.out_channels for m in res.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(widths) == 48 - 24  # one threshold over all groups: half of all channels, not half of each
    assert all(w >= max(1, round(0.1 * w0)) for w, w0 in zip(widths, [8, 8, 16, 16]))


def test_a_window_after_the_run_is_an_error(tiny_ds):
    with pytest.raises(ConfigError, match="start_epoch=9 is after"):
        train(tiny_ds, build_schedule("gradual", start_epoch=9, end_epoch=10))


# -- construction ----------------------------------------------------------------------------------------------------
def test_registry_and_build_errors():
    assert set(SCHEDULES.names()) == {"oneshot", "iterative", "gradual", "dns", "rigl", "soft"}
    with pytest.raises(ConfigError, match="unknown schedule 'cubic'"):
        build_schedule("cubic")
    with pytest.raises(ConfigError, match="no option 'curve'"):
        build_schedule("gradual", curve="linear")
    with pytest.raises(ConfigError, match="structured pruning only"):
        build_schedule("soft", method="unstructured")
    with pytest.raises(ConfigError, match="unstructured pruning only"):
        build_schedule("gradual", method="structured")
    with pytest.raises(ConfigError, match="target=1.0"):
        build_schedule("oneshot", target=1.0)
    with pytest.raises(ConfigError, match="end_epoch=1"):
        build_schedule("gradual", start_epoch=2, end_epoch=1)
    with pytest.raises(ConfigError, match="unknown criterion 'nope'"):
        build_schedule("soft", method="structured", criterion="nope")
    with pytest.raises(ConfigError, match="not an unstructured criterion"):
        build_schedule("gradual", criterion="l2")


def test_schedule_config_builds_and_rejects_meaningless_options():
    cfg = ScheduleConfig(schedule="gradual", ratio=0.9, start_epoch=2, end_epoch=20, update_every=50)
    sched = cfg.build()
    assert isinstance(sched, Gradual) and sched.target == 0.9 and sched.update_every == 50
    assert ScheduleConfig.model_validate(cfg.model_dump()) == cfg  # the recipe round-trips
    with pytest.raises(ConfigError, match="'curve' has no meaning for schedule 'gradual'"):
        ScheduleConfig(schedule="gradual", curve="linear").build()
    soft = ScheduleConfig(schedule="soft", method="structured", ratio=0.4, criterion="l2", ramp_epochs=3).build()
    assert isinstance(soft, SoftFilter) and soft.ramp_epochs == 3 and soft.scope == "layer"

    class Options:  # a wider options object, e.g. the CLI's
        schedule, method, ratio, criterion, start_epoch, epochs, model = "rigl", "unstructured", 0.95, "erk", 0, 9, "x"
        seed, image_size = 7, 32

    picked = ScheduleConfig.from_options(Options())
    assert picked.input_size == 32 and picked.seed == 7 and picked.build().target == 0.95


def test_curves_hit_their_ends():
    for curve in ("linear", "cubic", "exponential"):
        assert ratio_at(curve, 0, 0.9) == 0.0 and ratio_at(curve, 1, 0.9) == 0.9
        assert 0 < ratio_at(curve, 0.5, 0.9) < 0.9
    assert ratio_at("exponential", 0.5, 0.99) == pytest.approx(0.9)  # same share of survivors each half
    assert ratio_at("cubic", 0.5, 0.8, 0.1) == pytest.approx(0.8 - 0.7 * 0.125)
    with pytest.raises(ConfigError, match="curve='square'"):
        ratio_at("square", 0.5, 0.9)


def test_early_stopping_returns_the_pruned_best_epoch(tiny_ds, tmp_path):
    """Early stopping restores the best epoch with its schedule state, then the soft schedule removes channels."""
    soft = build_schedule("soft", method="structured", target=0.5, criterion="l2")
    cfg = TrainConfig(epochs=10, batch_size=8, lr=1e-7, warmup_epochs=0, patience=1)
    res = fit(tiny_model(), tiny_ds, cfg, device="cpu", callbacks=[soft], progress=False, out_dir=tmp_path)
    assert res.stopped_early
    widths = [m.out_channels for m in res.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [4, 4, 8, 8]
    assert res.model(torch.randn(2, 3, 16, 16)).shape == (2, 3)


# -- one planner: the schedules plan with make_plan --------------------------------------------------------------------
def drive(schedule, model, loader=None, boundaries=3):
    """Run a schedule's hooks at boundaries 0 .. boundaries-1 without training (the model is what they prune)."""
    state = TrainState(model=model, optimizer=None, epochs=boundaries, steps_per_epoch=1, loader=loader)
    schedule.on_train_start(state)
    for epoch in range(boundaries - 1):
        state.epoch = epoch
        schedule.on_epoch_end(state)
    return model


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_a_schedule_stage_is_the_one_shot_plan(scope):
    """The oneshot schedule's stage removes the very channels make_plan's one-shot plan removes, in both scopes."""
    from prunekit.apply.oneshot import checked_plan

    model = tiny_model(name="resnet_tiny")
    x = torch.zeros(1, 3, 16, 16)
    plan, _ = checked_plan(model, x, ratio=0.7, criterion="l2", scope={"layer": "uniform"}.get(scope, scope))
    sched = build_schedule("oneshot", method="structured", target=0.7, criterion="l2", scope=scope, input_size=16)
    drive(sched, copy.deepcopy(model), boundaries=1)
    assert [(g["key"], g["remove"]) for g in sched.plans[0]["groups"]] == [(g.key, g.remove) for g in plan.groups]
    assert plan.groups and sched.plans[0]["settings"]["scope"] == plan.settings["scope"]


@pytest.mark.parametrize("round_to, widths", [(None, [23, 45]), (8, [24, 48])])
def test_iterative_rounds_end_at_the_one_shot_widths_round_to_included(round_to, widths):
    """Three rounds against the original widths leave every shape one-shot leaves; round_to reaches the rounds
    (0.3 of 32/64 channels keeps 23/45, on multiples of 8: 24/48)."""
    from prunekit.apply.oneshot import prune_structured

    torch.manual_seed(0)
    model = create_model("resnet_tiny", num_classes=3, widths=[32, 64], blocks=[1, 1])
    ref, _ = prune_structured(copy.deepcopy(model), torch.zeros(1, 3, 16, 16), ratio=0.3, criterion="l2",
                              round_to=round_to)
    sched = build_schedule("iterative", method="structured", target=0.3, criterion="l2", end_epoch=2, every=1,
                           input_size=16, round_to=round_to)
    pruned = drive(sched, copy.deepcopy(model))
    assert len(sched.plans) == 3 and _shapes(pruned) == _shapes(ref)
    assert sorted({m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)}) == widths
    with pytest.raises(ConfigError, match="method='structured'"):
        build_schedule("gradual", round_to=8)


class CountingLoader:
    """Training batches that count how many were drawn."""

    def __init__(self):
        self.drawn = 0

    def __iter__(self):
        for i in range(100):
            self.drawn += 1
            yield torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(i)), torch.zeros(2, dtype=torch.long)


@pytest.mark.parametrize("name, calib_batches", [("oneshot", 3), ("soft", 5), ("oneshot", None)])
def test_calib_batches_reach_the_criterion(name, calib_batches):
    """A data-driven criterion scores on exactly ``calib_batches`` training batches (default 4) per stage."""
    loader = CountingLoader()
    kw = {} if calib_batches is None else {"calib_batches": calib_batches}
    sched = build_schedule(name, method="structured", target=0.5, criterion="mean_activation", input_size=16, **kw)
    drive(sched, tiny_model(), loader, boundaries=2 if name == "soft" else 1)  # soft: its first stage is boundary 1
    assert loader.drawn == (calib_batches or 4) and len(sched.history) == 1
