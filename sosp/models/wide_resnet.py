"""Wide ResNet (Zagoruyko & Komodakis 2016): pre-activation blocks BN-ReLU-conv3x3-BN-ReLU-
conv3x3, 1x1 convolution shortcuts where the width or stride changes, widths 16k, 32k, 64k."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sosp.models.base import ModelSpec, kaiming_init


class WideBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)


class WideResNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        depth: int = 28,
        widen: int = 10,
    ):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, not {depth}")
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        planes, stages = 16, []
        for stage, width in enumerate((16 * widen, 32 * widen, 64 * widen)):
            blocks = []
            for i in range(n):
                blocks.append(WideBlock(planes, width, 2 if stage > 0 and i == 0 else 1))
                planes = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(planes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes, num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(F.relu(self.bn(x))), 1))


MODELS = {
    "wrn28_10": ModelSpec(
        WideResNet, "WideResNet-28-10, pre-activation", kwargs={"depth": 28, "widen": 10}
    ),
    "wrn16_4": ModelSpec(
        WideResNet,
        "WideResNet-16-4, pre-activation (small, for tests)",
        kwargs={"depth": 16, "widen": 4},
    ),
}
