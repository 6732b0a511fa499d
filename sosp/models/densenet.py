"""DenseNet-40 of Network Slimming (Liu et al. 2017): growth 12, no bottleneck, compression 1.

Pre-activation layers: each dense layer is BN-ReLU-conv3x3(growth) whose output is concatenated
to its input; transitions are BN-ReLU-conv1x1 (same width)-avgpool(2); then BN-ReLU, global
pool, linear. 1,059,298 parameters on CIFAR-10.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sosp.models.base import ModelSpec, kaiming_init


class DenseLayer(nn.Module):
    """x -> cat(x, conv3x3(relu(bn(x)))): adds `growth` channels."""

    def __init__(self, in_channels: int, growth: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1-avgpool(2); the average pool is skipped on a 1x1 map."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(F.relu(self.bn(x))))


class DenseNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        depth: int = 40,
        growth: int = 12,
        compression: float = 1.0,
    ):
        super().__init__()
        if (depth - 4) % 3:
            raise ValueError(f"DenseNet depth must be 3n+4, not {depth}")
        n = (depth - 4) // 3
        channels, size = 2 * growth, image_size
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for stage in range(3):
            for _ in range(n):
                stages.append(DenseLayer(channels, growth))
                channels += growth
            if stage < 2:
                out = int(channels * compression)
                stages.append(Transition(channels, out, pool=size >= 2))
                channels, size = out, max(size // 2, 1)
        self.features = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.features(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


MODELS = {
    "densenet40": ModelSpec(DenseNet, "DenseNet-40, growth 12, no bottleneck (Network Slimming)")
}
