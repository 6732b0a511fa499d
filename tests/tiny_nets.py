"""Networks small enough to form Jacobians and Hessians explicitly."""

import torch
import torch.nn.functional as F
from torch import nn


class TinyNet(nn.Module):
    """conv+BN, a residual sum, a concatenation read by a pre-activation (consumer) BN, a
    hidden linear layer, and the classifier. Input [B, 2, 4, 4], 3 outputs."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)  # with bias
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(3)
        self.conv3 = nn.Conv2d(3, 2, 1, bias=False)  # concatenated branch, no BN
        self.bn3 = nn.BatchNorm2d(5)  # consumer of the concatenation
        self.hidden = nn.Linear(5, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        a = F.relu(self.bn1(self.conv1(x)))
        b = F.relu(self.bn2(self.conv2(a)) + a)
        c = F.relu(self.bn3(torch.cat([b, self.conv3(b)], 1)))
        return self.fc(torch.tanh(self.hidden(c.mean((2, 3)))))


def randomized(model: nn.Module, seed: int = 0, dtype=torch.float64) -> nn.Module:
    """`model` in `dtype` and eval mode with random (non-trivial) BN statistics and affines."""
    g = torch.Generator().manual_seed(seed)
    model = model.to(dtype).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return model
