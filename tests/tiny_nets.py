"""Networks small enough to form Jacobians and Hessians explicitly, with their structures'
parameters written out by hand (independent of `sosp.structures`)."""

import torch
import torch.nn.functional as F
from torch import nn


class TinyNet(nn.Module):
    """conv+BN, a residual sum, a concatenation read by a pre-activation (consumer) BN, a
    hidden linear layer, and the classifier. Input [B, 2, 4, 4], 3 outputs. `affine=False`
    gives bn1 no gamma/beta."""

    def __init__(self, affine: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)  # with bias
        self.bn1 = nn.BatchNorm2d(3, affine=affine)
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


def tiny_theta(affine: bool = True) -> dict[tuple[str, int], list[tuple[str, int]]]:
    """TinyNet's structures in graph order -> the (parameter, index along dim 0) entries of
    theta_s, read off the forward pass: the slices whose zeroing makes the channel zero.
    Channels 0-2 of bn3 carry the residual stream (written by conv1 and conv2), so they
    belong to no single structure; channels 3-4 are conv3's alone."""
    theta = {}
    for c in range(3):
        bn = [("bn1.weight", c), ("bn1.bias", c)] if affine else []
        theta[("conv1", c)] = [("conv1.weight", c), ("conv1.bias", c), *bn]
    for c in range(3):
        theta[("conv2", c)] = [("conv2.weight", c), ("bn2.weight", c), ("bn2.bias", c)]
    for c in range(2):
        theta[("conv3", c)] = [("conv3.weight", c), ("bn3.weight", 3 + c), ("bn3.bias", 3 + c)]
    for c in range(4):
        theta[("hidden", c)] = [("hidden.weight", c), ("hidden.bias", c)]
    return theta


def tiny_theta_stream(affine: bool = True) -> dict[tuple[str, int], list[tuple[str, int]]]:
    """TinyNet's structures with coupling="stream": channel c of the residual stream (written
    by conv1 and conv2, read by bn3's channel c) is one structure, named after its first
    writer ("conv1", c); theta_s is the union of both writers' slices and bn3's slice of the
    channel, which now belongs to that one structure. conv3 and hidden are unchanged."""
    alone = tiny_theta(affine)
    theta = {}
    for c in range(3):
        theta[("conv1", c)] = [
            *alone[("conv1", c)],
            *alone[("conv2", c)],
            ("bn3.weight", c),
            ("bn3.bias", c),
        ]
    for s, entries in alone.items():
        if s[0] in ("conv3", "hidden"):
            theta[s] = entries
    return theta


def randomized(model: nn.Module, seed: int = 0, dtype=torch.float64) -> nn.Module:
    """`model` in `dtype` and eval mode with random (non-trivial) BN statistics and affines."""
    g = torch.Generator().manual_seed(seed)
    model = model.to(dtype).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.randn(m.num_features, generator=g))
                    m.bias.copy_(torch.randn(m.num_features, generator=g))
    return model
