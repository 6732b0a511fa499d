"""The per-operation channel rules: one table, read by the analysis (`sosp.structures`) and by
the surgery and soft mask (`sosp.surgery`).

Every traced node is looked up here, a module node by its module's type (or nearest base class)
in `MODULE_RULES`, a function or method node by its target in `FUNCTION_RULES` or
`METHOD_RULES`. A rule states

- `role` (modules): what the op is to the analysis. A WRITER creates one new channel per output
  channel (Conv2d with groups=1, Linear). A NORM scales and shifts each channel with its own
  parameters; it belongs to the writer whose output only it reads (a private BatchNorm), else
  it is a consumer. A CONSUMER acts per channel with its own parameters on channels it does not
  write (a depthwise Conv2d). A MAP has no parameters.
- `sources`: the channel sources of the output from those of the input: per channel, the set
  of writer-channel ids feeding it. NORM and CONSUMER keep them; a MAP keeps channels apart and
  maps a zero channel to a zero channel (ReLU, pooling), or moves channels (flatten, a
  zero-padding shortcut), or merges them (a residual sum).
- `shrink` (modules): the module rebuilt for kept output and input channels, None where it
  needs no change; `zero` (modules): make output channels exactly zero in place (soft mask).
- `rewire` (functions, methods): what surgery changes in the graph around the node.

A node with no rule, or whose arguments its rule cannot prove channel-safe, raises
`Unsupported` naming the node. Supporting a new operation means adding its rule here.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Sequence
from enum import Enum

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from sosp.errors import BadInput
from sosp.shortcuts import ChannelScatter, IndexAdd, Subsample, ZeroPadShortcut

Sources = list[frozenset[int]]  # per channel: ids of the writer channels that feed it
Kept = dict[str, list[int]]  # node name -> kept channels of its output


class Unsupported(BadInput):
    """The model contains an operation whose channel semantics the analysis cannot prove."""


def unsupported(node: fx.Node, what: str) -> Unsupported:
    """The error for a node the table cannot prune through, naming the node."""
    return Unsupported(
        f"cannot prune through node {node.name!r} ({node.op} {node.target}): {what}. "
        "The supported operations are the rules of sosp/channel_rules.py; add one there, "
        "or change the model."
    )


class Role(Enum):
    """What a module is to the analysis (module docstring)."""

    WRITER = "writer"
    NORM = "norm"
    CONSUMER = "consumer"
    MAP = "map"


def slice_params(m: nn.Module) -> list[nn.Parameter]:
    """The parameters of `m` indexed by output channel along dim 0: weight and bias."""
    return [p for p in (getattr(m, "weight", None), getattr(m, "bias", None)) if p is not None]


@torch.no_grad()
def _select(t: torch.Tensor, idx: Sequence[int], dim: int = 0) -> torch.Tensor:
    """A copy of `t` with entries `idx` along `dim`."""
    return t.index_select(dim, torch.tensor(list(idx), dtype=torch.long, device=t.device))


def _shrink_bias(m: nn.Module, out_idx: Sequence[int]) -> None:
    if m.bias is not None:
        m.bias = nn.Parameter(_select(m.bias, out_idx))


# -- module rules -----------------------------------------------------------------------------
class ModuleRule:
    """A parameter-free module that keeps channels apart and maps a zero channel to a zero
    channel (activations, dropout, pooling): sources pass through, surgery keeps it as is."""

    def role(self, node: fx.Node, m: nn.Module) -> Role:
        return Role.MAP

    def sources(self, node: fx.Node, m: nn.Module, x: Sources) -> Sources:
        """Sources of the output [C_out] for sources `x` [C_in] of the input (not for WRITER)."""
        return x

    def shrink(self, m: nn.Module, out_idx: list[int], in_idx: list[int]) -> nn.Module | None:
        """A new `m` with output channels `out_idx` and input channels `in_idx` of the old one;
        None where `m` needs no change."""
        return None

    def zero(self, m: nn.Module, channels: list[int]) -> None:
        """Make output channels `channels` of `m` zero for a zero input channel (for a writer,
        for any input), in place."""
        for p in slice_params(m):
            p[channels] = 0


class Conv2dRule(ModuleRule):
    """A writer with groups=1; a consumer when depthwise (groups = C_in = C_out)."""

    def role(self, node: fx.Node, m: nn.Conv2d) -> Role:
        if m.groups == 1:
            return Role.WRITER
        if m.groups == m.in_channels == m.out_channels:
            return Role.CONSUMER
        raise unsupported(node, f"grouped convolution with {m.groups} groups")

    def shrink(self, m: nn.Conv2d, out_idx: list[int], in_idx: list[int]) -> nn.Conv2d:
        m = copy.deepcopy(m)
        weight = _select(m.weight, out_idx)  # [C_out, C_in / groups, k_h, k_w]
        if m.groups > 1:  # depthwise: its input channels are its output channels
            m.groups = m.in_channels = len(out_idx)
        else:
            weight = _select(weight, in_idx, 1)
            m.in_channels = len(in_idx)
        m.weight = nn.Parameter(weight)
        _shrink_bias(m, out_idx)
        m.out_channels = len(out_idx)
        return m


class LinearRule(ModuleRule):
    """A writer."""

    def role(self, node: fx.Node, m: nn.Linear) -> Role:
        return Role.WRITER

    def shrink(self, m: nn.Linear, out_idx: list[int], in_idx: list[int]) -> nn.Linear:
        m = copy.deepcopy(m)
        m.weight = nn.Parameter(_select(_select(m.weight, out_idx), in_idx, 1))  # [out, in]
        _shrink_bias(m, out_idx)
        m.out_features, m.in_features = len(out_idx), len(in_idx)
        return m


class BatchNormRule(ModuleRule):
    """A norm with running statistics. One without (`track_running_stats=False`) is refused:
    it normalizes by batch statistics even in eval mode, so samples interact. A subclass may
    hold channel-wise modules applied after the norm (timm's BatchNormAct2d: drop, act); they
    must be positively homogeneous (`HOMOGENEOUS_MODULES`): the structure gate at the module's
    output then equals scaling gamma and beta, as SOSP's saliencies assume, to every order."""

    def role(self, node: fx.Node, m: nn.modules.batchnorm._BatchNorm) -> Role:
        for name, inner in m.named_children():  # a fused norm-activation (timm's BatchNormAct2d)
            if not isinstance(inner, HOMOGENEOUS_MODULES):
                raise Unsupported(
                    f"{type(m).__name__} {node.target!r} applies {type(inner).__name__} "
                    f"({node.target}.{name}) inside the norm module; SOSP's structure gates sit "
                    "at a module's output, which equals scaling the norm's gamma and beta only "
                    "for an activation with act(c z) = c act(z) (ReLU, LeakyReLU, Identity, "
                    "Dropout); build the norm with one of those, or as a plain BatchNorm "
                    "followed by its activation module"
                )
        if not m.track_running_stats:
            raise Unsupported(
                f"BatchNorm {node.target!r} has track_running_stats=False: it normalizes "
                "every batch by its own statistics, even in eval mode, so samples interact "
                "and per-sample derivatives are undefined. Build it with "
                "track_running_stats=True and prune with recalibrate_bn=True"
            )
        return Role.NORM

    def shrink(self, m: nn.Module, out_idx: list[int], in_idx: list[int]) -> nn.Module:
        m = copy.deepcopy(m)
        if m.affine:
            m.weight = nn.Parameter(_select(m.weight, out_idx))
            m.bias = nn.Parameter(_select(m.bias, out_idx))
        if m.track_running_stats:
            m.running_mean = _select(m.running_mean, out_idx)
            m.running_var = _select(m.running_var, out_idx)
        m.num_features = len(out_idx)
        return m

    def zero(self, m: nn.Module, channels: list[int]) -> None:
        """Without gamma/beta the channel is (0 - mean) / std: a zero running mean makes it 0."""
        super().zero(m, channels)
        if not m.affine:
            m.running_mean[channels] = 0


def _shape(x_node: fx.Node) -> torch.Size:
    """The shape `trace` recorded for tensor node `x_node` (batch of one)."""
    return x_node.meta["tensor_meta"].shape


def _flattened(node: fx.Node, x_node: fx.Node, x: Sources, start_dim: int, end_dim: int) -> Sources:
    """Sources of [B, C * H * W] for sources `x` of [B, C, H, W] (`x_node`'s shape): only a
    flatten of every dim from the channels on keeps each channel a contiguous block."""
    shape = _shape(x_node)
    if start_dim != 1:
        raise unsupported(node, f"flatten from dim {start_dim}")
    if end_dim % len(shape) != len(shape) - 1:
        raise unsupported(node, f"flatten up to dim {end_dim}, not the last")
    per_channel = 1
    for d in shape[2:]:
        per_channel *= d
    return [s for s in x for _ in range(per_channel)]


class FlattenRule(ModuleRule):
    def sources(self, node: fx.Node, m: nn.Flatten, x: Sources) -> Sources:
        return _flattened(node, node.args[0], x, m.start_dim, m.end_dim)


class ZeroPadShortcutRule(ModuleRule):
    """Shifts the channels by `offset` between empty ones; surgery drops the empty ones."""

    def sources(self, node: fx.Node, m: ZeroPadShortcut, x: Sources) -> Sources:
        after = m.out_channels - m.in_channels - m.offset
        return [frozenset()] * m.offset + x + [frozenset()] * after

    def shrink(self, m: ZeroPadShortcut, out_idx: list[int], in_idx: list[int]) -> Subsample:
        return Subsample(m.stride)


# -- function and method rules ----------------------------------------------------------------
SourcesOf = Callable[[object], Sources]  # a tensor argument -> its sources; fails otherwise


class OpRule:
    """A function or method that keeps channels apart and maps a zero channel to a zero channel
    (relu, tanh, pooling): the sources of its first argument pass through."""

    def sources(self, node: fx.Node, src: SourcesOf) -> Sources | None:
        """Sources of the output; None for a result that is not a tensor."""
        return src(node.args[0])

    def rewire(self, gm: fx.GraphModule, node: fx.Node, kept: Kept) -> None:
        """Change the pruned graph `gm` around `node` (surgery); most ops need nothing."""


class AddRule(OpRule):
    """A residual sum: each channel's sources are the union of its operands'. In surgery the
    operand that keeps every channel of the sum (the stream) takes the other one in by one
    `IndexAdd`; where neither keeps them all, the first is first scattered into them."""

    IN_PLACE = (operator.iadd, "add_")

    def sources(self, node: fx.Node, src: SourcesOf) -> Sources:
        a, b = node.args[:2]
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            raise unsupported(node, "adding a constant does not preserve zero channels")
        if len(node.args) > 2 or node.kwargs:
            raise unsupported(node, "an add with alpha or out=")
        sa, sb = src(a), src(b)
        if len(sa) != len(sb):
            raise unsupported(node, "operands of different channel counts (broadcasting)")
        return [x | y for x, y in zip(sa, sb, strict=True)]

    def rewire(self, gm: fx.GraphModule, node: fx.Node, kept: Kept) -> None:
        out = kept[node.name]
        stream, branch = node.args[:2]
        if kept[stream.name] == out and kept[branch.name] == out:
            return
        inplace = node.target in self.IN_PLACE and kept[stream.name] == out
        if kept[stream.name] != out and kept[branch.name] == out:  # a sum commutes
            stream, branch = branch, stream
        where = {c: i for i, c in enumerate(out)}
        with gm.graph.inserting_before(node):
            if kept[stream.name] != out:
                stream = _call_new_module(
                    gm,
                    f"{node.name}_scatter",
                    ChannelScatter([where[c] for c in kept[stream.name]], len(out)),
                    (stream,),
                )
            added = _call_new_module(
                gm,
                f"{node.name}_index_add",
                IndexAdd([where[c] for c in kept[branch.name]], inplace),
                (stream, branch),
            )
        kept[added.name] = out  # later nodes read it in place of `node`
        node.replace_all_uses_with(added)
        gm.graph.erase_node(node)


def _call_new_module(gm: fx.GraphModule, name: str, m: nn.Module, args: tuple) -> fx.Node:
    """A node calling `m`, added to `gm` as submodule `name`, at the graph's insert point."""
    gm.add_submodule(name, m)
    return gm.graph.call_module(name, args)


def _arg(node: fx.Node, i: int, name: str, default: object) -> object:
    """Argument `name` of `node`, passed by keyword or as positional argument `i`."""
    return node.kwargs.get(name, node.args[i] if len(node.args) > i else default)


class CatRule(OpRule):
    """A concatenation along channels: the operands' sources, one after the other."""

    def sources(self, node: fx.Node, src: SourcesOf) -> Sources:
        dim = _arg(node, 1, "dim", 0)
        if dim != 1:
            raise unsupported(node, f"concatenation along dim {dim}")
        return [s for t in node.args[0] for s in src(t)]


class FlattenOpRule(OpRule):
    def sources(self, node: fx.Node, src: SourcesOf) -> Sources:
        x = node.args[0]
        start, end = _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1)
        return _flattened(node, x, src(x), start, end)


class MeanRule(OpRule):
    """A mean over spatial dims keeps channels; one over the batch or channel dim does not."""

    def sources(self, node: fx.Node, src: SourcesOf) -> Sources:
        x = src(node.args[0])
        dims = _arg(node, 1, "dim", None)
        dims = (dims,) if isinstance(dims, int) else dims
        ndim = len(_shape(node.args[0]))
        if dims is None or {d % ndim for d in dims} & {0, 1}:  # -3 of [B, C, H, W] is C
            raise unsupported(node, "a mean over the batch or channel dim")
        return x


class ShapeRule(OpRule):
    """`size()`, `dim()`: no tensor, no channels."""

    def sources(self, node: fx.Node, src: SourcesOf) -> None:
        return None


# -- the table --------------------------------------------------------------------------------
# Elementwise or spatial ops that map a zero channel to a zero channel and keep channels apart.
ZERO_PRESERVING_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Tanh,
    nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)  # fmt: skip
# act(c z) = c act(z) for c > 0: may sit inside a norm module (see BatchNormRule)
HOMOGENEOUS_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Dropout2d)
ZERO_PRESERVING_FUNCTIONS = (
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.silu, F.gelu, F.hardswish, torch.tanh,
    F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
)  # fmt: skip
ZERO_PRESERVING_METHODS = ("relu", "relu_", "contiguous", "tanh")

MODULE_RULES: dict[type[nn.Module], ModuleRule] = {
    nn.Conv2d: Conv2dRule(),
    nn.Linear: LinearRule(),
    nn.BatchNorm1d: BatchNormRule(),
    nn.BatchNorm2d: BatchNormRule(),
    nn.Flatten: FlattenRule(),
    ZeroPadShortcut: ZeroPadShortcutRule(),
    **{t: ModuleRule() for t in ZERO_PRESERVING_MODULES},
}
FUNCTION_RULES: dict[Callable, OpRule] = {
    operator.add: AddRule(),
    operator.iadd: AddRule(),
    torch.add: AddRule(),
    torch.cat: CatRule(),
    torch.flatten: FlattenOpRule(),
    **{f: OpRule() for f in ZERO_PRESERVING_FUNCTIONS},
}
METHOD_RULES: dict[str, OpRule] = {
    "add": AddRule(),
    "add_": AddRule(),
    "flatten": FlattenOpRule(),
    "mean": MeanRule(),
    "size": ShapeRule(),
    "dim": ShapeRule(),
    **{name: OpRule() for name in ZERO_PRESERVING_METHODS},
}


def module_rule(m: nn.Module) -> ModuleRule | None:
    """The rule of `m`'s type, or of its nearest base class that has one."""
    return next((MODULE_RULES[t] for t in type(m).__mro__ if t in MODULE_RULES), None)


def op_rule(node: fx.Node) -> OpRule | None:
    """The rule of a call_function or call_method node's target."""
    table = METHOD_RULES if node.op == "call_method" else FUNCTION_RULES
    return table.get(node.target)
