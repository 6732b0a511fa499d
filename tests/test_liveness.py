"""Liveness: surgery lets a residual sum add its branch into the stream's own memory only where
nothing reads that memory after the sum, and a pruned network computes the same with autograd
(sums into copies) and without it (sums into the stream)."""

import random

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from sosp import models
from sosp.liveness import allocation_of
from sosp.shortcuts import IndexAdd
from sosp.structures import analyze
from sosp.surgery import build_pruned, soft_masked
from tests.test_surgery import random_mask
from tests.tiny_nets import randomized


class Blocks(nn.Module):
    """A stem and two residual blocks with identity shortcuts; with `read_after`, the stem's
    output is read again after the first sum. Input [B, 2, 6, 6], 3 outputs."""

    def __init__(self, read_after: bool):
        super().__init__()
        self.read_after = read_after
        self.stem, self.bn0 = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        a = F.relu(self.bn0(self.stem(x)))
        b = F.relu(self.bn1(self.conv1(a)) + a)
        c = F.relu(self.bn2(self.conv2(b)) + b)
        if self.read_after:
            c = c + a
        return self.fc(c.mean((2, 3)))


def pruned_blocks(read_after: bool) -> tuple:
    """(the dense Blocks, its graph, the pruned structures: two filters of conv1 and of
    conv2, the pruned network)."""
    model = randomized(Blocks(read_after), dtype=torch.float32).eval()
    graph = analyze(model, (2, 6, 6))
    pruned = [i for i, (name, c) in enumerate(graph.structures) if name != "stem" and c < 2]
    return model, graph, pruned, build_pruned(graph, pruned).eval()


def overwrites(small: nn.Module) -> dict[str, bool]:
    return {n: m.overwrite for n, m in small.named_modules() if isinstance(m, IndexAdd)}


@pytest.mark.parametrize("read_after", [False, True])
def test_a_sum_adds_into_its_stream_only_where_nothing_reads_it_later(read_after):
    """Both sums add into their streams where each stream is read only before its sum; where
    the stem's output is read after the first sum, that sum adds into a copy (the second still
    may). Either way the pruned network equals the soft-masked one without autograd (where the
    overwrite happens) and with it."""
    model, graph, pruned, small = pruned_blocks(read_after)
    assert sorted(overwrites(small).values()) == ([False, True] if read_after else [True, True])
    x = torch.randn(3, 2, 6, 6)
    want = soft_masked(model, graph, pruned).eval()(x)
    with torch.no_grad():
        torch.testing.assert_close(small(x), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(small(x), want, rtol=1e-5, atol=1e-5)


def test_overwrite_waits_for_autograd_to_be_off():
    """With autograd on, the sums add into copies: a backward pass through the pruned network
    runs (an overwritten conv input would fail it) and the stem's gradient equals the
    soft-masked network's."""
    model, graph, pruned, small = pruned_blocks(False)
    x = torch.randn(3, 2, 6, 6)
    masked = soft_masked(model, graph, pruned).eval()
    small(x).square().sum().backward()
    masked(x).square().sum().backward()
    assert small.stem.weight.grad.abs().sum() > 0
    torch.testing.assert_close(small.stem.weight.grad, masked.stem.weight.grad)


@pytest.mark.parametrize("name", ["resnet20", "resnet18"])
def test_residual_networks_add_into_their_streams_and_compute_the_same(name):
    """In a pruned CIFAR ResNet (out-of-place sums, F.relu) and a torchvision ResNet (`out +=
    identity`, in-place ReLU modules), the sums of blocks whose shortcut is the identity add
    into the stream, and the network computes the same with and without autograd."""
    model = randomized(models.create(name, 10, 3, 16), dtype=torch.float32).eval()
    graph = analyze(model, (3, 16, 16), exclude="resnet_downsample")
    small = build_pruned(graph, random_mask(graph, random.Random(1))).eval()
    flags = overwrites(small)
    assert flags and sum(flags.values()) >= len(flags) - 3  # all but the downsampling blocks'
    x = torch.randn(2, 3, 16, 16)
    with_grad = small(x)
    with torch.inference_mode():
        torch.testing.assert_close(small(x), with_grad, rtol=1e-5, atol=1e-5)


def test_views_and_graph_inputs_have_no_known_allocation():
    """A slice (a view) and the graph's input are memory liveness cannot follow: None; a conv's
    output is its own allocation, and an in-place ReLU's is its input's."""
    m = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(inplace=True))
    gm = fx.symbolic_trace(lambda x: x[:, :1])
    nodes = {n.name: n for n in gm.graph.nodes}
    assert allocation_of(gm, nodes["getitem"]) is None
    assert allocation_of(gm, nodes["x"]) is None
    gm = fx.symbolic_trace(m)
    nodes = {n.name: n for n in gm.graph.nodes}
    assert allocation_of(gm, nodes["_1"]) is nodes["_0"]
