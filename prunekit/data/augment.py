"""Batched aerial-scene augmentations: flips, 90-degree rotations, and mild crops, all vectorized over the batch.

Aerial and satellite scenes have no canonical "up", so every flip and quarter turn is a valid view. All random draws
are made up front by :func:`draw_params` from a caller's ``torch.Generator``; :func:`apply_augment` is then a pure
function of (images, draws), so a loader seeded by (seed, epoch) replays the same augmented batches after a resume.

    params = draw_params(Augment(), n=len(x), generator=torch.Generator().manual_seed(0))
    x = apply_augment(x, params, Augment())        # same shape and dtype as x
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from ..errors import ConfigError

CROPS = ("pad", "resized", "none")


@dataclass(frozen=True)
class Augment:
    """Which augmentations run. ``crop``: ``"pad"`` = reflect-pad by ``pad_frac`` of the side and crop back (an
    integer shift, exact on uint8); ``"resized"`` = random-resized crop with area ``scale`` and aspect ``ratio``
    (bilinear, needs float input); ``"none"``."""

    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    crop: str = "pad"
    pad_frac: float = 0.125
    scale: Tuple[float, float] = (0.7, 1.0)
    ratio: Tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ConfigError(f"crop={self.crop!r} is not one of {', '.join(CROPS)}")
        if not 0.0 <= self.pad_frac < 0.5:
            raise ConfigError(f"pad_frac={self.pad_frac!r} must be in [0, 0.5) (e.g. 0.125)")
        lo, hi = self.scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(f"scale={self.scale!r} must satisfy 0 < low <= high <= 1 (e.g. (0.7, 1.0))")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(f"ratio={self.ratio!r} must satisfy 0 < low <= high (e.g. (0.75, 1.333))")


NO_AUGMENT = Augment(hflip=False, vflip=False, rot90=False, crop="none")


def draw_params(aug: Augment, n: int, generator: torch.Generator) -> Dict[str, torch.Tensor]:
    """Per-sample random draws for ``n`` samples, all on CPU from ``generator``.

    Everything is always drawn in the same order, so switching one augmentation off leaves the others' draws as
    they were.
    """
    del aug  # the draws do not depend on which augmentations are on (see above)
    return {"hflip": torch.rand(n, generator=generator) < 0.5,
            "vflip": torch.rand(n, generator=generator) < 0.5,
            "rot90": torch.randint(0, 4, (n,), generator=generator),
            "crop": torch.rand(n, 4, generator=generator)}  # (u_y, u_x, u_scale, u_ratio) in [0, 1)


def _flip(x: torch.Tensor, which: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.where(which.view(-1, 1, 1, 1), x.flip(dim), x)


def _rot90(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    for k in (1, 2, 3):  # three vectorized calls per batch, never one per image
        sel = torch.nonzero(turns == k).flatten()
        if sel.numel():
            out[sel] = torch.rot90(x[sel], k, dims=(2, 3))
    return out


def _reflect(idx: torch.Tensor, size: int) -> torch.Tensor:
    idx = idx.abs()
    return torch.where(idx > size - 1, 2 * (size - 1) - idx, idx)


def _pad_crop(x: torch.Tensor, u: torch.Tensor, pad_frac: float) -> torch.Tensor:
    """Shift each image by up to ``pad`` pixels with reflected borders: same as reflect-pad then random crop."""
    b, c, h, w = x.shape
    pad = int(round(pad_frac * min(h, w)))
    if pad == 0:
        return x
    shift = (u[:, :2] * (2 * pad + 1)).floor().long().clamp_max(2 * pad) - pad  # integers in [-pad, pad]
    rows = _reflect(torch.arange(h, device=x.device) + shift[:, :1], h)  # [B, H]
    cols = _reflect(torch.arange(w, device=x.device) + shift[:, 1:], w)  # [B, W]
    x = x.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w))
    return x.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))


def _resized_crop(x: torch.Tensor, u: torch.Tensor, scale: Tuple[float, float],
                  ratio: Tuple[float, float]) -> torch.Tensor:
    """Crop a random box of ``scale`` area and ``ratio`` aspect and resize it back, via one batched grid_sample."""
    if not x.is_floating_point():
        raise ConfigError("crop='resized' interpolates, so it needs float images; convert with x.float() first")
    area = scale[0] + u[:, 2] * (scale[1] - scale[0])
    log_r = math.log(ratio[0]) + u[:, 3] * (math.log(ratio[1]) - math.log(ratio[0]))
    bw = (area * log_r.exp()).sqrt().clamp_max(1.0)  # box width and height as fractions of the side
    bh = (area / log_r.exp()).sqrt().clamp_max(1.0)
    cx = 2 * u[:, 1] * (1 - bw) + bw - 1  # box centre in [-1, 1] grid units
    cy = 2 * u[:, 0] * (1 - bh) + bh - 1
    zero = torch.zeros_like(bw)
    theta = torch.stack([torch.stack([bw, zero, cx], 1), torch.stack([zero, bh, cy], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def apply_augment(x: torch.Tensor, params: Dict[str, torch.Tensor], aug: Augment) -> torch.Tensor:
    """Augment a batch [B, 3, H, W] with draws from :func:`draw_params`; returns a new tensor, same shape/dtype."""
    params = {k: v.to(x.device) for k, v in params.items()}
    if aug.hflip:
        x = _flip(x, params["hflip"], 3)
    if aug.vflip:
        x = _flip(x, params["vflip"], 2)
    if aug.rot90:
        x = _rot90(x, params["rot90"])
    if aug.crop == "pad":
        x = _pad_crop(x, params["crop"], aug.pad_frac)
    elif aug.crop == "resized":
        x = _resized_crop(x, params["crop"], aug.scale, aug.ratio)
    return x
