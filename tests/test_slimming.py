"""Network Slimming: the callback adds lam * sign(gamma) to BN gamma gradients and drives gammas toward zero."""
from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.errors import ConfigError
from prunekit.slimming import BNSparsity, bn_l1
from prunekit.train import TrainConfig, TrainState, fit


def test_penalty_gradient_is_lambda_sign_gamma():
    torch.manual_seed(0)
    model = prunekit.create_model("vgg_tiny", 4)
    bn = model.features[1]
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(-1, 1, 16))
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    plain = bn.weight.grad.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    BNSparsity(0.01).on_after_backward(TrainState(model=model, optimizer=opt))
    assert torch.allclose(bn.weight.grad - plain, 0.01 * torch.sign(bn.weight.detach()))


def test_training_with_penalty_shrinks_gammas(tiny_folder):
    from prunekit.data import load_dataset

    data = load_dataset(tiny_folder, image_size=16, cache=False)
    cfg = TrainConfig(epochs=2, batch_size=8, augment=False, weight_decay=0.0)
    norms = []
    for lam in (0.0, 0.05):
        torch.manual_seed(0)
        model = prunekit.create_model("vgg_tiny", len(data.classes))
        fit(model, data, cfg, device="cpu", callbacks=[BNSparsity(lam)], progress=False)
        norms.append(bn_l1(model))
    assert norms[1] < norms[0]


def test_negative_penalty_rejected():
    with pytest.raises(ConfigError, match="penalty"):
        BNSparsity(-1.0)
