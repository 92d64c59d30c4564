import json

import pytest
import torch

import prunekit
from prunekit.errors import CheckpointError
from prunekit.models import create_model
from prunekit.storage import checkpoint as ckpt
from prunekit.storage.nested import flatten, unflatten


def test_save_load_round_trip_is_bit_exact(tmp_path):
    model = create_model("resnet_tiny", num_classes=4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    path = tmp_path / "m.safetensors"
    prunekit.save(model, path, data={"classes": ["a", "b", "c", "d"]})
    loaded = prunekit.load(path)
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(model.eval()(x), loaded(x))
    assert loaded.prunekit_description["data"]["classes"] == ["a", "b", "c", "d"]


def test_file_holds_no_pickle(tmp_path):
    path = tmp_path / "m.safetensors"
    prunekit.save(create_model("vgg_tiny", num_classes=2), path)
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])
    assert json.loads(header["__metadata__"]["prunekit"])["arch"]["name"] == "vgg_tiny"
    assert b"\x80\x04" not in raw[:8 + header_len]  # no pickle protocol marker in the header


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    model = create_model("vgg_tiny", num_classes=2)
    prunekit.save(model, path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("prunekit.storage.checkpoint.save_file", boom)  # the writer the module calls
    with pytest.raises(RuntimeError):
        prunekit.save(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    path = tmp_path / "m.safetensors"
    prunekit.save(create_model("vgg_tiny", num_classes=2), path)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        prunekit.load(cut)
    with pytest.raises(CheckpointError, match="does not exist"):
        prunekit.load(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="without a prunekit description"):
        prunekit.load(plain)


def test_checkpoint_of_another_shape_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    model = create_model("vgg_tiny", num_classes=2)
    tensors, desc = None, None
    prunekit.save(model, path)
    tensors, desc = ckpt.read(path)
    tensors["classifier.weight"] = torch.zeros(2, 7)
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"prunekit": json.dumps(desc)})
    with pytest.raises(CheckpointError, match="classifier.weight"):
        prunekit.load(path)


def test_model_prunekit_did_not_build_needs_its_instance_to_load(tmp_path):
    path = prunekit.save(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match=r"torch\.nn\.modules\.linear\.Linear.*model=Linear\(\.\.\.\)"):
        prunekit.load(path)


def test_extras_and_nested_state_round_trip(tmp_path):
    model = create_model("vgg_tiny", num_classes=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    opt.step()
    spec, tensors = flatten(opt.state_dict(), "@train/optim")
    path = tmp_path / "m.safetensors"
    prunekit.save(model, path, extras=tensors, train={"optimizer": spec})
    loaded = ckpt.load_checkpoint(path)
    state = unflatten(loaded.description["train"]["optimizer"], loaded.extras)
    ref = opt.state_dict()
    assert state["param_groups"] == ref["param_groups"]
    for i, s in ref["state"].items():
        assert torch.equal(state["state"][i]["momentum_buffer"], s["momentum_buffer"])
