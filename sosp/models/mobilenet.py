"""MobileNet-V1 (Howard et al. 2017) for small images: stride-1 stem, depthwise-separable
blocks (depthwise conv3x3-BN-ReLU, pointwise conv1x1-BN-ReLU), global pool, linear."""

from __future__ import annotations

import torch
from torch import nn

from sosp.models.base import ModelSpec

# (output channels, stride) of each depthwise-separable block; CIFAR variant (stem stride 1).
CFG = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
]


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    def __init__(
        self, num_classes: int, in_channels: int = 3, image_size: int = 32, width: float = 1.0
    ):
        super().__init__()
        c = int(32 * width)
        layers = [_conv_bn_relu(in_channels, c, 3, 1, 1)]
        for out, stride in CFG:
            out = int(out * width)
            layers += [_conv_bn_relu(c, c, 3, stride, c), _conv_bn_relu(c, out, 1, 1, 1)]
            c = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


MODELS = {"mobilenet_v1": ModelSpec(MobileNetV1, "MobileNet-V1, CIFAR variant (stride-1 stem)")}
