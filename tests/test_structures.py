"""The channel-rule table: every operation in it is read both by the analysis and by the surgery
(one table, no mirror), and an operation that is not in it fails loudly, naming the node."""

import operator
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sosp import counting
from sosp.attention import heads_attention
from sosp.channel_rules import FUNCTION_RULES, METHOD_RULES, MODULE_RULES
from sosp.selection import shuffled
from sosp.shortcuts import ZeroPadShortcut
from sosp.structures import Unsupported, analyze
from sosp.surgery import build_pruned, soft_masked
from tests.tiny_nets import CONSTRUCTS, TinyNet, randomized

SHAPE = (3, 8, 8)


class Probe(nn.Module):
    """x [3, 8, 8] -> conv a [6] -> `op` [c_out] -> conv [5] -> spatial mean -> fc [3]: every
    channel entering and leaving `op` is written by a prunable layer or read by one."""

    def __init__(self, op: nn.Module, c_out: int = 6):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.op = op
        self.c = nn.Conv2d(c_out, 5, 1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(self.c(self.op(self.a(x))).mean((2, 3)))


class ZeroPadBlock(nn.Module):
    """A residual block whose shortcut zero-pads 6 channels to 8 and subsamples by 2."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.shortcut = ZeroPadShortcut(6, 8, 2)

    def forward(self, x):
        return self.conv(x) + self.shortcut(x)


def _head() -> nn.Sequential:
    """x [3, 8, 8] -> conv [6] -> flatten after pooling to 2x2 -> Linear [4] -> BN1d -> fc."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 4),
        nn.BatchNorm1d(4),
        nn.Linear(4, 3),
    )


class SqueezeExcite(nn.Module):
    """x [6] -> x * gate(expand(relu(reduce(mean(x))))), the gate `gate` (a module or a
    function), the product `product`."""

    def __init__(self, gate=torch.sigmoid, product=operator.mul):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(6, 2, 1), nn.Conv2d(2, 6, 1)
        self.gate, self.product = gate, product

    def forward(self, x):
        e = self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True))))
        return self.product(x, self.gate(e))


class ChannelsLast(nn.Module):
    """`op` on x permuted to channels-last, then permuted back (`permute` the permute)."""

    def __init__(self, op: nn.Module, permute=lambda x, dims: x.permute(*dims)):
        super().__init__()
        self.op, self.permute = op, permute

    def forward(self, x):
        return self.permute(self.op(self.permute(x, (0, 2, 3, 1))), (0, 3, 1, 2))


def _se(gate=torch.sigmoid, product=operator.mul):
    return lambda: Probe(SqueezeExcite(gate, product))


class _TorchAttentionProbe(nn.Module):
    """conv [6] -> tokens plus a position embedding (which keeps the attention's input whole)
    -> nn.MultiheadAttention (2 heads of 3, self-attention) -> fc on the mean token."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.pos = nn.Parameter(torch.randn(1, 64, 6))
        self.attn = nn.MultiheadAttention(6, 2, batch_first=True)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = self.conv(x).flatten(2).transpose(1, 2) + self.pos
        return self.fc(self.attn(x, x, x, need_weights=False)[0].mean(1))


# One network per module kind of the table, using it where its channels are pruned.
MODULE_EXAMPLES = {
    nn.Conv2d: lambda: Probe(nn.Conv2d(6, 6, 3, padding=1, groups=6)),  # depthwise; + writers
    nn.Linear: _head,
    nn.BatchNorm1d: _head,
    nn.BatchNorm2d: lambda: Probe(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(6))),  # consumer
    nn.Flatten: _head,
    ZeroPadShortcut: lambda: Probe(ZeroPadBlock(), c_out=8),
    nn.ReLU: lambda: Probe(nn.ReLU()),
    nn.ReLU6: lambda: Probe(nn.ReLU6()),
    nn.LeakyReLU: lambda: Probe(nn.LeakyReLU()),
    nn.ELU: lambda: Probe(nn.ELU()),
    nn.CELU: lambda: Probe(nn.CELU()),
    nn.SELU: lambda: Probe(nn.SELU()),
    nn.Mish: lambda: Probe(nn.Mish()),
    nn.Hardtanh: lambda: Probe(nn.Hardtanh()),
    nn.Softsign: lambda: Probe(nn.Softsign()),
    nn.Upsample: lambda: Probe(nn.Upsample(scale_factor=2)),
    nn.LayerNorm: lambda: Probe(ChannelsLast(nn.LayerNorm(6))),
    nn.GroupNorm: lambda: Probe(nn.GroupNorm(3, 6)),  # a consumer of 3 groups of 2
    nn.MultiheadAttention: _TorchAttentionProbe,
    nn.Sigmoid: _se(nn.Sigmoid()),
    nn.Hardsigmoid: _se(nn.Hardsigmoid()),
    nn.SiLU: lambda: Probe(nn.SiLU()),
    nn.GELU: lambda: Probe(nn.GELU()),
    nn.Hardswish: lambda: Probe(nn.Hardswish()),
    nn.Tanh: lambda: Probe(nn.Tanh()),
    nn.Identity: lambda: Probe(nn.Identity()),
    nn.Dropout: lambda: Probe(nn.Dropout()),
    nn.Dropout2d: lambda: Probe(nn.Dropout2d()),
    nn.MaxPool2d: lambda: Probe(nn.MaxPool2d(2)),
    nn.AvgPool2d: lambda: Probe(nn.AvgPool2d(2)),
    nn.AdaptiveAvgPool2d: lambda: Probe(nn.AdaptiveAvgPool2d(3)),
    nn.AdaptiveMaxPool2d: lambda: Probe(nn.AdaptiveMaxPool2d(3)),
}


class OpProbe(nn.Module):
    """x [3, 8, 8] -> convs a, b [6] -> `tail(a, b)` [B, k] -> fc [3]."""

    def __init__(self, tail, k: int = 6):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 3, padding=1)
        self.tail = tail
        self.fc = nn.Linear(k, 3)

    def forward(self, x):
        return self.fc(self.tail(self.a(x), self.b(x)))


class _HeadsProbe(nn.Module):
    """conv [6] -> tokens -> timm's Attention (2 heads of 3: its forward calls
    `heads_attention` while traced) -> fc on the mean token."""

    def __init__(self):
        super().__init__()
        from timm.layers import Attention

        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.attn = Attention(6, num_heads=2, qkv_bias=True)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.attn(self.conv(x).flatten(2).transpose(1, 2)).mean(1))


def _pooled(t):
    return F.adaptive_avg_pool2d(t, 1).flatten(1)


def _swapped(pieces):
    """Two pieces of a split, concatenated in the other order."""
    return torch.cat([pieces[1], pieces[0]], 1)


def _shuffled(t, transpose):
    """A channel shuffle of t's 6 channels in 2 groups, with the transpose `transpose`."""
    b, c, h, w = t.size()
    return transpose(t.view(b, 2, c // 2, h, w)).contiguous().view(b, c, h, w)


def _unary(f):
    """f applied to the residual sum a + b, then pooled."""
    return lambda: OpProbe(lambda a, b: _pooled(f(a + b)))


# One network per function and method of the table. fx records `a += b` (operator.iadd) as
# operator.add, and `*=` as operator.mul, so the in-place operators have rules that cannot be
# traced here. Shapes (`t.size(2)`) are no tensors and need no rule.
OP_EXAMPLES = {
    operator.add: _unary(lambda t: t),
    torch.add: lambda: OpProbe(lambda a, b: _pooled(torch.add(a, b))),
    operator.sub: lambda: OpProbe(lambda a, b: _pooled(F.avg_pool2d(a, 3, 1, 1) - b)),
    torch.sub: lambda: OpProbe(lambda a, b: _pooled(torch.sub(a, b))),
    torch.cat: lambda: OpProbe(lambda a, b: _pooled(torch.cat([a, b], 1)), k=12),
    torch.flatten: lambda: OpProbe(lambda a, b: torch.flatten(F.avg_pool2d(a, 4), 1), k=24),
    F.relu: _unary(F.relu),
    torch.relu: _unary(torch.relu),
    F.relu6: _unary(F.relu6),
    F.leaky_relu: _unary(F.leaky_relu),
    F.elu: _unary(F.elu),
    F.silu: _unary(F.silu),
    F.gelu: _unary(F.gelu),
    F.hardswish: _unary(F.hardswish),
    torch.tanh: _unary(torch.tanh),
    F.dropout: _unary(lambda t: F.dropout(t, training=False)),
    F.celu: _unary(F.celu),
    F.selu: _unary(F.selu),
    F.mish: _unary(F.mish),
    F.hardtanh: _unary(F.hardtanh),
    F.interpolate: _unary(lambda t: F.interpolate(t, scale_factor=2)),
    torch.sigmoid: _se(torch.sigmoid),
    F.hardsigmoid: _se(F.hardsigmoid),
    operator.mul: _se(),
    torch.mul: _se(product=torch.mul),
    operator.truediv: _se(lambda e: F.relu6(e + 3) / 6),
    torch.div: _se(lambda e: torch.div(F.relu6(e + 3), 6)),
    torch.split: _unary(lambda t: _swapped(torch.split(t, [2, 4], 1))),
    torch.chunk: _unary(lambda t: _swapped(torch.chunk(t, 2, 1))),
    operator.getitem: lambda: OpProbe(lambda a, b: _pooled((a + b)[:, 1:4]), k=3),
    torch.reshape: lambda: OpProbe(lambda a, b: torch.reshape(F.avg_pool2d(a, 4), (-1, 24)), 24),
    heads_attention: _HeadsProbe,
    F.pad: _unary(lambda t: F.avg_pool2d(F.pad(t, (1, 1, 1, 1), mode="reflect"), 2)),
    torch.permute: lambda: Probe(ChannelsLast(nn.Linear(6, 6), torch.permute)),
    torch.transpose: _unary(lambda t: _shuffled(t, lambda v: torch.transpose(v, 1, 2))),
    F.max_pool2d: _unary(lambda t: F.max_pool2d(t, 2)),
    F.avg_pool2d: _unary(lambda t: F.avg_pool2d(t, 2)),
    F.adaptive_avg_pool2d: _unary(lambda t: F.adaptive_avg_pool2d(t, 3)),
    F.adaptive_max_pool2d: _unary(lambda t: F.adaptive_max_pool2d(t, 3)),
    "add": lambda: OpProbe(lambda a, b: _pooled(a.add(b))),
    "add_": lambda: OpProbe(lambda a, b: _pooled(a.add_(b))),
    "sub": lambda: OpProbe(lambda a, b: _pooled(a.sub(b))),
    "flatten": lambda: OpProbe(lambda a, b: F.avg_pool2d(a, 4).flatten(1), k=24),
    "mean": lambda: OpProbe(lambda a, b: (a + b).mean((2, 3))),
    "mul": _se(product=lambda x, g: x.mul(g)),
    "mul_": _se(product=lambda x, g: x.mul_(g)),
    "div": _se(lambda e: F.relu6(e + 3).div(6)),
    "div_": _se(lambda e: F.relu6(e + 3).div_(6)),
    "split": _unary(lambda t: _swapped(t.split([4, 2], dim=1))),
    "chunk": _unary(lambda t: _swapped(t.chunk(2, dim=1))),
    "sigmoid": _se(lambda e: e.sigmoid()),
    "sigmoid_": _se(lambda e: e.sigmoid_()),
    "tanh_": _unary(lambda t: t.tanh_()),
    "view": _unary(lambda t: _shuffled(t, lambda v: v.transpose(1, 2))),
    "reshape": lambda: OpProbe(lambda a, b: F.avg_pool2d(a, 4).reshape(a.size(0), -1), k=24),
    "permute": lambda: Probe(ChannelsLast(nn.Sequential(nn.LayerNorm(6), nn.Linear(6, 6)))),
    "transpose": _unary(lambda t: _shuffled(t, lambda v: v.transpose(2, 1))),
    "relu": _unary(lambda t: t.relu()),
    "relu_": _unary(lambda t: t.relu_()),
    "contiguous": _unary(lambda t: t.contiguous()),
    "tanh": _unary(lambda t: t.tanh()),
}
UNTRACEABLE = {operator.iadd, operator.imul}


def _check_pruned_equals_soft_mask(model: nn.Module) -> None:
    """For random masks, the network surgery builds computes what the soft-masked one does, and
    has fewer parameters."""
    model = randomized(model)
    graph = analyze(model, SHAPE)
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    rng = random.Random(0)
    for _ in range(3):
        pruned = []
        for idx in graph.layer_structures().values():
            pruned += rng.sample(idx, rng.randint(1, len(idx) - 1))
        small = build_pruned(graph, pruned).eval()
        with torch.no_grad():
            torch.testing.assert_close(small(x), soft_masked(model, graph, pruned).eval()(x))
        assert counting.count_params(small) < counting.count_params(model)


@pytest.mark.parametrize("kind", list(MODULE_RULES), ids=lambda t: t.__name__)
def test_every_module_rule_serves_analysis_and_surgery(kind):
    """Each module kind in the table (a rule added without an example fails here) is accepted
    by the analysis and rebuilt by the surgery into a network equal to the soft-masked one."""
    assert kind in MODULE_EXAMPLES, f"add an example network for {kind.__name__}"
    model = MODULE_EXAMPLES[kind]()
    assert any(type(m) is kind for m in model.modules())
    _check_pruned_equals_soft_mask(model)


@pytest.mark.parametrize(
    "target",
    [t for t in [*FUNCTION_RULES, *METHOD_RULES] if t not in UNTRACEABLE],
    ids=lambda t: f"Tensor.{t}" if isinstance(t, str) else f"{t.__module__}.{t.__name__}",
)
def test_every_function_and_method_rule_serves_analysis_and_surgery(target):
    """Each function and method in the table (a rule added without an example fails here)
    appears in its example's graph, which the analysis accepts and the surgery rebuilds into a
    network equal to the soft-masked one."""
    assert target in OP_EXAMPLES, f"add an example network for {target}"
    model = OP_EXAMPLES[target]()
    graph = analyze(randomized(model), SHAPE)
    assert any(n.target == target for n in graph.gm.graph.nodes if n.op.startswith("call_"))
    _check_pruned_equals_soft_mask(model)


def test_depthwise_conv_and_shared_batchnorm_are_consumers():
    """The Conv2d rule makes a depthwise conv a consumer; the BN rule makes a BN a consumer
    unless it alone reads a writer's output, then it is that writer's private BN."""
    graph = analyze(MODULE_EXAMPLES[nn.Conv2d](), SHAPE)
    assert [c.name for c in graph.consumers] == ["op"]
    graph = analyze(MODULE_EXAMPLES[nn.BatchNorm1d](), SHAPE)
    assert graph.layers["3"].bn == "4" and not graph.consumers


class _InstanceNormProbe(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.norm = nn.InstanceNorm2d(6, affine=True)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(self.norm(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize(
    "model, match",
    [
        (_InstanceNormProbe(), r"node 'norm'.*InstanceNorm2d"),
        (OpProbe(lambda a, b: _pooled(torch.sigmoid(a))), r"node 'fc'.*passed 'sigmoid'"),
        (OpProbe(lambda a, b: _pooled(a.softmax(1))), r"node 'softmax'"),
        (OpProbe(lambda a, b: _pooled(a + 1.0)), r"node 'fc'.*passed 'add'.*zero to nonzero"),
        (OpProbe(lambda a, b: _pooled(a * b)), r"node 'mul'.*two feature maps"),
        (OpProbe(lambda a, b: a.mean(1).mean(1), k=8), r"node 'mean'.*channel"),
        (OpProbe(lambda a, b: a.mean(-3).mean(-1), k=8), r"node 'mean'.*channel"),
        (OpProbe(lambda a, b: torch.flatten(a, 1, 2).mean(-1), k=48), r"'flatten'.*dim 2"),
        (
            nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Flatten(1, 2), nn.Linear(8, 3)),
            r"call_module 1\).*dim 2",
        ),
    ],
    ids=[
        "module",
        "function",
        "method",
        "add_constant",
        "product",
        "channel_mean",
        "channel_mean_negative_dim",
        "partial_flatten",
        "partial_flatten_module",
    ],
)
def test_operation_outside_the_table_fails_naming_the_node(model, match):
    """A module, function or method without a rule, or one its rule cannot prove channel-safe,
    raises Unsupported naming the node."""
    with pytest.raises(Unsupported, match=match):
        analyze(model, SHAPE)


def test_model_made_for_other_inputs_fails_in_one_line_naming_the_fix():
    """A 3-channel 32-px ResNet analyzed on digits' 1x8x8 samples stops with BadInput: one
    line holding the conv's own complaint and the in_channels/image_size fix, no fx dump."""
    from sosp import models
    from sosp.errors import BadInput

    with pytest.raises(BadInput) as e:
        analyze(models.create("resnet20", 10), (1, 8, 8))
    text = str(e.value)
    assert "\n" not in text and "expected input[1, 1, 8, 8] to have 3 channels" in text
    assert "in_channels=1, image_size=8" in text


EXCHANGE_NETS = {"tiny": TinyNet, **{name: net for name, (net, _) in CONSTRUCTS.items()}}


@pytest.mark.parametrize("coupling", ["filter", "stream"])
@pytest.mark.parametrize("name", list(EXCHANGE_NETS))
def test_exchanging_alike_units_keeps_the_pruned_architecture(name, coupling):
    """`exchangeable` covers every structure once, its units of a group have the same layers
    at each position, and shuffling random masks among them builds networks with the params
    and the layer widths (so the MACs) of the mask's (brute force through surgery)."""
    graph = analyze(EXCHANGE_NETS[name](), (2, 4, 4), coupling=coupling)
    groups = graph.exchangeable()
    units = [u for units in groups for u in units]
    assert sorted(s for u in units for s in u) == list(range(len(graph.structures)))
    for units in groups:
        assert len({tuple(graph.structures[s][0] for s in u) for u in units}) == 1
    rng = random.Random(0)
    for seed in range(3):
        mask = [s for s in range(len(graph.structures)) if rng.random() < 0.4]
        other = shuffled(mask, groups, seed)
        assert len(other) == len(mask)
        nets = [build_pruned(graph, m) for m in (mask, other)]
        assert counting.count_params(nets[0]) == counting.count_params(nets[1])
        assert _widths(nets[0]) == _widths(nets[1])


def test_shuffling_a_whole_stream_channel_prunes_another_whole_one():
    """ResNet-20 with zero-padding shortcuts, filter coupling: the mask pruning every filter
    that writes stream channel 3 (stem, stage-1 blocks, and through the shortcuts the later
    stages' blocks) removes that channel from all three streams; its shuffle removes another
    whole stream channel: the same widths and counts."""
    from sosp import models

    model = models.create("resnet20_zeropad", 10, in_channels=1, image_size=8)
    graph = analyze(model, (1, 8, 8))
    groups = graph.exchangeable()
    stem = next(units for units in groups if graph.structures[units[0][0]] == ("conv1", 0))
    unit = list(next(u for u in stem if graph.structures[u[0]] == ("conv1", 3)))
    assert {graph.structures[s][0] for s in unit} >= {"layer1.2.conv2", "layer3.2.conv2"}
    other = shuffled(unit, groups, 0)
    assert other != unit and other in [list(u) for u in stem]
    nets = [build_pruned(graph, m) for m in (unit, other)]
    assert counting.count(nets[0], (1, 8, 8)) == counting.count(nets[1], (1, 8, 8))
    assert _widths(nets[0]) == _widths(nets[1])
    assert [net.get_submodule("layer3.1.conv1").in_channels for net in nets] == [63, 63]


def _widths(net: nn.Module) -> dict[str, tuple[int, int]]:
    """(in, out) channels of every conv and linear layer of `net`."""
    return {
        name: tuple(m.weight.shape[:2])
        for name, m in net.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


class _OptionalArgument(nn.Module):
    """forward(x, mask=None), as timm's ViTs take an attention mask: fx traces `mask` as a
    second placeholder, which holds no tensor when left at its default."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x, mask=None):
        return self.fc(self.conv(x).mean((2, 3)))


def test_an_optional_argument_left_at_its_default_is_no_input():
    """The unused placeholder is skipped (it raised KeyError 'tensor_meta'): conv's 3 filters
    are the structures."""
    graph = analyze(_OptionalArgument(), (2, 4, 4))
    assert graph.structures == [("conv", 0), ("conv", 1), ("conv", 2)]
