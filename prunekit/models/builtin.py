"""Compact CNNs for small aerial images on a CPU.

Torchvision/timm models are built for 224 px ImageNet; on 64 px scenes and 2 cores they are slow and
over-parameterized. These two families train from scratch in minutes and exercise the structures pruning must
handle: plain conv stacks (VGG-style) and residual stages with projection shortcuts (ResNet-style).
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from .registry import MODELS


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class VGGSmall(nn.Module):
    """VGG-style: stages of 3x3 conv-BN-ReLU with max-pooling, global pooling, dropout, linear classifier."""

    def __init__(self, num_classes: int = 21, widths: Sequence[int] = (32, 64, 128, 256),
                 convs_per_stage: int = 2, dropout: float = 0.2, in_chans: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_chans
        for i, w in enumerate(widths):
            for _ in range(convs_per_stage):
                layers += _conv_bn(cin, w)
                cin = w
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(self.dropout(self.flatten(self.pool(self.features(x)))))


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity or 1x1-projection shortcut (the residual add couples channels)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetSmall(nn.Module):
    """ResNet-style for small inputs: a 3x3 stem (no 7x7/maxpool), BasicBlock stages, global pooling."""

    def __init__(self, num_classes: int = 21, widths: Sequence[int] = (32, 64, 128, 256),
                 blocks: Sequence[int] = (2, 2, 2, 2), in_chans: int = 3) -> None:
        super().__init__()
        if len(widths) != len(blocks):
            raise ValueError("widths and blocks must have the same length")
        self.stem = nn.Sequential(*_conv_bn(in_chans, widths[0]))
        stages = []
        cin = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(cin, w, stride)] + [BasicBlock(w, w, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*stage))
            cin = w
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.layers(self.stem(x)))))


@MODELS.register("vgg_small")
def vgg_small(num_classes: int = 21, **kw) -> nn.Module:
    """~1.2M params at 64 px; reaches ~90% on UC Merced at 64 px from scratch."""
    return VGGSmall(num_classes=num_classes, **kw)


@MODELS.register("vgg_tiny")
def vgg_tiny(num_classes: int = 21, **kw) -> nn.Module:
    """Half-width VGGSmall for tests and the quick demo."""
    kw.setdefault("widths", (16, 32, 64, 128))
    return VGGSmall(num_classes=num_classes, **kw)


@MODELS.register("resnet_small")
def resnet_small(num_classes: int = 21, **kw) -> nn.Module:
    """ResNet-18-like depth with small widths and a 3x3 stem, for 64-128 px inputs."""
    return ResNetSmall(num_classes=num_classes, **kw)


@MODELS.register("resnet_tiny")
def resnet_tiny(num_classes: int = 21, **kw) -> nn.Module:
    """A two-stage ResNetSmall for tests and quick checks: residual blocks in seconds on a CPU."""
    kw.setdefault("widths", (16, 32, 64, 128))
    kw.setdefault("blocks", (1, 1, 1, 1))
    return ResNetSmall(num_classes=num_classes, **kw)
