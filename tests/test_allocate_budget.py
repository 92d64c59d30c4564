"""The balancing act: per-layer sensitivity scan and the accuracy-budget search (prunekit.allocate)."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import prunekit
from prunekit.apply.oneshot import prune_structured
from prunekit.allocate import budget_search, ladder, layer_sensitivity
from prunekit.allocate.sensitivity import Sensitivity
from prunekit.errors import ConfigError
from prunekit.measure import count_macs

X = torch.randn(4, 3, 16, 16)


class Net(nn.Module):
    """Three convs; ``b``'s first half of filters is exactly zero, so removing half of ``b`` changes nothing."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)
        with torch.no_grad():
            self.b.weight[:4].zero_()
            self.b.bias[:4].zero_()

    def forward(self, x):
        x = torch.relu(self.a(x))
        x = torch.relu(self.b(x))
        x = torch.relu(self.c(x))
        return self.head(x.mean((2, 3)))


def fidelity(reference: nn.Module):
    """Score = minus the mean squared change of the logits on X: 0 for a model computing the same function."""
    with torch.no_grad():
        want = reference(X)

    def score(model: nn.Module) -> float:
        with torch.no_grad():
            return -float((model(X) - want).pow(2).mean())
    return score


def test_scan_finds_the_layer_whose_pruned_channels_were_zero_and_leaves_the_model_alone():
    model = Net().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sens = layer_sensitivity(model, X[:1], fidelity(model), ratios=(0.25, 0.5, 0.75))
    assert sens.layers == ["a", "b", "c"] and sens.baseline == 0.0
    assert sens.drop("b", 0.25) == pytest.approx(0, abs=1e-12) and sens.drop("b", 0.5) == pytest.approx(0, abs=1e-12)
    assert sens.drop("b", 0.75) > 1e-9  # beyond the zero filters it hurts
    assert sens.drop("a", 0.25) > 1e-9 and sens.drop("c", 0.25) > 1e-9
    assert all(0 < s < 1 for row in sens.macs_saved.values() for s in row)
    assert sens.macs_saved["b"][0] < sens.macs_saved["b"][1] < sens.macs_saved["b"][2]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # cells pruned copies
    again = Sensitivity.from_json(sens.to_json())
    assert again == sens and "drop@0.5" in sens.table()


def test_a_stopped_scan_resumes_with_only_the_missing_cells():
    model = Net().eval()
    score = fidelity(model)
    full = layer_sensitivity(model, X[:1], score, ratios=(0.25, 0.5))
    saved = []

    def stop_after_three(part):
        saved.append(Sensitivity.from_json(part.to_json()))  # what a run writes to disk after each cell
        if len(saved) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        layer_sensitivity(model, X[:1], score, ratios=(0.25, 0.5), on_cell=stop_after_three)
    calls = []
    counted = lambda m: calls.append(1) or score(m)  # noqa: E731
    resumed = layer_sensitivity(model, X[:1], counted, ratios=(0.25, 0.5), resume=saved[-1])
    assert len(calls) == 6 - 3 and resumed == full  # no baseline rescored, the three missing cells only
    other = layer_sensitivity(model, X[:1], counted, ratios=(0.5,), resume=saved[-1])  # other settings: fresh
    assert len(calls) == 3 + 1 + 3 and other.ratios == [0.5]


def test_ladder_puts_cheapest_first_and_never_a_ratio_before_a_costlier_smaller_one():
    sens = Sensitivity(layers=["a", "b"], ratios=[0.25, 0.5], baseline=1.0,
                       scores={"a": [0.9, 0.95], "b": [1.0, 0.97]}, macs_saved={"a": [0.1, 0.2], "b": [0.1, 0.2]})
    order = [(name, r) for _, name, r in ladder(sens)]
    # a@0.5 costs what a@0.25 costs (the larger drop below it) and saves more, so it comes first of the two
    assert order == [("b", 0.25), ("b", 0.5), ("a", 0.5), ("a", 0.25)]
    costs = [c for c, _, _ in ladder(sens)]
    assert costs == sorted(costs) and costs[2] == pytest.approx(0.1)


def test_budget_search_keeps_within_the_budget_and_its_plan_replays():
    model = Net().eval()
    score = fidelity(model)
    sens = layer_sensitivity(model, X[:1], score, ratios=(0.25, 0.5, 0.75))
    exact = budget_search(model, X[:1], sens, score, max_drop=0.0)
    assert exact.overrides == {"b": 0.5} and exact.drop == pytest.approx(0, abs=1e-12)
    assert exact.macs_reduction > 0
    loose = budget_search(model, X[:1], sens, score, max_drop=1e9)
    assert loose.overrides == {"a": 0.75, "b": 0.75, "c": 0.75} and loose.macs_reduction > exact.macs_reduction
    middle_budget = sens.drop("c", 0.25) * 1.01
    middle = budget_search(model, X[:1], sens, score, max_drop=middle_budget)
    assert middle.drop <= middle_budget and exact.macs_reduction <= middle.macs_reduction
    assert len(middle.trials) <= 6  # bisection over 9 cells: everything, then at most log2(10) more
    twin, _ = prune_structured(copy.deepcopy(model), X[:1], **middle.plan_kwargs())
    assert 1 - count_macs(twin, (3, 16, 16))[0] / count_macs(model, (3, 16, 16))[0] == \
        pytest.approx(middle.macs_reduction)
    assert score(twin) == pytest.approx(sens.baseline - middle.drop)


def test_a_recovery_step_runs_on_every_candidate_and_on_the_baseline():
    model = Net().eval()
    score = fidelity(model)
    sens = layer_sensitivity(model, X[:1], score, ratios=(0.5,))
    recovered = []

    def shift_head(m):  # a stand-in for fine-tuning that visibly changes the function
        recovered.append(m)
        with torch.no_grad():
            m.head.bias += 1.0
        return m

    choice = budget_search(model, X[:1], sens, score, max_drop=1e9, finetune=shift_head)
    assert len(recovered) == 1 + len(choice.trials) and all(m is not model for m in recovered)
    assert choice.baseline == pytest.approx(-1.0)  # the unpruned copy, recovered the same way
    assert choice.drop == pytest.approx(choice.baseline - choice.score)


def test_bad_scan_input_is_a_config_error():
    model = Net().eval()
    with pytest.raises(ConfigError, match="fractions in"):
        layer_sensitivity(model, X[:1], fidelity(model), ratios=(0.5, 1.0))
    with pytest.raises(ConfigError, match="no prunable channels"):
        layer_sensitivity(model, X[:1], fidelity(model), layers=["head"])


def test_recalibrated_baseline_is_scored_like_the_cells():
    from prunekit.train.bn import recalibrate_bn

    torch.manual_seed(0)
    model = prunekit.create_model("vgg_tiny", 3).eval()
    x = torch.randn(8, 3, 32, 32)
    seen = []

    def recal(m):
        seen.append(m)
        recalibrate_bn(m, [x])
        m.eval()

    sens = layer_sensitivity(model, x[:1], fidelity(model), ratios=(0.5,), recalibrate=recal, layers=["features.3"])
    assert len(seen) == 2 and all(m is not model for m in seen)  # the baseline's copy and the one cell
    assert sens.baseline < 0  # fresh statistics change the function: the baseline is scored the same way


def test_cli_sensitivity_and_prune_max_drop(tiny_folder, tmp_path, capsys):
    from prunekit.cli.main import main

    model = prunekit.create_model("vgg_tiny", 3)
    path = tmp_path / "m.safetensors"
    prunekit.save(model, path, data={"input_size": 16})
    common = ["--data", str(tiny_folder), "--image-size", "16", "--sensitivity-ratios", "0.5", "--recal-batches",
              "1", "--no-progress"]
    code = main(["sensitivity", str(path), *common, "--max-drop", "100", "--budget-epochs", "1", "--out",
                 str(tmp_path / "s"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert len(result["sensitivity"]["layers"]) >= 4 and (tmp_path / "s" / "sensitivity.png").is_file()
    assert result["budget"]["macs_reduction"] > 0.3  # a 100-point budget takes every layer at 0.5
    assert result["budget"]["recovery_epochs"] == 1
    code = main(["prune", "--model", str(path), "--structured", *common, "--max-drop", "100", "--finetune-epochs",
                 "0", "--no-latency", "--out", str(tmp_path / "p"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    pruned = json.loads(out)["pruning"]
    assert pruned["budget"]["overrides"] == result["budget"]["overrides"]
    scan = str(tmp_path / "s" / "sensitivity.json")
    code = main(["prune", "--model", str(path), "--structured", *common, "--max-drop", "100", "--sensitivity-file",
                 scan, "--finetune-epochs", "0", "--no-latency", "--out", str(tmp_path / "p2"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["pruning"]["budget"]["overrides"] == result["budget"]["overrides"]
    code = main(["prune", "--model", str(path), "--structured", *common, "--max-drop", "1", "--sensitivity-file",
                 scan, "--criterion", "fpgm"])
    err = capsys.readouterr().err
    assert code == 2 and "--criterion l1" in err and len(err.strip().splitlines()) == 1
    code = main(["prune", "--model", str(path), "--structured", "--max-drop", "1", "--reduce", "macs=0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "--max-drop" in err and len(err.strip().splitlines()) == 1
