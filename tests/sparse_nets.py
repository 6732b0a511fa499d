"""A tiny network of every prunable kind for the weight-pruning tests: a strided conv, a
grouped conv, a linear layer on positions, and the classifier. Input [B, 2, 6, 6], 3 outputs."""

import torch
from torch import nn


class SparseTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)  # 6x6 -> 6x6
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2, bias=False)  # -> 3x3
        self.mix = nn.Linear(4, 5)  # applied at each of the 9 positions
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        a = torch.relu(self.bn1(self.conv1(x)))
        b = torch.relu(self.conv2(a))  # [B, 4, 3, 3]
        c = self.mix(b.permute(0, 2, 3, 1))  # [B, 3, 3, 5]
        return self.fc(c.mean((1, 2)))


INPUT_SHAPE = (2, 6, 6)
# multiply-adds per sample of each layer, written out: positions x weights
DENSE_FLOPS = {
    "conv1.weight": 36 * (4 * 2 * 9),
    "conv2.weight": 9 * (4 * 2 * 9),
    "mix.weight": 9 * (5 * 4),
    "fc.weight": 1 * (3 * 5),
}
