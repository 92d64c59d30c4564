import pytest
import torch
from safetensors.torch import save_file

from prunekit.errors import ModelError
from prunekit.models import create_model, list_models


@pytest.mark.parametrize("name", ["vgg_small", "vgg_tiny", "resnet_small", "resnet_tiny"])
def test_builtin_models_output_classes(name):
    model = create_model(name, num_classes=7).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert model.prunekit_arch == {"name": name, "num_classes": 7, "kwargs": {}}


def test_hub_models_are_random_init_and_sized():
    tv = create_model("torchvision/resnet18", num_classes=5)
    tm = create_model("timm/resnet18", num_classes=5)
    assert tv.fc.out_features == 5 and tm.fc.out_features == 5
    assert "resnet_tiny" in list_models()


@pytest.mark.parametrize("name", ["nope", "torchvision/resnet999", "timm/not_a_model_xyz", "foo/bar"])
def test_unknown_model_is_a_clear_error(name):
    with pytest.raises(ModelError, match="unknown"):
        create_model(name, num_classes=3)


def test_bad_class_count():
    with pytest.raises(ModelError, match="num_classes"):
        create_model("vgg_tiny", num_classes=0)


def test_local_weights_load_and_head_mismatch_is_skipped(tmp_path):
    src = create_model("resnet_tiny", num_classes=10)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = create_model("resnet_tiny", num_classes=4, weights=path)
    # Every backbone tensor came from the file; the 10-class head was skipped for the 4-class one.
    assert torch.equal(dst.stem[0].weight, src.stem[0].weight)
    assert dst.fc.out_features == 4


def test_state_dict_pth_is_read_without_pickle_objects(tmp_path):
    src = create_model("vgg_tiny", num_classes=3)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": src.state_dict()}, path)
    dst = create_model("vgg_tiny", num_classes=3, weights=path)
    assert torch.equal(dst.classifier.weight, src.classifier.weight)


def test_weights_of_another_architecture_are_refused(tmp_path):
    src = create_model("vgg_tiny", num_classes=3)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    with pytest.raises(ModelError):
        create_model("resnet_tiny", num_classes=3, weights=path)
    with pytest.raises(ModelError, match="does not exist"):
        create_model("vgg_tiny", num_classes=3, weights=tmp_path / "missing.safetensors")
