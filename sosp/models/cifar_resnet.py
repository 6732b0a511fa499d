"""CIFAR ResNets (He et al. 2016, Sec. 4.2): 3 stages of n basic blocks, widths w, 2w, 4w.

`shortcut="projection"` (the SOSP paper's; its ResNet-56 has 855,770 parameters) uses a 1x1
convolution + BatchNorm wherever the shape changes; `shortcut="zeropad"` (option A, most other
pruning papers; 853,018 parameters) subsamples and pads the missing channels with zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sosp.models.base import ModelSpec, kaiming_init
from sosp.shortcuts import ZeroPadShortcut


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "projection":
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )
            elif shortcut == "zeropad":
                self.shortcut = ZeroPadShortcut(in_planes, planes, stride)
            else:
                raise ValueError(f"shortcut must be 'projection' or 'zeropad', not {shortcut!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images: stem conv3x3(width), stages of n blocks, global pool, fc."""

    def __init__(
        self,
        depth: int,
        num_classes: int,
        in_channels: int = 3,
        width: int = 16,
        shortcut: str = "projection",
        image_size: int = 32,
    ):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, not {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        planes, layers = width, []
        for stage, stage_width in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(planes, stage_width, stride, shortcut))
                planes = stage_width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes, num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


MODELS = {
    **{
        f"resnet{d}": ModelSpec(
            CifarResNet, f"CIFAR ResNet-{d}, projection shortcuts (SOSP paper)", kwargs={"depth": d}
        )
        for d in (20, 32, 56, 110)
    },
    **{
        f"resnet{d}_zeropad": ModelSpec(
            CifarResNet,
            f"CIFAR ResNet-{d}, zero-padding shortcuts (option A)",
            kwargs={"depth": d, "shortcut": "zeropad"},
        )
        for d in (20, 32, 56, 110)
    },
    "resnet32x4": ModelSpec(
        CifarResNet,
        "CIFAR ResNet-32 widened 4x (64/128/256), projection shortcuts (C-OBD/EigenDamage)",
        kwargs={"depth": 32, "width": 64},
    ),
}
