"""VGG for small images as in Network Slimming (Liu et al. 2017): conv3x3 (no bias) + BN + ReLU,
max-pooling between stages, global average pooling and one linear layer 512 -> classes.

On inputs smaller than 32x32 a max-pool is skipped once the feature map is 1x1, so the same
architecture runs on 8x8 digits; at 32x32 the network is exactly the Slimming one.

`widths` widens conv layers (SOSP's expand-pruning, Sec. 3.4), {name: multiplier}: "*"
multiplies every conv's width, a conv's module name ("features.<i>", as masks name it; the
indices of the built network, which skip the pools a small input drops) multiplies that conv's
width; the next conv's (or the classifier's) inputs follow. Widths round half up
(`base.scaled_width`).
"""

from __future__ import annotations

import torch
from torch import nn

from sosp.models.base import ModelSpec, Widths, checked_widths, scaled_width

CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
    ],
}


# VGG-11 at a quarter of the width: the embedded demo's VGG (seconds per epoch on digits).
CFGS["vgg11_quarter"] = [16, "M", 32, "M", 64, 64, "M", 128, 128, "M", 128, 128]


class VGG(nn.Module):
    """`features` (conv-BN-ReLU and max-pools), global average pool, `classifier` (Linear).

    `widths`: {name: multiplier} (module docstring); kept as `self.widths`, and the names it
    accepts as `self.width_levels` ({"layer": conv names})."""

    def __init__(
        self,
        cfg: list[int | str],
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        widths: Widths | None = None,
    ):
        super().__init__()
        plan = _plan(cfg, image_size)
        self.width_levels = {"layer": tuple(f"features.{i}" for i, v in plan if v != "M")}
        self.widths = checked_widths(widths, self.width_levels["layer"])
        layers: list[nn.Module] = []
        channels = in_channels
        for i, v in plan:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            v = scaled_width(int(v), self.widths, f"features.{i}")
            layers += [
                nn.Conv2d(channels, v, 3, padding=1, bias=False),
                nn.BatchNorm2d(v),
                nn.ReLU(inplace=True),
            ]
            channels = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 0.5)  # Network Slimming's initialization

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _plan(cfg: list[int | str], image_size: int) -> list[tuple[int, int | str]]:
    """(index in `features`, conv width or "M") of each conv and kept max-pool of `cfg` on
    image_size x image_size inputs (a pool is skipped once the map is 1x1; a conv takes 3
    modules, conv-BN-ReLU)."""
    plan, index, size = [], 0, image_size
    for v in cfg:
        if v == "M" and size < 2:
            continue
        plan.append((index, v))
        index += 1 if v == "M" else 3
        size = size // 2 if v == "M" else size
    return plan


def _summary(name: str) -> str:
    if name == "vgg11_quarter":
        return "VGG-11 at a quarter width (16-128 channels): the demo's VGG"
    return f"{name.upper()} with BN, one linear layer (Network Slimming)"


MODELS = {name: ModelSpec(VGG, _summary(name), kwargs={"cfg": cfg}) for name, cfg in CFGS.items()}
