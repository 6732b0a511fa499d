"""CIFAR ResNets (He et al. 2016, Sec. 4.2): 3 stages of n basic blocks, widths w, 2w, 4w.

`shortcut="projection"` (the SOSP paper's; its ResNet-56 has 855,770 parameters) uses a 1x1
convolution + BatchNorm wherever the shape changes; `shortcut="zeropad"` (option A, most other
pruning papers; 853,018 parameters) subsamples and pads the missing channels with zeros.

`widths` widens parts of the network (SOSP's expand-pruning, Sec. 3.4), {name: multiplier}:
"*" multiplies every width; a stage "layer<s>" multiplies the stage's residual stream (the stem
conv for layer1, every block's conv2 and shortcut) and every block's inner width; a block
"layer<s>.<b>", or its conv "layer<s>.<b>.conv1", multiplies only that block's inner width
(conv1's outputs, conv2's inputs): a block's output must match its stream, so a stream layer
(the stem, conv2, a shortcut) cannot be widened alone. A conv's width is its base width times
every multiplier that covers it, rounded half up (`base.scaled_width`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sosp.errors import BadInput
from sosp.models.base import ModelSpec, Widths, checked_widths, kaiming_init, scaled_width
from sosp.shortcuts import ZeroPadShortcut


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU; `inner` channels between the
    two convs (default: `planes`, the output width)."""

    def __init__(
        self, in_planes: int, planes: int, stride: int, shortcut: str, inner: int | None = None
    ):
        super().__init__()
        inner = inner or planes
        self.conv1 = nn.Conv2d(in_planes, inner, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "projection":
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )
            elif shortcut == "zeropad":
                if planes < in_planes:
                    raise BadInput(
                        f"a zero-padding shortcut cannot narrow {in_planes} to {planes} "
                        "channels; widen the later stage too"
                    )
                self.shortcut = ZeroPadShortcut(in_planes, planes, stride)
            else:
                raise ValueError(f"shortcut must be 'projection' or 'zeropad', not {shortcut!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images: stem conv3x3(width), stages of n blocks, global pool, fc.

    `widths`: {name: multiplier} (module docstring); kept as `self.widths`, and the names it
    accepts by level as `self.width_levels` ({"stage": ..., "block": ..., "layer": ...})."""

    def __init__(
        self,
        depth: int,
        num_classes: int,
        in_channels: int = 3,
        width: int = 16,
        shortcut: str = "projection",
        image_size: int = 32,
        widths: Widths | None = None,
    ):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, not {depth}")
        n = (depth - 2) // 6
        self.width_levels = width_levels(n)
        self.widths = checked_widths(
            widths, [u for units in self.width_levels.values() for u in units], _stream_layers(n)
        )
        stem = scaled_width(width, self.widths, "layer1")
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        planes, layers = stem, []
        for stage, base in enumerate((width, 2 * width, 4 * width)):
            s = f"layer{stage + 1}"
            stage_width = scaled_width(base, self.widths, s)
            blocks = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                inner = scaled_width(base, self.widths, s, f"{s}.{i}", f"{s}.{i}.conv1")
                blocks.append(BasicBlock(planes, stage_width, stride, shortcut, inner))
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


def width_levels(n: int) -> dict[str, tuple[str, ...]]:
    """The names a width spec accepts for n blocks per stage, by level: the 3 stages, the 3n
    blocks, the 3n inner convs (the only convs off the residual stream)."""
    blocks = tuple(f"layer{s}.{i}" for s in (1, 2, 3) for i in range(n))
    return {
        "stage": ("layer1", "layer2", "layer3"),
        "block": blocks,
        "layer": tuple(f"{b}.conv1" for b in blocks),
    }


def _stream_layers(n: int) -> dict[str, str]:
    """{conv that writes a residual stream: its stage} for n blocks per stage."""
    out = {"conv1": "layer1"}
    for s in (1, 2, 3):
        for i in range(n):
            out |= {f"layer{s}.{i}.{c}": f"layer{s}" for c in ("conv2", "shortcut", "shortcut.0")}
    return out


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
