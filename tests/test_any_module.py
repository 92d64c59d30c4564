"""Any nn.Module saves and loads without pickle: a model prunekit did not build loads into a fresh instance the
caller builds, bit-exact, with its pruned shapes, shape attributes and tied weights (prunekit.storage.instance)."""
from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn

import prunekit
from prunekit.errors import CheckpointError
from prunekit.storage import check_savable
from prunekit.storage import checkpoint as ckpt


def _same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def pruned_resnet():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    return prunekit.prune(model, torch.randn(1, 3, 32, 32), ratio=0.3)


def test_a_pruned_torchvision_model_loads_bit_exact_into_a_fresh_instance(pruned_resnet, tmp_path):
    path = prunekit.save(pruned_resnet, tmp_path / "r.safetensors")
    loaded = prunekit.load(path, model=torchvision.models.resnet18(num_classes=10))
    _same_state(pruned_resnet, loaded)
    assert loaded.layer1[0].conv1.out_channels == pruned_resnet.layer1[0].conv1.out_channels < 64
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(pruned_resnet.eval()(x), loaded(x))
    desc = loaded.prunekit_description
    assert desc["module"] == {"qualname": "torchvision.models.resnet.ResNet"} and "arch" not in desc
    assert desc["input"] == {"shapes": [[3, 32, 32]], "dtypes": ["float32"]}  # from the plan prune left on it
    raw = path.read_bytes()
    assert b"\x80\x04" not in raw[:8 + int.from_bytes(raw[:8], "little")]  # no pickle in the header


def test_without_its_instance_the_error_says_to_pass_one(pruned_resnet, tmp_path):
    path = prunekit.save(pruned_resnet, tmp_path / "r.safetensors")
    with pytest.raises(CheckpointError, match=r"torchvision\.models\.resnet\.ResNet.*prunekit\.load\(path, "
                                              r"model=ResNet\(\.\.\.\)\)"):
        prunekit.load(path)


def test_an_instance_that_does_not_match_is_refused_naming_the_tensor(tmp_path):
    path = prunekit.save(torchvision.models.resnet18(num_classes=4), tmp_path / "r18.safetensors")
    with pytest.raises(CheckpointError, match="model= has tensor 'layer1.2."):  # resnet34's third block
        prunekit.load(path, model=torchvision.models.resnet34(num_classes=4))
    path = prunekit.save(torchvision.models.resnet34(num_classes=4), tmp_path / "r34.safetensors")
    with pytest.raises(CheckpointError, match="file holds tensor 'layer1.2."):
        prunekit.load(path, model=torchvision.models.resnet18(num_classes=4))
    with pytest.raises(CheckpointError, match="saved from a torchvision.models.resnet.ResNet, but model= is a "
                                              "torch.nn.modules.linear.Linear"):
        prunekit.load(path, model=nn.Linear(2, 2))


class TiedHead(nn.Module):
    """An embedding whose matrix is also the output layer's (GPT-2's wte / lm_head)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 10, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.emb(ids)))


def _prune_by_hand(model: TiedHead, keep: int) -> TiedHead:
    """Remove embedding columns the way the engine does: new tensors, shape attributes updated, tie kept."""
    with torch.no_grad():
        model.emb.weight = nn.Parameter(model.emb.weight[:, :keep].clone())
        model.head.weight = model.emb.weight
        model.norm.weight = nn.Parameter(model.norm.weight[:keep].clone())
        model.norm.bias = nn.Parameter(torch.randn(keep))
    model.emb.embedding_dim, model.head.in_features, model.norm.normalized_shape = keep, keep, (keep,)
    return model


def test_tied_weights_stay_tied_through_pruned_shapes(tmp_path):
    torch.manual_seed(0)
    small = _prune_by_hand(TiedHead(), 4)
    path = prunekit.save(small, tmp_path / "t.safetensors", input=torch.zeros(1, 5, dtype=torch.long))
    loaded = prunekit.load(path, model=TiedHead())
    assert loaded.head.weight is loaded.emb.weight and loaded.emb.weight.shape == (10, 4)
    assert loaded.norm.normalized_shape == (4,) and isinstance(loaded.norm.normalized_shape, tuple)
    assert loaded.emb.embedding_dim == 4 and loaded.head.in_features == 4
    _same_state(small, loaded)
    ids = torch.tensor([[1, 2, 3, 9]])
    assert torch.equal(small(ids), loaded(ids))
    assert loaded.prunekit_description["tied"] == {"head.weight": "emb.weight"}
    assert loaded.prunekit_description["input"] == {"shapes": [[5]], "dtypes": ["int64"]}


def test_an_untied_save_unties_the_instance(tmp_path):
    untied = TiedHead()
    untied.head.weight = nn.Parameter(torch.randn(10, 6))
    loaded = prunekit.load(prunekit.save(untied, tmp_path / "u.safetensors"), model=TiedHead())
    assert loaded.head.weight is not loaded.emb.weight
    _same_state(untied, loaded)


def test_gpt2_round_trips_with_its_lm_head_tied(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50, n_positions=32)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 50, (2, 8))
    for name, saved in (("dense", model), ("pruned", prunekit.prune(model, ids[:1], ratio=0.25))):
        assert saved.lm_head.weight is saved.transformer.wte.weight
        path = prunekit.save(saved, tmp_path / f"{name}.safetensors")
        loaded = prunekit.load(path, model=transformers.GPT2LMHeadModel(config))
        assert loaded.lm_head.weight is loaded.transformer.wte.weight, name
        assert loaded.config.n_embd == saved.config.n_embd, name  # 24 after pruning: the config follows
        _same_state(saved, loaded)
        assert torch.equal(saved.eval()(ids).logits, loaded(ids).logits), name
        want = {"shapes": [[8]], "dtypes": ["int64"]} if name == "pruned" else None  # the plan's input
        assert loaded.prunekit_description.get("input") == want


class Widths(nn.Module):
    """Shape attributes of each kind a checkpoint records: an int, a tuple and a list."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.num_heads, self.normalized_shape, self.head_dim = 4, (8, 2), [3, 3]


def test_shape_attributes_of_any_int_tuple_or_list_round_trip(tmp_path):
    model = Widths()
    model.num_heads, model.normalized_shape, model.head_dim = 2, (5, 1), [7]
    loaded = prunekit.load(prunekit.save(model, tmp_path / "w.safetensors"), model=Widths())
    assert (loaded.num_heads, loaded.normalized_shape, loaded.head_dim) == (2, (5, 1), [7])


class ExtraState(nn.Linear):
    def get_extra_state(self):
        return {"note": object()}

    def set_extra_state(self, state):
        pass


def test_what_cannot_be_saved_is_refused_before_any_work(tmp_path):
    model = nn.Sequential(nn.Linear(2, 2), ExtraState(2, 2))
    with pytest.raises(CheckpointError, match="'1._extra_state' is a dict, not a tensor"):
        check_savable(model)
    with pytest.raises(CheckpointError, match="'1._extra_state' is a dict, not a tensor"):
        prunekit.save(model, tmp_path / "x.safetensors")
    with torch.device("meta"):
        ghost = nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match="'weight' has no data"):
        check_savable(ghost)
    with pytest.raises(CheckpointError, match="needs an nn.Module"):
        check_savable({"weight": torch.zeros(2)})
    assert not list(tmp_path.iterdir())
    check_savable(torchvision.models.resnet18())  # a plain model: fine


def _rewrite(path, edit) -> None:
    from safetensors.torch import save_file

    tensors, desc = ckpt.read(path)
    edit(desc, tensors)
    save_file(tensors, str(path), metadata={"prunekit": json.dumps(desc)})


def test_a_description_cannot_set_other_attributes_or_import_anything(tmp_path):
    path = prunekit.save(Widths(), tmp_path / "w.safetensors")
    _rewrite(path, lambda d, t: d["structure"]["attrs"].update({"fc": {"forward": 1}}))
    with pytest.raises(CheckpointError, match="'forward'"):
        prunekit.load(path, model=Widths())
    path = prunekit.save(Widths(), tmp_path / "v.safetensors")
    _rewrite(path, lambda d, t: d.update(module={"qualname": "os.system"}))
    with pytest.raises(CheckpointError, match="model=system"):  # named, never imported or called
        prunekit.load(path)
    path = prunekit.save(Widths(), tmp_path / "u.safetensors")
    _rewrite(path, lambda d, t: d["structure"]["params"].update({"fc.weight": [4096, 4096]}))
    with pytest.raises(CheckpointError, match="fc.weight is \\(4, 4\\) in the file but \\(4096, 4096\\)"):
        prunekit.load(path, model=Widths())


def test_the_compressed_format_loads_into_an_instance_too(tmp_path):
    torch.manual_seed(0)
    small = _prune_by_hand(TiedHead(), 4)
    mask = {"@mask/head.weight": small.head.weight != 0}
    path = prunekit.save(small, tmp_path / "c.pks", extras=mask, codec={"values": "fp32"})
    loaded = ckpt.load_checkpoint(path, model=TiedHead())
    assert loaded.model.head.weight is loaded.model.emb.weight and list(loaded.extras) == ["@mask/head.weight"]
    _same_state(small, loaded.model)
