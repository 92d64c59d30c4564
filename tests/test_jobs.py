"""End to end: train -> prune -> fine-tune -> save -> load -> eval, on a tiny synthetic folder."""
import functools
import json

import pytest
import torch

import prunekit
from prunekit.cli.main import main
from prunekit.config import PruneOptions
from prunekit.jobs.prune import prune_job
from prunekit.errors import ConfigError
from prunekit.importance import CRITERIA
from prunekit.storage import checkpoint as ckpt
from prunekit.train import evaluate


def _opts(folder, out, **kw):
    base = dict(model="vgg_tiny", data=str(folder), image_size=16, epochs=3, finetune_epochs=2, batch_size=8,
                out=out, progress=False, latency=False, val_frac=0.2)
    if kw.get("model", "vgg_tiny") != "vgg_tiny":
        del base["epochs"]  # a checkpoint is not trained again (--epochs with one is refused)
    return PruneOptions(**{**base, **kw})


def test_unstructured_global_prune_keeps_masks_through_finetuning(tiny_folder, tmp_path):
    res = prune_job(_opts(tiny_folder, tmp_path / "u", method="unstructured", scope="global", ratio=0.8))
    loaded = ckpt.load_checkpoint(res["checkpoint"])
    masks = loaded.model.prunekit_masks
    assert masks, "the checkpoint must carry the masks"
    state = loaded.model.state_dict()
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert pruned > 0
    for name, keep in masks.items():
        assert torch.all(state[name][~keep] == 0), f"{name}: a pruned weight moved during fine-tuning"
    total = sum(m.numel() for m in masks.values())
    assert pruned / total == pytest.approx(0.8, abs=0.01)
    assert res["after"]["nonzero_params"] < 0.35 * res["before"]["nonzero_params"]
    assert res["after"]["file_bytes"] < 0.5 * res["before"]["file_bytes"]  # the compressed file really is smaller
    for key in ("md", "json", "png"):
        assert (tmp_path / "u" / f"report.{key}").is_file()


def test_structured_prune_shrinks_and_reloads(tiny_folder, tmp_path):
    res = prune_job(_opts(tiny_folder, tmp_path / "s", method="structured", ratio=0.5, criterion="l1"))
    assert res["after"]["params"] < 0.4 * res["before"]["params"]
    assert res["after"]["macs"] < 0.4 * res["before"]["macs"]
    model = prunekit.load(res["checkpoint"])
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 3)
    assert sum(p.numel() for p in model.parameters()) == res["after"]["params"]


def test_round_to_from_the_cli_keeps_every_pruned_width_a_multiple(tiny_folder, tmp_path, capsys):
    code = main(["prune", "--model", "vgg_tiny", "--data", str(tiny_folder), "--image-size", "16", "--epochs", "1",
                 "--finetune-epochs", "0", "--structured", "--ratio", "0.6", "--round-to", "8", "--out",
                 str(tmp_path / "r8"), "--json", "--no-progress", "--no-latency", "--batch-size", "8"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["pruning"]["round_to"] == {"asked": "8", "multiple": 8}
    model = prunekit.load(result["checkpoint"])
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths and all(w % 8 == 0 for w in widths)
    exact = prune_job(_opts(tiny_folder, tmp_path / "r0", method="structured", ratio=0.6, finetune_epochs=0,
                            epochs=1))
    exact_widths = [m.out_channels for m in prunekit.load(exact["checkpoint"]).modules()
                    if isinstance(m, torch.nn.Conv2d)]
    assert any(w % 8 for w in exact_widths)  # without rounding the same ratio gives widths off the multiple


def test_an_unreached_reduce_target_is_refused_before_training(tiny_folder, tmp_path, capsys, monkeypatch):
    import prunekit.jobs.prune as pipeline

    monkeypatch.setattr(pipeline, "fit", lambda *a, **k: pytest.fail("trained before checking the target"))
    code = main(["prune", "--model", "vgg_tiny", "--data", str(tiny_folder), "--image-size", "16", "--epochs", "30",
                 "--structured", "--reduce", "macs=1000x", "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "1000x smaller cannot be reached" in err and "--closest" in err
    assert not (tmp_path / "r").exists()


def test_an_unreached_reduce_target_with_closest_is_said_on_stderr_and_in_the_json(tiny_folder, tmp_path, capsys,
                                                                                   caplog):
    with caplog.at_level("WARNING", logger="prunekit.allocate.reduce"):
        code = main(["prune", "--model", "vgg_tiny", "--data", str(tiny_folder), "--image-size", "16", "--epochs",
                     "0", "--finetune-epochs", "0", "--structured", "--reduce", "macs=1000x", "--closest", "--out",
                     str(tmp_path / "r"), "--json", "--no-progress", "--no-latency"])
    result = json.loads(capsys.readouterr().out)
    target = result["pruning"]["reduce_target"]
    assert code == 0 and target["requested_factor"] == 1000 and target["target_reached"] is False
    made = result["before"]["macs"] / result["after"]["macs"]
    assert made < 1000 and target["reached_factor"] == pytest.approx(made, rel=1e-3)
    warned = [r.getMessage() for r in caplog.records if r.name == "prunekit.allocate.reduce"]
    assert len(warned) == 1 and "not reached" in warned[0]


def test_a_bad_round_to_is_one_clear_error(tiny_folder, tmp_path):
    with pytest.raises(ValueError, match="--round-to 3.5"):
        _opts(tiny_folder, tmp_path / "bad", method="structured", round_to="3.5")


def test_nm_and_cli_json(tiny_folder, tmp_path, capsys):
    code = main(["prune", "--model", "vgg_tiny", "--data", str(tiny_folder), "--image-size", "16", "--epochs", "1",
                 "--finetune-epochs", "1", "--nm", "2:4", "--out", str(tmp_path / "nm"), "--json", "--no-progress",
                 "--no-latency", "--batch-size", "8"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)
    model = prunekit.load(result["checkpoint"])
    w = model.features[3].weight.detach()  # a middle conv: every group of 4 inputs keeps at most 2 nonzeros
    groups = w.permute(0, 2, 3, 1).reshape(-1, 4)
    assert int((groups != 0).sum(1).max()) <= 2


def test_bad_nm_is_clear(tiny_folder, tmp_path, capsys):
    code = main(["prune", "--model", "vgg_tiny", "--data", str(tiny_folder), "--image-size", "16", "--epochs", "0",
                 "--finetune-epochs", "0", "--nm", "2-4", "--out", str(tmp_path / "bad"), "--no-latency"])
    assert code == 2 and "2:4" in capsys.readouterr().err


def test_soft_schedule_from_scratch_to_a_params_target(tiny_folder, tmp_path):
    """PFAM-style: no checkpoint, soft pruning every epoch of training, final physical removal to params -40%."""
    res = prune_job(_opts(tiny_folder, tmp_path / "soft", method="structured", schedule="soft", criterion="pfam",
                          reduce="params=0.4", epochs=3, finetune_epochs=0))
    assert res["before"]["accuracy"] is None  # nothing was trained unpruned
    assert 1 - res["after"]["params"] / res["before"]["params"] == pytest.approx(0.4, abs=0.03)
    assert prunekit.load(res["checkpoint"])(torch.randn(1, 3, 16, 16)).shape == (1, 3)


def test_gradual_schedule_on_a_trained_checkpoint(tiny_folder, tmp_path):
    base = prune_job(_opts(tiny_folder, tmp_path / "base", ratio=0.0, finetune_epochs=0, epochs=2))
    res = prune_job(_opts(tiny_folder, tmp_path / "grad", model=base["checkpoint"], schedule="gradual", ratio=0.7,
                          finetune_epochs=3, scope="global"))
    loaded = ckpt.load_checkpoint(res["checkpoint"])
    masks = loaded.model.prunekit_masks
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert pruned / sum(m.numel() for m in masks.values()) == pytest.approx(0.7, abs=0.01)
    state = loaded.model.state_dict()
    assert all(torch.all(state[k][~m] == 0) for k, m in masks.items())


@pytest.mark.parametrize("criterion", ["attention", "taylor", "fpgm"])
def test_structured_criteria_from_the_cli_options(tiny_folder, tmp_path, monkeypatch, criterion):
    scored: list = []
    real = CRITERIA.get(criterion)

    @functools.wraps(real)
    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        scored.append(out)
        return out

    monkeypatch.setitem(CRITERIA._items, criterion, spy)  # the job must reach this criterion, not a default
    res = prune_job(_opts(tiny_folder, tmp_path / criterion, method="structured", criterion=criterion, ratio=0.5,
                          epochs=1, finetune_epochs=1, **({"attention_epochs": 1} if criterion == "attention" else {})))
    assert scored, f"prune_job never scored channels with {criterion!r}"
    assert res["after"]["params"] < 0.5 * res["before"]["params"]
    model = prunekit.load(res["checkpoint"])
    assert not any("attention" in type(m).__name__.lower() or "SE" in type(m).__name__ for m in model.modules())
    if criterion == "attention":
        assert res["pruning"]["attention"]  # how each attention module was removed is reported


def test_attention_budget_from_the_cli_options(tiny_folder, tmp_path, monkeypatch):
    res = prune_job(_opts(tiny_folder, tmp_path / "b", method="structured", criterion="attention", reduce="macs=0.5",
                          epochs=1, finetune_epochs=0, attention_epochs=1, attention_sparsity=3e-2,
                          attention_budget=True))
    report = res["pruning"]["attention"]
    removed = {g["module"]: len(g["remove"]) for g in res["pruning"]["plan"]["groups"]}
    assert report["budget"] and sum(report["budget"].values()) == sum(removed.values())
    assert report["ratio_search"]["achieved"] == pytest.approx(0.5, abs=0.02)
    import prunekit.jobs.prune as pipeline

    monkeypatch.setattr(pipeline, "fit", lambda *a, **k: pytest.fail("trained before checking the options"))
    for bad in ({"attention_sparsity": 0.0}, {"scope": "global", "attention_sparsity": 3e-2}):
        with pytest.raises(ValueError, match="--attention-budget aims the gate penalty"):
            prune_job(_opts(tiny_folder, tmp_path / "bad", method="structured", criterion="attention",
                            attention_budget=True, **bad))
    assert not (tmp_path / "bad").exists()


def test_sparse_kernel_decisions_recorded_and_replayed_on_load(tiny_folder, tmp_path):
    from prunekit.sparse.kernels import _SparseWeight

    res = prune_job(_opts(tiny_folder, tmp_path / "k", method="unstructured", ratio=0.9, finetune_epochs=0,
                          sparse_kernels=True))
    dense = prunekit.load(res["checkpoint"])
    decisions = dense.prunekit_description["sparse_kernels"]
    assert set(decisions["layers"]) == {k.rsplit(".", 1)[0] for k in dense.prunekit_masks}
    assert all(d["kind"] in ("dense", "csr") and d["times_ms"]["dense"] > 0 for d in decisions["layers"].values())
    assert res["pruning"]["sparse_kernels"]["layers_timed"] == len(decisions["layers"])
    # whatever this CPU decided, force every layer sparse to exercise the replay path
    forced = {**decisions, "layers": {k: {**d, "kind": "csr"} for k, d in decisions["layers"].items()}}
    path = tmp_path / "forced.safetensors"
    ckpt.save(dense, path, sparse_kernels=forced)
    fast = prunekit.load(path, sparse_kernels=True)
    assert sum(isinstance(m, _SparseWeight) for m in fast.modules()) == len(forced["layers"])
    assert not any(isinstance(m, _SparseWeight) for m in prunekit.load(path).modules())  # default stays dense
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(fast(x), dense(x), atol=1e-5)


def test_sparse_kernels_refused_for_structured(tiny_folder, tmp_path):
    with pytest.raises(ValueError, match="--sparse-kernels is for unstructured pruning, not this structured one-shot"):
        prune_job(_opts(tiny_folder, tmp_path / "ks", method="structured", ratio=0.5, sparse_kernels=True))


def test_distill_fine_tunes_from_the_model_before_pruning(tiny_folder, tmp_path, monkeypatch):
    import prunekit.train.loop as loop

    calls = []
    real = loop.distillation_loss

    def counting(student, teacher, temperature):
        calls.append((tuple(student.shape), tuple(teacher.shape), temperature))
        return real(student, teacher, temperature)

    monkeypatch.setattr(loop, "distillation_loss", counting)
    res = prune_job(_opts(tiny_folder, tmp_path / "kd", method="structured", ratio=0.5, finetune_epochs=1,
                          distill=True))
    assert calls and all(s == t and s[1] == 3 and temp == 4.0 for s, t, temp in calls)
    n_training_batches = len(calls)
    calls.clear()
    prune_job(_opts(tiny_folder, tmp_path / "plain", method="structured", ratio=0.5, finetune_epochs=1))
    assert not calls and n_training_batches > 0 and res["after"]["params"] < res["before"]["params"]


def test_distill_refused_when_training_from_scratch(tiny_folder, tmp_path):
    with pytest.raises(ValueError, match="--distill learns from the model before pruning"):
        prune_job(_opts(tiny_folder, tmp_path / "kds", method="structured", schedule="soft", ratio=0.5,
                        distill=True))


# ---------------------------------------------------------------- a checkpoint keeps its split
def _eval_opts(folder, checkpoint, **kw):
    from prunekit.config import EvalOptions

    return EvalOptions(checkpoint=str(checkpoint), data=str(folder), progress=False, **kw)


def _untrained_checkpoint(folder, path, **split):
    """A random vgg_tiny saved with the data section of ``folder`` split by ``split`` (fast: no training)."""
    from prunekit.data import load_dataset
    from prunekit.models import create_model
    from prunekit.data import data_section

    ds = load_dataset(folder, image_size=16, **split)
    ckpt.save(create_model("vgg_tiny", len(ds.classes)), path, data=data_section(ds))
    return ds


def test_seed_1_on_a_seed_0_checkpoint_tests_on_the_same_images(tiny_folder, tmp_path):
    """The seed-1 repeat of docs/balance.md: --seed 1 must not re-split, or test overlaps the base's training."""
    from prunekit.config import TrainOptions
    from prunekit.data.splits import SPLITS
    from prunekit.jobs.common import checkpoint_with_data, load_data
    from prunekit.jobs.eval import eval_job
    from prunekit.jobs.train import train_job

    base = train_job(TrainOptions(model="vgg_tiny", data=str(tiny_folder), image_size=16, epochs=1, batch_size=8,
                                  val_frac=0.2, seed=0, out=tmp_path / "t", progress=False))
    seed0 = load_data(_eval_opts(tiny_folder, base["checkpoint"], val_frac=0.2), 0)
    fresh1 = load_data(_eval_opts(tiny_folder, base["checkpoint"], val_frac=0.2), 1)
    assert not torch.equal(seed0.splits["test"], fresh1.splits["test"])  # what --seed 1 re-split before the fix
    _, ds = checkpoint_with_data(_eval_opts(tiny_folder, base["checkpoint"], seed=1), "cpu")
    assert all(torch.equal(ds.splits[s], seed0.splits[s]) for s in SPLITS)  # val_frac 0.2 taken from the checkpoint
    ev = eval_job(_eval_opts(tiny_folder, base["checkpoint"], seed=1))
    assert (ev["accuracy"], ev["samples"]) == (base["test"]["accuracy"], base["test"]["samples"])
    res = prune_job(_opts(tiny_folder, tmp_path / "p1", model=base["checkpoint"], seed=1, method="structured",
                          ratio=0.5, finetune_epochs=1))
    assert res["before"]["accuracy"] == base["test"]["accuracy"]  # the unpruned model on the base's test split
    data = ckpt.load_checkpoint(res["checkpoint"]).description["data"]
    assert (data["split_seed"], data["test_frac"], data["val_frac"]) == (0, 0.2, 0.2)  # passed on to the pruned one


def test_the_split_round_trips_through_a_checkpoint(tiny_folder, tmp_path):
    from prunekit.jobs.common import checkpoint_split

    path = tmp_path / "m.safetensors"
    ds = _untrained_checkpoint(tiny_folder, path, seed=3, test_frac=0.3, val_frac=0.25)
    desc = ckpt.load_checkpoint(path).description
    assert {k: desc["data"][k] for k in ("split_seed", "test_frac", "val_frac")} == \
        {"split_seed": 3, "test_frac": 0.3, "val_frac": 0.25}
    assert checkpoint_split(_eval_opts(tiny_folder, path, seed=7), desc, path) == (3, (0.3, 0.25))
    assert checkpoint_split(_eval_opts(tiny_folder, path, test_frac=0.3), desc, path) == (3, (0.3, 0.25))
    assert ds.describe()["split_seed"] == 3


def test_an_explicit_other_fraction_is_refused_in_one_line(tiny_folder, tmp_path, capsys):
    from prunekit.jobs.eval import eval_job

    path = tmp_path / "m.safetensors"
    _untrained_checkpoint(tiny_folder, path, seed=0, test_frac=0.3, val_frac=0.2)
    with pytest.raises(ConfigError) as e:
        eval_job(_eval_opts(tiny_folder, path, test_frac=0.2))  # the schema default, but typed: still refused
    msg = str(e.value)
    assert "\n" not in msg and "--test-frac 0.3" in msg and "--test-frac 0.2" in msg and "drop --test-frac" in msg
    with pytest.raises(ConfigError, match="--val-frac 0.2, but --val-frac 0.5"):
        prune_job(_opts(tiny_folder, tmp_path / "p", model=str(path), val_frac=0.5, finetune_epochs=0))
    code = main(["eval", str(path), "--data", str(tiny_folder), "--test-frac", "0.25"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "drop --test-frac" in err


def test_a_checkpoint_without_a_recorded_split_still_evaluates(tiny_folder, tmp_path):
    from prunekit.jobs.common import checkpoint_with_data
    from prunekit.jobs.eval import eval_job

    path = tmp_path / "old.safetensors"
    _untrained_checkpoint(tiny_folder, path, seed=0, val_frac=0.2)
    _, desc = ckpt.read(path)
    for key in ("split_seed", "test_frac", "val_frac"):
        del desc["data"][key]
    old = tmp_path / "old2.safetensors"
    ckpt.save(ckpt.load(path), old, data=desc["data"])  # as written before checkpoints recorded their split
    assert "split_seed" not in ckpt.load_checkpoint(old).description["data"]
    _, ds = checkpoint_with_data(_eval_opts(tiny_folder, old, seed=1, test_frac=0.3), "cpu")
    assert (ds.split_seed, ds.test_frac) == (1, 0.3)  # split from the options, as before
    ev = eval_job(_eval_opts(tiny_folder, old, seed=1))
    loaded, seed1 = checkpoint_with_data(_eval_opts(tiny_folder, old, seed=1), "cpu")
    assert ev["samples"] == 6 and ev["accuracy"] == evaluate(loaded.model, seed1, "test")["accuracy"]


def test_prune_of_a_checkpoint_uses_its_input_size(tiny_folder, tmp_path):
    """Like eval: a 16 px checkpoint pruned without --image-size is tested on 16 px images, not the default 64."""
    from prunekit.jobs.eval import eval_job

    path = tmp_path / "m.safetensors"
    _untrained_checkpoint(tiny_folder, path, seed=0, val_frac=0.2)
    opts = _opts(tiny_folder, tmp_path / "p", model=str(path), method="structured", ratio=0.5, finetune_epochs=0)
    opts = opts.model_copy(update={"image_size": 64})
    res = prune_job(opts)
    assert res["before"]["accuracy"] == eval_job(_eval_opts(tiny_folder, path))["accuracy"]
    assert ckpt.load_checkpoint(res["checkpoint"]).description["data"]["input_size"] == 16


@pytest.mark.parametrize("method,criterion,match", [
    ("structured", "nosuch", "unknown criterion 'nosuch'; choose one of: .*fpgm"),
    ("unstructured", "fpgm", "criterion 'fpgm' is not an unstructured criterion; use one of l1, magnitude, lamp"),
    ("structured", "attention_gm", "use --criterion attention --attention-score gate_gm"),
])
def test_a_wrong_criterion_is_refused_before_training(tiny_folder, tmp_path, monkeypatch, method, criterion, match):
    """Not after --epochs of training from scratch: the criterion is checked first."""
    import prunekit.jobs.prune as pipeline

    monkeypatch.setattr(pipeline, "fit", lambda *a, **k: pytest.fail("trained before checking the criterion"))
    with pytest.raises(ValueError, match=match):  # PruneOptions' validators: before any job starts
        prune_job(_opts(tiny_folder, tmp_path / "c", method=method, criterion=criterion))
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("flag, match", [({"reduce": "macs=0.5"}, "shapes structured pruning .* --ratio, or add --structured"),
                                         ({"round_to": "8"}, "--round-to 8 is for structured pruning.*add --structured")])
def test_structured_only_flags_are_refused_with_unstructured(tiny_folder, tmp_path, flag, match):
    """They used to be ignored silently (MACs do not fall with masks): say so instead, before training."""
    with pytest.raises(ValueError, match=match):
        prune_job(_opts(tiny_folder, tmp_path / "u", method="unstructured", **flag))
    assert not (tmp_path / "u").exists()


def test_accuracy_right_after_the_cut_is_recorded_and_printed(tiny_folder, tmp_path):
    from prunekit.cli import render

    whole = prune_job(_opts(tiny_folder, tmp_path / "r0", method="structured", ratio=0.0, finetune_epochs=1))
    assert whole["pruning"]["test_accuracy_after_cut"] == whole["before"]["accuracy"]  # nothing cut, nothing lost
    cut = prune_job(_opts(tiny_folder, tmp_path / "r9", method="structured", ratio=0.9, finetune_epochs=1))
    assert 0.0 <= cut["pruning"]["test_accuracy_after_cut"] <= 1.0
    assert "right after the cut, before fine-tuning" in render.prune(cut)
    none = prune_job(_opts(tiny_folder, tmp_path / "f0", method="structured", ratio=0.5, finetune_epochs=0))
    assert "test_accuracy_after_cut" not in none["pruning"]  # without fine-tuning it is the final accuracy


def test_deploy_form_times_both_models_deployed(tiny_folder, tmp_path, monkeypatch, capsys):
    from prunekit.cli import render
    from prunekit.jobs import prune as job

    forms = []
    real = job.prepare

    def spy(model, form, example):
        forms.append((form, tuple(example.shape)))
        return real(model, form, example)

    monkeypatch.setattr(job, "prepare", spy)
    res = prune_job(_opts(tiny_folder, tmp_path / "d", method="structured", ratio=0.5, finetune_epochs=0,
                          latency=True, deploy="fold_bn"))
    assert forms == [("fold_bn", (1, 3, 16, 16))] * 2  # the dense and the pruned model, alike
    assert res["pruning"]["latency_form"] == "fold_bn"
    assert res["before"]["latency_ms_b1"] > 0 and res["after"]["latency_ms_b32"] > 0
    assert "fold_bn deploy form" in render.prune(res)
    assert main(["prune", "--data", str(tiny_folder), "--structured", "--deploy", "compile", "--no-latency",
                 "--out", str(tmp_path / "x")]) == 2
    assert "drop --no-latency" in capsys.readouterr().err
