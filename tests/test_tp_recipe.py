"""The peer harness gives Torch-Pruning its own examples' attention settings (issue 33): with them a ViT prunes and
runs; without the step after pruning that its example does, the same prune breaks the forward. Skipped where the
``bench`` extra (torch_pruning) is not installed."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

tp = pytest.importorskip("torch_pruning")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from round_trip import TPRecipe  # noqa: E402


def _prune(model: nn.Module, x: torch.Tensor, fix: bool) -> nn.Module:
    recipe = TPRecipe(model)
    head = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 5]
    pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=0.5, ignored_layers=head, **recipe.kwargs)
    pruner.step()
    if fix:
        recipe.fix(model, pruner)
    return model


def _torchvision_vit() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=4, hidden_dim=32, mlp_dim=64,
                             num_classes=5).eval()


def test_torchvision_vit_prunes_and_runs_with_its_example_settings():
    x = torch.randn(1, 3, 32, 32)
    model = _torchvision_vit()
    assert TPRecipe(model).kwargs == {"round_to": 4}
    before = sum(p.numel() for p in model.parameters())
    pruned = _prune(model, x, fix=True)
    assert pruned.hidden_dim == 16
    assert pruned(x).shape == (1, 5)
    assert sum(p.numel() for p in pruned.parameters()) < 0.5 * before


def test_torchvision_vit_breaks_without_the_hidden_dim_fix():
    x = torch.randn(1, 3, 32, 32)
    pruned = _prune(_torchvision_vit(), x, fix=False)
    with pytest.raises(RuntimeError):
        pruned(x)


def test_timm_attention_heads_follow_the_pruned_widths():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=16, embed_dim=32, depth=1,
                                                             num_heads=4, num_classes=5).eval()
    x = torch.randn(1, 3, 32, 32)
    recipe = TPRecipe(model)
    assert list(recipe.kwargs["num_heads"].values()) == [4]
    pruned = _prune(model, x, fix=True)
    attn = pruned.blocks[0].attn
    assert (attn.num_heads, attn.head_dim) == (4, 4)
    assert pruned(x).shape == (1, 5)
