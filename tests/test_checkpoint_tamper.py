"""A checkpoint is untrusted input: edited descriptions and tensors are refused with CheckpointError, before anything
the description asks for is allocated (prunekit.storage.validate)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import prunekit
from prunekit.apply.structured import apply_plan
from prunekit.cli.main import main
from prunekit.errors import CheckpointError
from prunekit.plan import make_plan
from prunekit.storage import checkpoint as ckpt

FUZZ_EXAMPLES = 150
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _reset_peak() -> int | None:
    """Reset the peak resident set size (Linux: '5' to /proc/self/clear_refs) and return the current one in KiB,
    so the peak read afterwards belongs to the code in between, not to whatever this worker ran before; None where
    the peak cannot be reset."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return None
    return _status_kib("VmRSS")


def _status_kib(field: str) -> int:
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1])


def test_peak_memory_of_one_load_is_measurable_here():
    """The fuzz test below bounds each load's own peak; say so when this platform cannot measure it."""
    if _reset_peak() is None:
        pytest.skip("cannot reset the peak RSS (/proc/self/clear_refs): the fuzz test's memory bound is not checked")
    rss = _reset_peak()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    del block
    assert (_status_kib("VmHWM") - rss) / 1024 > 60


def _pruned_checkpoint(path: Path) -> Path:
    """A structured-pruned resnet_tiny with a data section and one mask: every description part load() reads."""
    torch.manual_seed(0)
    model = prunekit.create_model("resnet_tiny", 3, widths=[8, 16], blocks=[1, 1]).eval()
    apply_plan(model, make_plan(model, torch.randn(1, 3, 16, 16), ratio=0.5, criterion="l1"))
    mask = {"@mask/fc.weight": torch.ones_like(model.fc.weight, dtype=torch.bool)}
    data = {"classes": ["a", "b", "c"], "mean": [0.5] * 3, "std": [0.25] * 3, "input_size": 16, "split_seed": 0,
            "test_frac": 0.2, "val_frac": 0.1, "source": "scenes"}
    return prunekit.save(model, path, extras=mask, data=data, metrics={"test_accuracy": 0.5})


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any], Path]:
    folder = tmp_path_factory.mktemp("tamper")
    tensors, desc = ckpt.read(_pruned_checkpoint(folder / "good.safetensors"))
    assert desc["structure"] is not None  # the record the meta check replays
    return tensors, desc, folder


def _write(folder: Path, tensors: Dict[str, torch.Tensor], desc: Any, name: str = "bad.safetensors") -> Path:
    path = folder / name
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"prunekit": json.dumps(desc)})
    return path


def _edited(desc: Dict[str, Any], path: List[Any], value: Any) -> Dict[str, Any]:
    new = json.loads(json.dumps(desc))
    node = new
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return new


def test_the_unedited_checkpoint_loads(original):
    tensors, desc, folder = original
    model = prunekit.load(_write(folder, tensors, desc, "same.safetensors"))
    assert model.fc.weight.shape == tensors["fc.weight"].shape


@pytest.mark.parametrize("path, value, needle", [
    (["arch", "num_classes"], 10**10, "classes"),
    (["arch", "num_classes"], 1000, "1000 classes"),  # plausible count, but 3 class names and classifier rows
    (["arch", "num_classes"], "3", "classes"),
    (["arch", "kwargs", "pretrained"], True, "pretrained"),
    (["arch", "kwargs", "widths"], [4096, 4096], "elements"),  # the structure record fits the file, but the
    (["arch", "kwargs", "blocks"], [64, 64], "does not fit"),  # unpruned model would be 620M elements
    (["arch", "kwargs", "convs_per_stage"], 2, "convs_per_stage"),  # a kwarg resnet_tiny does not take
    (["structure", "params", "fc.weight"], [10**5, 10**5], "fc.weight"),
    (["structure", "params", "fc.weight"], "big", "structure"),
    (["structure", "identity"], ["no.such.block"], "no.such.block"),
    (["data", "input_size"], 10**6, "input_size"),
    (["data", "classes"], ["a"], "class names"),
    (["arch"], [], "not a prunekit checkpoint"),
])
def test_edited_description_is_one_checkpoint_error(original, path, value, needle):
    tensors, desc, folder = original
    with pytest.raises(CheckpointError, match=needle):
        prunekit.load(_write(folder, tensors, _edited(desc, path, value)))


@pytest.mark.parametrize("command", ["info", "eval", "export", "sensitivity"])  # size reads tensors only
def test_the_cli_answers_a_tampered_checkpoint_in_one_line(original, command, capsys):
    tensors, desc, folder = original
    path = _write(folder, tensors, _edited(desc, ["arch", "num_classes"], 10**10))
    code = main([command, str(path)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "10000000000 classes" in lines[0]


def test_a_description_that_is_not_an_object_is_refused(original):
    tensors, _, folder = original
    with pytest.raises(CheckpointError, match="not a prunekit checkpoint"):
        prunekit.load(_write(folder, tensors, [1, 2, 3]))


def test_a_file_cannot_ask_for_a_download(original):
    tensors, desc, folder = original
    desc = _edited(desc, ["arch", "name"], "torchvision/resnet18")
    with pytest.raises(CheckpointError, match="'weights'.*may not set"):
        prunekit.load(_write(folder, tensors, _edited(desc, ["arch", "kwargs"], {"weights": "DEFAULT"})))


def test_a_model_with_other_kwargs_is_refused_at_save(tmp_path):
    model = prunekit.create_model("torchvision/resnet18", 3, zero_init_residual=True)
    with pytest.raises(CheckpointError, match="zero_init_residual"):
        prunekit.save(model, tmp_path / "m.safetensors")
    assert not list(tmp_path.iterdir())


# -- the property: any edit of description or tensors either loads or raises CheckpointError, and allocates little --

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                     st.sampled_from([0, -1, 2**31, 2**63 - 1, 10**10, 10**18]),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
_GARBAGE = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
_DTYPES = [torch.float16, torch.float64, torch.int8, torch.int64, torch.bool, torch.uint8]


def _paths(node: Any, prefix: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


def _mutate_description(draw: Any, desc: Dict[str, Any]) -> Any:
    desc = json.loads(json.dumps(desc))
    path = draw(st.sampled_from(_paths(desc)))
    parent = desc
    for key in path[:-1]:
        parent = parent[key]
    key, old = path[-1], parent[path[-1]]
    kind = draw(st.sampled_from(["garbage", "delete", "huge", "extra"]))
    if kind == "garbage":
        parent[key] = draw(_GARBAGE)
    elif kind == "delete":
        del parent[key]
    elif kind == "huge" and isinstance(old, (int, float)) and not isinstance(old, bool):
        parent[key] = old * 10 ** draw(st.integers(1, 30)) + draw(st.integers(0, 1))
    elif kind == "extra" and isinstance(parent, dict):
        parent[draw(st.text(min_size=1, max_size=8))] = draw(_GARBAGE)
    return desc


def _mutate_tensors(draw: Any, tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    tensors = dict(tensors)
    key = draw(st.sampled_from(sorted(tensors)))
    kind = draw(st.sampled_from(["drop", "dtype", "shape", "extra", "rename"]))
    if kind == "drop":
        del tensors[key]
    elif kind == "dtype":
        tensors[key] = tensors[key].to(draw(st.sampled_from(_DTYPES)))
    elif kind == "shape":
        shape = draw(st.lists(st.integers(0, 40), min_size=0, max_size=4))
        tensors[key] = torch.zeros(shape)
    elif kind == "extra":
        tensors[draw(st.sampled_from(["@mask/", "", "@train/"])) + draw(st.text("abc.", min_size=1, max_size=6))] = \
            torch.zeros(draw(st.integers(0, 8)))
    else:
        tensors[key + draw(st.sampled_from(["_", ".x", "0"]))] = tensors.pop(key)
    return tensors


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_tampered_checkpoint_loads_or_raises_checkpoint_error(original, data):
    tensors, desc, folder = original
    for _ in range(data.draw(st.integers(1, 3))):
        if data.draw(st.booleans()):
            desc = _mutate_description(data.draw, desc)
        else:
            tensors = _mutate_tensors(data.draw, tensors)
    path = _write(folder, tensors, desc)
    rss_before = _reset_peak()
    try:
        model = prunekit.load(path)
    except CheckpointError as e:
        assert "\n" not in str(e)  # one line for the CLI
    else:  # accepted: then the model really is the file's tensors
        own = model.state_dict()
        assert {k: v.shape for k, v in own.items()} == {k: v.shape for k, v in tensors.items()
                                                        if not k.startswith("@")}
    if rss_before is not None:  # this load's own peak above the memory it started from
        grown_mib = (_status_kib("VmHWM") - rss_before) / 1024
        assert grown_mib < 256, f"loading a tampered file raised the peak memory by {grown_mib:.0f} MiB"
