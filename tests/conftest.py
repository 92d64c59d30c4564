"""Shared fixtures: tiny synthetic datasets and the optional real UC Merced folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def ucmerced_root() -> Path | None:
    """../shared/data/ucmerced beside the repo (or $PRUNEKIT_UCMERCED); None when absent."""
    env = os.environ.get("PRUNEKIT_UCMERCED")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data" / "ucmerced"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture
def ucmerced() -> Path:
    root = ucmerced_root()
    if root is None:
        pytest.skip("../shared/data/ucmerced is absent")
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session decodes into its own cache folder, never the user's."""
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.set_num_threads(1)


def make_image_folder(root: Path, classes: int = 3, per_class: int = 10, size: int = 16, seed: int = 0) -> Path:
    """A class-per-folder dataset whose classes differ by colour, so a tiny CNN can learn it in a few steps."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        base = torch.zeros(3, size, size)
        base[c % 3] = 0.6
        for i in range(per_class):
            img = (base + 0.3 * torch.rand(3, size, size, generator=g)).clamp(0, 1)
            arr = (img.permute(1, 2, 0) * 255).to(torch.uint8).numpy()
            Image.fromarray(arr).save(d / f"img{i:03d}.png")
    return root


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "scenes")
