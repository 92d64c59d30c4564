"""Pruned models reload through the CLI: prune -> save -> prunekit.load -> the same outputs, at the input size the
architecture takes (issue #23). The full model list runs in benchmarks/structured_coverage.py."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from prunekit.apply.structured_state import restore_structure, structure_of
from prunekit.errors import ModelError
from prunekit.models import create_model
from prunekit.models.input_size import Declared, candidates, choose_input_size
from prunekit.models.state_load import load_tensors
from prunekit.storage.checkpoint import load, save

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from round_trip import cli_round_trip, run_cli  # noqa: E402


class ConvWrap(nn.Module):
    """Like timm's ConvNormAct: its widths are read-only properties of the conv inside."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    @property
    def in_channels(self) -> int:
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x):
        return self.conv(x)


def _pruned_wrap() -> nn.Module:
    model = nn.Sequential(ConvWrap(3, 8), ConvWrap(8, 4))
    with torch.no_grad():
        model[0].conv.weight = nn.Parameter(model[0].conv.weight[:5].clone())
        model[0].conv.bias = nn.Parameter(model[0].conv.bias[:5].clone())
        model[1].conv.weight = nn.Parameter(model[1].conv.weight[:, :5].clone())
        model[0].conv.out_channels = model[1].conv.in_channels = 5
    return model


def test_read_only_widths_are_not_recorded_and_follow_their_layers():
    pruned = _pruned_wrap()
    structure = structure_of(pruned)
    assert "in_channels" not in structure["attrs"].get("0", {})
    assert structure["attrs"]["0.conv"]["out_channels"] == 5
    fresh = restore_structure(nn.Sequential(ConvWrap(3, 8), ConvWrap(8, 4)), structure)
    load_tensors(fresh, pruned.state_dict())
    assert fresh[0].out_channels == 5 and fresh[1].in_channels == 5
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(fresh(x), pruned(x))


def test_files_that_recorded_read_only_widths_still_restore():
    structure = structure_of(_pruned_wrap())
    structure["attrs"]["0"] = {"in_channels": 3, "out_channels": 5}  # what older prunekit wrote
    fresh = restore_structure(nn.Sequential(ConvWrap(3, 8), ConvWrap(8, 4)), structure)
    assert fresh[0].out_channels == 5


class Versioned(nn.Module):
    """Refuses state without its version, as torchvision's MNASNet does."""

    _version = 2

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        if local_metadata.get("version") not in (1, 2):
            raise ValueError(f"version should be set to 1 or 2 instead of {local_metadata.get('version')}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


def test_plain_tensors_load_into_a_versioned_module():
    src, dst = Versioned(), Versioned()
    plain = {k: v.clone() for k, v in src.state_dict().items()}  # what a safetensors file gives back
    with pytest.raises(ValueError, match="instead of None"):
        dst.load_state_dict(plain)
    load_tensors(dst, plain)
    torch.testing.assert_close(dst.lin.weight, src.lin.weight)


def test_a_model_whose_constructor_cannot_run_on_meta_saves_and_loads(tmp_path):
    """torchvision RegNet computes its widths with tensors (``.tolist()``); save's shape check built it on the meta
    device and failed with "Cannot copy out of meta tensor"."""
    model = create_model("torchvision/regnet_x_400mf", 3).eval()
    save(model, tmp_path / "m.safetensors")
    back = load(tmp_path / "m.safetensors")
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(back(x), model(x), rtol=0, atol=0)
    assert all(p.device.type == "cpu" for p in back.parameters())


@pytest.mark.parametrize("asked, declared, want", [
    (None, Declared(224, 1, True), [224]),          # timm fixed_input_size: the declared size only
    (None, Declared(299, 75, False), [299]),        # torchvision inception_v3: min_size above the data's
    (None, Declared(224, 1, False), [64, 224]),     # a CNN: the data's size first
    (None, Declared(), [64]),                       # nothing declared (built-in models)
    (96, Declared(224, 1, True), [96]),             # --image-size: only that
])
def test_size_candidates(asked, declared, want):
    assert candidates(asked, 64, declared) == want


def test_fixed_size_model_gets_its_declared_size_and_refuses_another():
    model = create_model("timm/test_vit3", 3)
    assert choose_input_size(model, "timm/test_vit3", None, 64) == 160
    with pytest.raises(ModelError, match=r"^timm/test_vit3 cannot take 64 px inputs \(.*\); give --image-size 160 "
                                         r"\(the size it declares\)$"):
        choose_input_size(model, "timm/test_vit3", 64, 64)


@pytest.mark.parametrize("spec, size", [
    ("timm/test_byobnet", 64),     # ConvNormAct blocks: widths are read-only properties
    ("torchvision/mnasnet0_5", 64),  # a versioned _load_from_state_dict
    ("timm/test_vit3", 160),        # fixed input size: the CLI takes the declared one
])
def test_cli_prune_reloads_with_equal_outputs(spec, size, tmp_path):
    row = cli_round_trip(spec, tmp_path, extra=["--test-frac", "0.05", "--val-frac", "0.05"])
    assert row.get("error") is None and row["ok"], row
    assert row["input_size"] == size
    assert row["max_abs_diff"] <= 1e-5
    assert row["params_after"] < row["params_before"]


def test_cli_size_the_model_cannot_take_is_one_line_exit_2(tmp_path):
    rc, out, err = run_cli(["prune", "--model", "timm/test_vit3", "--image-size", "64", "--structured", "--epochs",
                            "0", "--out", str(tmp_path), "--no-progress"])
    assert rc == 2 and out == ""
    assert err == ("prunekit prune: error: timm/test_vit3 cannot take 64 px inputs (AssertionError: Input height (64) "
                   "doesn't match model (160).); give --image-size 160 (the size it declares)\n")
    assert not (tmp_path / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["timm/regnety_002", "timm/repvgg_a0", "timm/rexnet_100", "torchvision/mnasnet1_0",
                                  "torchvision/regnet_x_400mf"])
def test_issue_models_reload_with_equal_outputs(spec, tmp_path):
    """The models the issue named (ConvNormAct widths, MNASNet versions, the meta-device failure), at 32 px to keep
    CI modest."""
    row = cli_round_trip(spec, tmp_path, extra=["--image-size", "32", "--test-frac", "0.05", "--val-frac", "0.05"])
    assert row.get("error") is None and row["ok"], row
    assert row["input_size"] == 32 and row["max_abs_diff"] <= 1e-5


def test_choosing_the_input_size_leaves_the_seeded_stream_alone():
    """The probe model is built inside a forked RNG, so a seeded run builds the same weights as before it existed."""
    from prunekit.config import PruneOptions
    from prunekit.models.input_size import fit_input_size

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    fit_input_size(PruneOptions(model="vgg_tiny", image_size=32, epochs=0))
    assert torch.equal(torch.rand(3), expected)
