"""Options per mode: a flag of another mode is refused (never dropped), one word per idea (old names refused with the
new one), --dry-run / plan_preview show what prune would do and write nothing, no training unless asked, and a
--help that does not import torch."""
import json
import subprocess
import sys

import pytest
import torch

import prunekit
from prunekit.cli.commands import COMMANDS
from prunekit.cli.main import main
from prunekit.cli.options import recipe_of
from prunekit.config import MODES, CompareOptions, PruneOptions
from prunekit.measure import count_params
from prunekit.schedules.config import ScheduleConfig


def _err(argv, capsys, tmp_path, monkeypatch):
    """Run the CLI in ``tmp_path``; returns (exit code, stderr lines); nothing may have been trained or written."""
    import prunekit.jobs.prune as pipeline

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline, "fit", lambda *a, **k: pytest.fail("trained before refusing"))
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert not (tmp_path / "runs").exists()
    return code, err


@pytest.mark.parametrize("argv, needle", [
    (["--nm", "2:4", "--structured"], "--nm 2:4 is for unstructured pruning, not this structured one-shot run"),
    (["--structured", "--ratio", "0.3", "--reduce", "macs=2x"], "give --ratio or --reduce, not both"),
    (["--nm", "2:4", "--ratio", "0.3"], "give --ratio or --nm, not both"),
    (["--structured", "--max-drop", "1", "--ratio", "0.3"], "give --ratio or --max-drop, not both"),
    (["--start-epoch", "2"], "--start-epoch 2 is for scheduled pruning"),
    (["--structured", "--schedule", "soft", "--allocation", "depth"], "--allocation depth is for structured one-shot"),
    (["--attention-epochs", "5"], "--attention-epochs 5 is for --criterion attention"),
    (["--structured", "--closest"], "--closest says what to do when a --reduce target cannot be reached"),
    # the speed guard of a uniform cut on the CPU reads the report's latencies: these would be ignored
    (["--structured", "--latency-batch", "64"], "--latency-batch 64 is for latency timing"),
    (["--structured", "--latency-runtime", "ort"], "--latency-runtime ort is for latency timing"),
    (["--scope", "layer"], "--scope layer was renamed --scope uniform"),
    (["--bn-recal-batches", "2"], "--bn-recal-batches was renamed --recal-batches"),
    (["--input-size", "32"], "--input-size was renamed --image-size"),
])
def test_conflicting_or_renamed_prune_flags_are_one_line_and_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    code, err = _err(["prune", "--model", "vgg_tiny", "--epochs", "1", *argv], capsys, tmp_path, monkeypatch)
    assert code == 2 and len(err) == 1 and needle in err[0], err


def test_compare_refuses_the_old_recal_name_from_a_flag_and_from_a_recipe(capsys, tmp_path, monkeypatch):
    code, err = _err(["compare", "--bn-recal-batches", "2"], capsys, tmp_path, monkeypatch)
    assert code == 2 and err == ["prunekit compare: error: --bn-recal-batches was renamed --recal-batches"]
    recipe = tmp_path / "r.yaml"
    recipe.write_text("bn_recal_batches: 2\n")
    code, err = _err(["compare", "--config", str(recipe)], capsys, tmp_path, monkeypatch)
    assert code == 2 and "was renamed --recal-batches" in err[0]
    assert CompareOptions(recal_batches=2).recal_batches == 2


@pytest.mark.parametrize("group, active, mode, fix", MODES, ids=[m[0].__name__ for m in MODES])
def test_every_mode_group_refuses_its_flags_outside_its_mode(group, active, mode, fix):
    """For each options group: its first flag, set to a value other than its default in a run that is not in the
    group's mode, is refused naming the flag and the mode; in a run of that mode it is accepted."""
    name = next(n for n in group.__dict__["__annotations__"] if n in group.model_fields and n != "schedule")
    value = {"nm": "2:4", "round_to": "8", "allocation": "depth", "depth": 0.2, "latency_runtime": "ort",
             "attention_epochs": 5, "sensitivity_ratios": [0.5], "start_epoch": 2}[name]
    outside = PruneOptions.model_construct(method="unstructured", schedule="oneshot", nm=None, criterion="l1",
                                           allocation="uniform", reduce=None, max_drop=None)
    if active(outside):
        outside = PruneOptions.model_construct(method="structured", schedule="oneshot", nm=None, criterion="l1",
                                               allocation="uniform", reduce=None, max_drop=None)
    assert not active(outside)
    base = {"model": "vgg_tiny", "epochs": 0, "method": outside.method}
    with pytest.raises(ValueError, match=f"--{name.replace('_', '-')} .*is for {mode}"):
        PruneOptions(**base, **{name: value})
    inside = {"nm": {"method": "unstructured"}, "round_to": {"method": "structured"}, "allocation": {"method": "structured", "reduce": "macs=2x"},
              "depth": {"method": "structured"},
              "latency_runtime": {"method": "structured", "reduce": "macs=2x", "allocation": "latency"},
              "attention_epochs": {"method": "structured", "criterion": "attention"},
              "sensitivity_ratios": {"method": "structured", "max_drop": 1.0, "ratio": None},
              "start_epoch": {"schedule": "gradual"}}[name]
    assert getattr(PruneOptions(**{**base, **inside, name: value}), name) == value


def test_a_recipe_written_by_a_run_validates_again():
    """Every field of a stored recipe is set (mostly to its default): the mode rules look at values, not at which
    keys are present, so a recipe replays."""
    opts = PruneOptions(model="vgg_tiny", epochs=2, method="structured", reduce="macs=2x", round_to="8",
                        ignore=["classifier"])
    assert PruneOptions(**recipe_of(opts)) == opts


def test_a_model_name_without_weights_or_epochs_is_not_trained(capsys, tmp_path, monkeypatch):
    code, err = _err(["prune", "--model", "torchvision/resnet18"], capsys, tmp_path, monkeypatch)
    assert code == 2 and len(err) == 1 and "--epochs N" in err[0] and "--weights" in err[0]
    with pytest.raises(ValueError, match="--epochs trains a model name from scratch"):
        PruneOptions(model="vgg_tiny", weights="w.safetensors", epochs=3)


def test_schedule_config_speaks_uniform_and_refuses_layer():
    sched = ScheduleConfig(schedule="iterative", method="structured", ratio=0.5, scope="uniform",
                           ignore=["features.0"]).build()
    assert sched.scope == "layer" and sched.skip == ["features.0"]  # the schedules' own word, and --ignore reaches them
    with pytest.raises(ValueError, match="scope 'layer' was renamed 'uniform'"):
        ScheduleConfig(scope="layer")


def test_dry_run_shows_the_plan_prune_makes_and_writes_nothing(tiny_folder, tmp_path, capsys, monkeypatch):
    common = ["prune", "--model", "vgg_tiny", "--data", str(tiny_folder), "--image-size", "16", "--epochs", "0",
              "--finetune-epochs", "2", "--batch-size", "8", "--structured", "--reduce", "params=0.5", "--ignore",
              "features.0", "--no-progress", "--no-latency", "--json"]
    monkeypatch.chdir(tmp_path)
    assert main([*common, "--dry-run", "--out", str(tmp_path / "dry")]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert not (tmp_path / "dry").exists() and not (tmp_path / "runs").exists()
    widths = {layer["layer"]: (layer["before"], layer["after"]) for layer in dry["plan"]["layers"]}
    assert widths["features.0"][0] == widths["features.0"][1]  # --ignore kept it whole
    (phase,) = dry["training"]["phases"]
    assert phase["epochs"] == 2 and phase["seconds"] > 0 and dry["training"]["total_seconds"] == phase["seconds"]
    assert main([*common, "--finetune-epochs", "0", "--out", str(tmp_path / "real")]) == 0
    real = json.loads(capsys.readouterr().out)
    model = prunekit.load(real["checkpoint"])
    assert dry["plan"]["params"]["after"] == count_params(model) == real["after"]["params"]
    assert dry["plan"]["macs"]["after"] == real["after"]["macs"]
    assert {n: m.weight.shape[0] for n, m in model.named_modules() if n in widths} == \
        {n: after for n, (_, after) in widths.items()}


def test_plan_preview_is_what_prune_does_and_leaves_the_model_alone():
    model = prunekit.create_model("resnet_tiny", 3)
    x = torch.randn(1, 3, 16, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    preview = prunekit.plan_preview(model, x, reduce="macs=2x", round_to=4)
    small = prunekit.prune(model, x, reduce="macs=2x", round_to=4)
    assert preview["params"] == {"before": count_params(model), "after": count_params(small)}
    assert preview["plan"].to_dict() == small.prunekit_plan.to_dict()
    after = {n: m.weight.shape[0] for n, m in small.named_modules() if getattr(m, "weight", None) is not None
             and m.weight.dim() >= 2}
    assert {layer["layer"]: layer["after"] for layer in preview["layers"]} == after
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_an_unreachable_target_is_refused_in_python_unless_closest():
    model, x = prunekit.create_model("vgg_tiny", 3), torch.randn(1, 3, 16, 16)
    with pytest.raises(prunekit.errors.ConfigError, match="1000x smaller cannot be reached"):
        prunekit.plan_preview(model, x, reduce="macs=1000x")
    with pytest.raises(prunekit.errors.ConfigError, match="give ratio or reduce"):
        prunekit.prune(model, x, ratio=0.3, reduce="macs=2x")
    small = prunekit.prune(model, x, reduce="macs=1000x", closest=True)
    assert count_params(small) < count_params(model)


def test_top_level_help_imports_neither_torch_nor_the_options():
    code = ("import sys\nfrom prunekit.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'pydantic', 'prunekit.config') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]" and "prune" in out


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_command_help_is_stored_as_the_options_render_it_and_prints_without_torch(command, monkeypatch):
    """`prunekit <command> --help` prints the text scripts/gen_help.py stored, so it must equal what the options
    models render now (else: run python scripts/gen_help.py), and it must not import torch (2.4 s)."""
    from prunekit.cli.main import render_help, stored_help

    monkeypatch.setenv("COLUMNS", "80")  # render_help sets its own width; this restores the environment after
    assert stored_help()[command] == render_help(command), "stale help text: run python scripts/gen_help.py"
    code = (f"import sys\nfrom prunekit.cli.main import main\ntry:\n    main([{command!r}, '--help'])\n"
            "except SystemExit as e:\n    assert e.code == 0\n"
            "print(sorted(m for m in ('torch', 'pydantic', 'prunekit.config') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"usage: prunekit {command}") and out.strip().splitlines()[-1] == "[]"


def test_prune_help_gives_each_flag_one_default(capsys):
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    out = capsys.readouterr().out.split("\noptions:\n", 1)[1]
    entries, current = [], ""
    for line in out.splitlines():
        if line.startswith("  -"):
            entries.append(current)
            current = line
        elif line.startswith("   "):
            current += " " + line.strip()
    entries.append(current)
    for entry in filter(None, entries):
        assert entry.count("default") <= 1, entry


def test_a_schedule_from_the_cli_gets_round_to_and_calib_batches(tiny_folder, tmp_path, capsys, monkeypatch):
    """--round-to and --calib-batches reach --schedule (they were dropped there: widths off the multiple, 4 batches)."""
    import prunekit.schedules.base as schedule_base

    drawn = []
    calibration = schedule_base.calibration

    def spy(state, n):
        drawn.append(n)
        return calibration(state, n)

    monkeypatch.setattr(schedule_base, "calibration", spy)
    monkeypatch.chdir(tmp_path)
    assert main(["prune", "--model", "vgg_tiny", "--data", str(tiny_folder), "--image-size", "16", "--epochs", "2",
                 "--batch-size", "4", "--structured", "--schedule", "iterative", "--ratio", "0.3", "--round-to", "8",
                 "--criterion", "mean_activation", "--calib-batches", "3", "--no-progress", "--no-latency",
                 "--finetune-epochs", "0", "--json", "--out", str(tmp_path / "s")]) == 0
    model = prunekit.load(json.loads(capsys.readouterr().out)["checkpoint"])
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths and all(w % 8 == 0 for w in widths), widths
    assert drawn and set(drawn) == {3}, drawn
