"""Architectures the project builds itself. Each takes [0,1] images and normalises inside."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Normalized(nn.Module):
    """(x − mean) / std in front of a network, so that attacks always work in [0,1] pixel space."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)


class SmallCNN(nn.Module):
    """Two 3×3 conv blocks and two dense layers; for 8×8 digits and 28×28 (Fashion-)MNIST."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc1 = nn.Linear(2 * width * 16, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv1(x))
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def small_cnn(num_classes: int, in_channels: int) -> nn.Module:
    return Normalized(SmallCNN(in_channels, num_classes), (0.5,) * in_channels, (0.5,) * in_channels)


def preact_resnet18(num_classes: int, in_channels: int) -> nn.Module:
    """PreActResNet-18 as in RobustBench's Wong2020Fast (CIFAR normalisation inside)."""
    from harness.api import import_robustbench

    import_robustbench()
    from robustbench.model_zoo.architectures.resnet import PreActBlock, PreActResNet

    if in_channels != 3:
        raise ValueError("preact-resnet18 takes 3-channel images")
    net = PreActResNet(PreActBlock, [2, 2, 2, 2], num_classes=num_classes)
    return Normalized(net, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))


ARCHS: dict[str, Callable[[int, int], nn.Module]] = {"small-cnn": small_cnn, "preact-resnet18": preact_resnet18}
