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
- `zero_preserving`: False for an op whose zero input is not zero (sigmoid, adding a
  constant). Its output and everything computed from it is *tainted*: a dead channel there is
  not zero. A tainted tensor may gate a clean one by a product (squeeze-and-excitation:
  `x * sigmoid(e)`): the gate's channels then *follow* the gated ones (`Walk.tie`): they are
  no structures of their own and go exactly when the gated channel goes. Any other read of a
  tainted channel that can die fails.
- `links` (modules): writer ids that must be pruned together (the input and output channels
  of one group of a grouped convolution).
- `gate_site` (modules): where SOSP's structure gate on the module's output channels sits.

A node with no rule, or whose arguments its rule cannot prove channel-safe, raises
`Unsupported` naming the node. Supporting a new operation means adding its rule here.
"""

from __future__ import annotations

import copy
import itertools
import operator
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from math import prod
from typing import Protocol

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import TensorMetadata

from sosp.attention import heads_attention
from sosp.errors import BadInput
from sosp.modes import eval_mode
from sosp.shortcuts import (
    ChannelGather,
    ChannelGroupNorm,
    ChannelLayerNorm,
    ChannelScatter,
    IndexAdd,
    Subsample,
    ZeroPadShortcut,
)

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
def _select(t: torch.Tensor, idx: Sequence[int] | torch.Tensor, dim: int = 0) -> torch.Tensor:
    """A copy of `t` with entries `idx` (indices, or their tensor on `t`'s device) along
    `dim`."""
    if not isinstance(idx, torch.Tensor):
        idx = torch.tensor(list(idx), dtype=torch.long, device=t.device)
    return t.index_select(dim, idx)


def _copy_to_shrink(m: nn.Module, *replaced: str) -> nn.Module:
    """A deep copy of `m` in which the tensors named `replaced` (each of which the caller sets
    anew) are not copied, only shared until then: a copy costs an operation per tensor."""
    memo = {id(t): t for name in replaced if (t := getattr(m, name, None)) is not None}
    return copy.deepcopy(m, memo)


def _shrink_bias(m: nn.Module, out_idx: Sequence[int]) -> None:
    if m.bias is not None:
        m.bias = nn.Parameter(_select(m.bias, out_idx))


class Walk(Protocol):
    """What a rule sees of the analysis walking the graph (`sosp.structures`)."""

    def src(self, arg: object) -> Sources:
        """The sources of tensor argument `arg`; fails for anything else."""

    def is_tainted(self, arg: object) -> bool:
        """Whether `arg` is a tensor whose dead channels need not be zero (module docstring)."""

    def tie(self, node: fx.Node, value: fx.Node, gate: fx.Node) -> None:
        """Make gate's channel c follow value's channel c (product `node` = value * gate)."""

    def is_parameter(self, arg: object) -> bool:
        """Whether `arg` is a parameter of the model read directly (or a reshape of one)."""

    def link(self, groups: Iterable[frozenset[int]]) -> None:
        """Make each group of writer ids go together (one structure)."""

    def constants(self, n: int) -> Sources:
        """Sources of `n` channels that are never pruned: a parameter's (a class token, a
        position embedding) joined into a tensor of the network."""


# -- module rules -----------------------------------------------------------------------------
class ModuleRule:
    """A parameter-free module that keeps channels apart and maps a zero channel to a zero
    channel (activations, dropout, pooling): sources pass through, surgery keeps it as is."""

    zero_preserving = True
    channel_dim = 1  # of the output: 1 (NCHW, [B, C]) or -1 (a Linear, a channels-last norm)

    def role(self, node: fx.Node, m: nn.Module) -> Role:
        return Role.MAP

    def written(self, node: fx.Node, m: nn.Module, x: Sources, out: Sources) -> Sources:
        """A WRITER's output sources `out` (fresh ids) in the layout its input `x` implies;
        fails for an input layout the writer cannot read."""
        return out

    def sources(self, node: fx.Node, m: nn.Module, x: Sources) -> Sources:
        """Sources of the output [C_out] for sources `x` [C_in] of the input (not for WRITER)."""
        return x

    def links(self, m: nn.Module, x: Sources, out: Sources) -> list[frozenset[int]]:
        """Sets of writer ids that only go together, for input sources `x` and output
        sources `out` (a WRITER's fresh ids)."""
        return []

    def gate_site(self, m: nn.Module) -> tuple[nn.Module, str]:
        """(module, "output" or "input"): the tensor whose channels SOSP's structure gates
        scale, where the output channels of `m` are homogeneous of degree one in its slice."""
        return m, "output"

    def out_channels(self, m: nn.Module) -> int:
        """A WRITER's output channels."""
        return m.weight.shape[0]

    def theta_part(self, m: nn.Module) -> str:
        """The submodule of a WRITER `m` that holds its theta_s, along dim 0 of its weight and
        bias ("" for `m` itself): an attention block's output projection."""
        return ""

    def shrink(self, m: nn.Module, out_idx: list[int], in_idx: list[int]) -> nn.Module | None:
        """A new `m` with output channels `out_idx` and input channels `in_idx` of the old one;
        None where `m` needs no change."""
        return None

    def zero(self, m: nn.Module, channels: list[int]) -> None:
        """Make output channels `channels` of `m` zero for a zero input channel (for a writer,
        for any input), in place."""
        for p in slice_params(m):
            p[channels] = 0


class TaintingModuleRule(ModuleRule):
    """An elementwise module that maps zero to nonzero (nn.Sigmoid, nn.Hardsigmoid)."""

    zero_preserving = False


class ChannelsLast(list):
    """Sources of a tensor whose channels are its last dim (ConvNeXt's blocks: a permute to
    [B, H, W, C], a LayerNorm, Linear layers, a permute back)."""


def _check_channels_first(node: fx.Node, x: Sources) -> None:
    if isinstance(x, ChannelsLast | Blocked):
        raise unsupported(node, "its input's channels are not in dim 1")


class Conv2dRule(ModuleRule):
    """A writer; a consumer when depthwise (groups = C_in = C_out). A grouped convolution is
    a writer whose groups are pruned whole: the input channels of group k and its output
    channels are one set of `links`, so a structure holds every channel of the group (and,
    through the input, the channels of the writers before it), and the pruned convolution
    keeps groups of the same widths."""

    def role(self, node: fx.Node, m: nn.Conv2d) -> Role:
        if m.groups > 1 and m.groups == m.in_channels == m.out_channels:
            return Role.CONSUMER
        return Role.WRITER

    def written(self, node: fx.Node, m: nn.Conv2d, x: Sources, out: Sources) -> Sources:
        _check_channels_first(node, x)
        return out

    def sources(self, node: fx.Node, m: nn.Conv2d, x: Sources) -> Sources:
        _check_channels_first(node, x)  # a depthwise conv
        return x

    def links(self, m: nn.Conv2d, x: Sources, out: Sources) -> list[frozenset[int]]:
        if m.groups == 1:
            return []
        per_in, per_out = m.in_channels // m.groups, m.out_channels // m.groups
        ins = [frozenset().union(*x[k * per_in : (k + 1) * per_in]) for k in range(m.groups)]
        outs = [frozenset().union(*out[k * per_out : (k + 1) * per_out]) for k in range(m.groups)]
        return [i | o for i, o in zip(ins, outs, strict=True)]

    def shrink(self, m: nn.Conv2d, out_idx: list[int], in_idx: list[int]) -> nn.Conv2d:
        m = _copy_to_shrink(m, "weight", "bias")
        weight = _select(m.weight, out_idx)  # [C_out, C_in / groups, k_h, k_w]
        if m.groups == 1:
            weight = _select(weight, in_idx, 1)
            m.in_channels = len(in_idx)
        elif m.groups == m.in_channels == m.out_channels:  # depthwise: inputs are its outputs
            m.groups = m.in_channels = len(out_idx)
        else:  # whole groups kept (`links`)
            per_out = m.out_channels // m.groups
            m.groups, m.in_channels = len(out_idx) // per_out, len(in_idx)
            if m.in_channels != m.groups * weight.shape[1]:
                raise AssertionError(f"grouped conv keeps part of a group: {in_idx}, {out_idx}")
        m.weight = nn.Parameter(weight)
        _shrink_bias(m, out_idx)
        m.out_channels = len(out_idx)
        return m


class LinearRule(ModuleRule):
    """A writer on the last dim: of [B, C], or of a channels-last tensor."""

    channel_dim = -1

    def role(self, node: fx.Node, m: nn.Linear) -> Role:
        return Role.WRITER

    def written(self, node: fx.Node, m: nn.Linear, x: Sources, out: Sources) -> Sources:
        if isinstance(x, ChannelsLast):
            return ChannelsLast(out)
        if len(_shape(node.args[0])) != 2:
            raise unsupported(node, "a Linear layer on a dim other than the channels")
        return out

    def shrink(self, m: nn.Linear, out_idx: list[int], in_idx: list[int]) -> nn.Linear:
        m = _copy_to_shrink(m, "weight", "bias")
        m.weight = nn.Parameter(_select(_select(m.weight, out_idx), in_idx, 1))  # [out, in]
        _shrink_bias(m, out_idx)
        m.out_features, m.in_features = len(out_idx), len(in_idx)
        return m


_NORM_TENSORS, _NORM_STATS = ("weight", "bias"), ("running_mean", "running_var")


class AttentionRule(ModuleRule):
    """timm's multi-head self-attention on [B, N, C] tokens that `sosp.attention` cannot open
    (q/k norms, an output gate), as one writer: its input channels are read by `qkv` (shrunk
    along its input), its output channels written by `proj`, whose rows are the structures
    (theta_s and the gate live there); the heads inside are kept whole."""

    channel_dim = -1

    def role(self, node: fx.Node, m: nn.Module) -> Role:
        if getattr(m, "gate", None) is not None:
            raise unsupported(node, "an attention block with an output gate")
        return Role.WRITER

    def written(self, node: fx.Node, m: nn.Module, x: Sources, out: Sources) -> Sources:
        if not isinstance(x, ChannelsLast) or len(_shape(node.args[0])) != 3:
            raise unsupported(node, "attention on a tensor other than [B, N, C] tokens")
        return ChannelsLast(out)

    def out_channels(self, m: nn.Module) -> int:
        return m.proj.out_features

    def theta_part(self, m: nn.Module) -> str:
        return "proj"

    def gate_site(self, m: nn.Module) -> tuple[nn.Module, str]:
        return m.proj, "output"

    def shrink(self, m: nn.Module, out_idx: list[int], in_idx: list[int]) -> nn.Module:
        m = _copy_to_shrink(m, "qkv", "proj")
        linear = LinearRule()
        m.qkv = linear.shrink(m.qkv, list(range(m.qkv.out_features)), in_idx)
        m.proj = linear.shrink(m.proj, out_idx, list(range(m.proj.in_features)))
        return m

    def zero(self, m: nn.Module, channels: list[int]) -> None:
        for p in slice_params(m.proj):
            p[channels] = 0


class BatchNormRule(ModuleRule):
    """A norm with running statistics. One without (`track_running_stats=False`) is refused:
    it normalizes by batch statistics even in eval mode, so samples interact.

    A subclass may apply elementwise modules after the norm (timm's BatchNormAct2d: its
    `drop`, then its `act`); each must map zero to zero (ReLU, SiLU, GELU, Hardswish, ...),
    and the module must compute exactly its children applied in order to the norm's output
    (checked on a random input). SOSP's gate then sits at the input of the first child, where
    the channel is gamma * x_hat + beta, homogeneous of degree one in (gamma, beta), whatever
    the activation; the soft mask's zero gamma and beta give act(0) = 0."""

    def role(self, node: fx.Node, m: nn.modules.batchnorm._BatchNorm) -> Role:
        if not m.track_running_stats:
            raise Unsupported(
                f"BatchNorm {node.target!r} has track_running_stats=False: it normalizes "
                "every batch by its own statistics, even in eval mode, so samples interact "
                "and per-sample derivatives are undefined. Build it with "
                "track_running_stats=True and prune with recalibrate_bn=True"
            )
        for name, inner in m.named_children():  # a fused norm-activation
            if not is_zero_preserving_elementwise(inner):
                raise Unsupported(
                    f"{type(m).__name__} {node.target!r} applies {type(inner).__name__} "
                    f"({node.target}.{name}) inside the norm module, which does not map zero "
                    "to zero, so a pruned channel would not be zero after it; build the norm "
                    "with a zero-preserving activation (ReLU, SiLU, GELU, Hardswish, ...) or "
                    "as a plain BatchNorm followed by its activation module"
                )
        if any(True for _ in m.children()):
            _check_children_follow_norm(node, m)
        return Role.NORM

    def gate_site(self, m: nn.Module) -> tuple[nn.Module, str]:
        first = next(m.children(), None)
        return (m, "output") if first is None else (first, "input")

    def shrink(self, m: nn.Module, out_idx: list[int], in_idx: list[int]) -> nn.Module:
        m = _copy_to_shrink(
            m, *_NORM_TENSORS[: 2 * m.affine], *_NORM_STATS[: 2 * m.track_running_stats]
        )
        device = next(iter([*m.parameters(), *m.buffers()])).device
        idx = torch.tensor(out_idx, dtype=torch.long, device=device)
        if m.affine:
            m.weight = nn.Parameter(_select(m.weight, idx))
            m.bias = nn.Parameter(_select(m.bias, idx))
        if m.track_running_stats:
            m.running_mean = _select(m.running_mean, idx)
            m.running_var = _select(m.running_var, idx)
        m.num_features = len(out_idx)
        return m

    def zero(self, m: nn.Module, channels: list[int]) -> None:
        """Without gamma/beta the channel is (0 - mean) / std: a zero running mean makes it 0."""
        super().zero(m, channels)
        if not m.affine:
            m.running_mean[channels] = 0


@torch.no_grad()
def _check_children_follow_norm(node: fx.Node, m: nn.modules.batchnorm._BatchNorm) -> None:
    """Fail unless fused norm `m` computes its children, in order, on its norm's output."""
    p = next(m.parameters(), m.running_mean)
    x = torch.randn(*_shape(node.args[0]), generator=torch.Generator().manual_seed(0))
    x = x.to(p.device, p.dtype)
    with eval_mode(m):
        want = m(x)
        got = F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
        for inner in m.children():
            got = inner(got)
    if not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
        raise Unsupported(
            f"{type(m).__name__} {node.target!r} holds modules "
            f"({', '.join(n for n, _ in m.named_children())}) but does not compute them in "
            "order on its normalized output; SOSP cannot place its gates inside it"
        )


class LayerNormRule(ModuleRule):
    """A LayerNorm over the channels alone: nn.LayerNorm of a channels-last tensor or of
    [B, C] (`channel_dim` -1), or a LayerNorm2d of [B, C, H, W] (`channel_dim` 1). A norm with
    per-channel weight and bias like a BatchNorm, but its statistics run over the channels, so
    a zero (pruned) channel counts in them: surgery replaces it by a `ChannelLayerNorm` that
    keeps counting the removed channels as zeros."""

    def __init__(self, channel_dim: int):
        self.channel_dim = channel_dim

    def role(self, node: fx.Node, m: nn.LayerNorm) -> Role:
        if len(m.normalized_shape) != 1 or not m.elementwise_affine:
            raise unsupported(node, "a LayerNorm over more than one dim, or without affine")
        return Role.NORM

    def sources(self, node: fx.Node, m: nn.LayerNorm, x: Sources) -> Sources:
        channels_last = isinstance(x, ChannelsLast) or len(_shape(node.args[0])) == 2
        if channels_last != (self.channel_dim == -1):
            raise unsupported(node, "a LayerNorm over a dim other than the channels")
        return x

    def shrink(self, m: nn.LayerNorm, out_idx: list[int], in_idx: list[int]) -> nn.Module | None:
        total = m.normalized_shape[0]
        if len(out_idx) == total:
            return None
        return ChannelLayerNorm(
            _select(m.weight, out_idx), _select(m.bias, out_idx), total, m.eps, self.channel_dim
        )


class GroupNormRule(ModuleRule):
    """A GroupNorm: per-channel weight and bias like a BatchNorm (a writer's private norm, or
    a consumer), but its statistics run over each group of channels, so a zero (pruned)
    channel counts in its group's: surgery replaces it by a `ChannelGroupNorm` that keeps
    counting the removed channels as zeros. Its channels are the input's (a zero-preserving
    activation module after it, timm's fused GroupNormAct, has no rule yet)."""

    def role(self, node: fx.Node, m: nn.GroupNorm) -> Role:
        if not m.affine:  # a pruned channel would be -mean / std there, not zero
            raise unsupported(node, "a GroupNorm without affine parameters")
        if any(True for _ in m.children()):
            raise unsupported(node, "a GroupNorm with modules inside (a fused activation)")
        return Role.NORM

    def sources(self, node: fx.Node, m: nn.GroupNorm, x: Sources) -> Sources:
        _check_channels_first(node, x)
        return x

    def shrink(self, m: nn.GroupNorm, out_idx: list[int], in_idx: list[int]) -> nn.Module | None:
        if len(out_idx) == m.num_channels:
            return None
        per = m.num_channels // m.num_groups
        groups = [c // per for c in out_idx]
        return ChannelGroupNorm(
            _select(m.weight, out_idx),
            _select(m.bias, out_idx),
            groups,
            [per] * m.num_groups,
            m.eps,
        )


def _shape(x_node: fx.Node) -> torch.Size:
    """The shape `trace` recorded for tensor node `x_node` (batch of one)."""
    return x_node.meta["tensor_meta"].shape


def _flattened(node: fx.Node, x_node: fx.Node, x: Sources, start_dim: int, end_dim: int) -> Sources:
    """Sources of [B, C * H * W] for sources `x` of [B, C, H, W] (`x_node`'s shape): only a
    flatten of every dim from the channels on keeps each channel a contiguous block."""
    shape = _shape(x_node)
    if end_dim % len(shape) != len(shape) - 1:
        raise unsupported(node, f"flatten up to dim {end_dim}, not the last")
    if start_dim % len(shape) >= 2 and not isinstance(x, ChannelsLast | Blocked):
        return x  # [B, C, H, W] -> [B, C, H * W] (a patch embedding's tokens)
    if start_dim != 1:
        raise unsupported(node, f"flatten from dim {start_dim}")
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
class OpRule:
    """A function or method that keeps channels apart and maps a zero channel to a zero channel
    (relu, tanh, pooling, interpolation): the sources of its first argument pass through."""

    zero_preserving = True

    def sources(self, node: fx.Node, walk: Walk) -> Sources | None:
        """Sources of the output; None for a result that is not a tensor."""
        return walk.src(node.args[0])

    def tainted(self, node: fx.Node, walk: Walk) -> bool:
        """Whether the output's dead channels may be nonzero (module docstring)."""
        return not self.zero_preserving or any(walk.is_tainted(a) for a in node.all_input_nodes)

    def rewire(self, gm: fx.GraphModule, node: fx.Node, kept: Kept) -> None:
        """Change the pruned graph `gm` around `node` (surgery); most ops need nothing."""


class DropoutRule(OpRule):
    """`F.dropout(x, p, training)`: tracing fixed `training` to eval mode's False, so surgery
    puts an `nn.Dropout(p)` module in its place, which drops again when fine-tuned."""

    def rewire(self, gm: fx.GraphModule, node: fx.Node, kept: Kept) -> None:
        p = _arg(node, 1, "p", 0.5)
        with gm.graph.inserting_before(node):
            new = _call_new_module(gm, f"{node.name}_module", nn.Dropout(p), (node.args[0],))
        _replace(gm, node, new, kept)


class PadRule(OpRule):
    """F.pad of the spatial dims, with zeros or by reflecting or replicating: zero stays zero.
    Padding with another constant taints; padding the channels has no rule."""

    def sources(self, node: fx.Node, walk: Walk) -> Sources:
        if len(_arg(node, 1, "pad", ())) > 2 * (len(_shape(node.args[0])) - 2):
            raise unsupported(node, "padding of the channel dim")
        return walk.src(node.args[0])

    def tainted(self, node: fx.Node, walk: Walk) -> bool:
        constant = _arg(node, 2, "mode", "constant") == "constant"
        return (constant and (_arg(node, 3, "value", None) or 0) != 0) or super().tainted(
            node, walk
        )


class HeadsRule(OpRule):
    """`attention.heads_attention(qkv, H, D, scale)`: qkv's channels [3, H, D] (q, k, v) ->
    the heads' [H, D]. Each head's q, k and v channels go together (one structure: zeroing
    them zeroes the head's output, which surgery removes); output channel (h, d) is alive
    with its head. Surgery passes the kept number of heads."""

    def sources(self, node: fx.Node, walk: Walk) -> Sources:
        x, heads, dim = node.args[:3]
        src = walk.src(x)
        per = heads * dim
        if not isinstance(src, ChannelsLast) or len(src) != 3 * per:
            raise unsupported(node, "attention heads read from other than [B, N, 3 * H * D]")

        def head(h: int, d: int) -> frozenset[int]:
            return frozenset().union(*(src[t * per + h * dim + d] for t in range(3)))

        walk.link(frozenset().union(*(head(h, d) for d in range(dim))) for h in range(heads))
        return ChannelsLast(head(h, d) for h in range(heads) for d in range(dim))

    def rewire(self, gm: fx.GraphModule, node: fx.Node, kept: Kept) -> None:
        x, heads, dim, *rest = node.args
        node.args = (x, len(kept[node.name]) // dim, dim, *rest)


class TaintingRule(OpRule):
    """An elementwise op that maps zero to nonzero (sigmoid, hardsigmoid)."""

    zero_preserving = False


class AddRule(OpRule):
    """A residual sum: each channel's sources are the union of its operands'. In surgery the
    operand that keeps every channel of the sum (the stream) takes the other one in by one
    `IndexAdd`; where neither keeps them all, the first is first scattered into them. Adding
    a constant keeps the channels but taints them (0 + c is not 0)."""

    IN_PLACE = (operator.iadd, "add_")

    def sources(self, node: fx.Node, walk: Walk) -> Sources:
        a, b = node.args[:2]
        if len(node.args) > 2 or node.kwargs:
            raise unsupported(node, "an add with alpha or out=")
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            return walk.src(a if isinstance(a, fx.Node) else b)
        if walk.is_parameter(a) or walk.is_parameter(b):  # a position embedding
            x, p = (b, a) if walk.is_parameter(a) else (a, b)
            sx = walk.src(x)
            if _shape(p)[-1] != len(sx) or not isinstance(sx, ChannelsLast):
                raise unsupported(node, "a parameter added other than per channel of [B, N, C]")
            node.meta["channel_dim"] = -1
            return ChannelsLast(s | c for s, c in zip(sx, walk.constants(len(sx)), strict=True))
        sa, sb = walk.src(a), walk.src(b)
        if len(sa) != len(sb):
            raise unsupported(node, "operands of different channel counts (broadcasting)")
        out = [x | y for x, y in zip(sa, sb, strict=True)]
        if isinstance(sa, ChannelsLast) != isinstance(sb, ChannelsLast):
            raise unsupported(node, "a sum of operands with channels in different dims")
        if isinstance(sa, ChannelsLast):
            node.meta["channel_dim"] = -1
            return ChannelsLast(out)
        return out

    def tainted(self, node: fx.Node, walk: Walk) -> bool:
        constant = any(not isinstance(a, fx.Node) and a != 0 for a in node.args[:2])
        return constant or super().tainted(node, walk)

    def rewire(self, gm: fx.GraphModule, node: fx.Node, kept: Kept) -> None:
        stream, branch = node.args[:2]
        if not (isinstance(stream, fx.Node) and isinstance(branch, fx.Node)):
            return
        out, dim = kept[node.name], node.meta.get("channel_dim", 1)
        if stream.name not in kept or branch.name not in kept:  # one is a parameter
            _scatter_operands(gm, node, kept, dim)
            return
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
                    ChannelScatter([where[c] for c in kept[stream.name]], len(out), dim),
                    (stream,),
                )
            added = _call_new_module(
                gm,
                f"{node.name}_index_add",
                IndexAdd([where[c] for c in kept[branch.name]], len(out), inplace, dim=dim),
                (stream, branch),
            )
        _replace(gm, node, added, kept)


class SubRule(OpRule):
    """A difference of two feature maps (PoolFormer's `pool(x) - x`): like a sum, each
    channel's sources are the union of its operands' (zero where both are); surgery scatters
    an operand that keeps fewer channels into the difference's. By a constant: it taints."""

    def sources(self, node: fx.Node, walk: Walk) -> Sources:
        a, b = node.args[:2]
        if len(node.args) > 2 or node.kwargs:
            raise unsupported(node, "a subtraction with alpha or out=")
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            return walk.src(a if isinstance(a, fx.Node) else b)
        sa, sb = walk.src(a), walk.src(b)
        if len(sa) != len(sb) or isinstance(sa, ChannelsLast) != isinstance(sb, ChannelsLast):
            raise unsupported(node, "operands of different channel counts or layouts")
        out = [x | y for x, y in zip(sa, sb, strict=True)]
        if isinstance(sa, ChannelsLast):
            node.meta["channel_dim"] = -1
            return ChannelsLast(out)
        return out

    def tainted(self, node: fx.Node, walk: Walk) -> bool:
        constant = any(not isinstance(a, fx.Node) and a != 0 for a in node.args[:2])
        return constant or super().tainted(node, walk)

    def rewire(self, gm: fx.GraphModule, node: fx.Node, kept: Kept) -> None:
        _scatter_operands(gm, node, kept, node.meta.get("channel_dim", 1))


def _scatter_operands(gm: fx.GraphModule, node: fx.Node, kept: Kept, dim: int) -> None:
    """Each tensor operand of `node` that keeps fewer channels than `node`'s output is first
    scattered into them (a class token's cat or a position embedding's sum, where every
    channel is kept; a difference of feature maps)."""
    out = kept[node.name]
    where = {c: i for i, c in enumerate(out)}

    def scattered(arg):
        if not isinstance(arg, fx.Node) or arg.name not in kept or kept[arg.name] == out:
            return arg
        with gm.graph.inserting_before(node):
            scatter = ChannelScatter([where[c] for c in kept[arg.name]], len(out), dim)
            return _call_new_module(gm, f"{arg.name}_scatter_{node.name}", scatter, (arg,))

    node.args = tuple(
        [scattered(a) for a in arg] if isinstance(arg, list | tuple) else scattered(arg)
        for arg in node.args
    )


class MulRule(OpRule):
    """A product. By a constant: channels pass through. A clean tensor times a tainted one of
    the same channels or of one broadcast channel (squeeze-and-excitation, x * sigmoid(e)):
    the clean factor's channels; the tainted factor's channels follow them (`Walk.tie`).
    Both factors clean (a channel is zero when either is) has no rule yet."""

    def sources(self, node: fx.Node, walk: Walk) -> Sources:
        a, b = node.args[:2]
        if node.kwargs or len(node.args) > 2:
            raise unsupported(node, "a product with out=")
        if not isinstance(b, fx.Node) or walk.is_parameter(b):
            return _scaled(node, a, b, walk)
        if not isinstance(a, fx.Node) or walk.is_parameter(a):
            return _scaled(node, b, a, walk)
        ta, tb = walk.is_tainted(a), walk.is_tainted(b)
        if ta and tb:  # the product is tainted too; a broadcast factor has one channel
            return max(walk.src(a), walk.src(b), key=len)
        if not (ta or tb):
            raise unsupported(
                node,
                "a product of two feature maps (a channel is zero when either factor's is); "
                "only a feature map times a gate computed from it (sigmoid, hardsigmoid) is "
                "supported",
            )
        value, gate = (b, a) if ta else (a, b)
        walk.tie(node, value, gate)
        return walk.src(value)

    def tainted(self, node: fx.Node, walk: Walk) -> bool:
        nodes = [a for a in node.args[:2] if isinstance(a, fx.Node) and not walk.is_parameter(a)]
        return all(walk.is_tainted(a) for a in nodes)

    def rewire(self, gm: fx.GraphModule, node: fx.Node, kept: Kept) -> None:
        """A per-channel parameter factor (a layer scale) keeps the product's kept channels."""
        if "channel_scale" not in node.meta:
            return
        target, channels, factor = node.meta["channel_scale"]
        owner, _, attr = target.rpartition(".")
        module = gm.get_submodule(owner)
        p = getattr(module, attr)
        dim = next(d for d, n in enumerate(p.shape) if n == channels)
        setattr(module, attr, nn.Parameter(_select(p, kept[node.name], dim)))
        n = next(n for n in gm.graph.nodes if n.name == factor)
        while n.op != "get_attr":  # a reshape to a traced constant shape: the new count
            if n.target in ("view", "reshape", torch.reshape) and len(n.args) > 1:
                n.args = (n.args[0], *_with_count(n.args[1:], channels, len(kept[node.name])))
            n = n.args[0]


def _with_count(shape: tuple, old: int, new: int) -> tuple:
    """A reshape's shape arguments (sizes, or one tuple of them) with `old` replaced by
    `new`."""
    if len(shape) == 1 and isinstance(shape[0], tuple | list):
        return (tuple(new if d == old else d for d in shape[0]),)
    return tuple(new if d == old else d for d in shape)


def _scaled(node: fx.Node, x: fx.Node, factor: object, walk: Walk) -> Sources:
    """Sources of x * factor, a constant or a per-channel parameter (ConvNeXt's layer scale:
    a channel's factor goes with the channel, and is no part of theta_s)."""
    src = walk.src(x)
    if isinstance(factor, fx.Node):
        shape = _shape(factor)
        if prod(shape) != len(src) or max(shape) != prod(shape):
            raise unsupported(node, "a product with a parameter that is not one per channel")
        root = factor
        while root.op != "get_attr":  # a reshape of the parameter
            root = root.args[0]
        node.meta["channel_scale"] = (root.target, len(src), factor.name)
    return src


class DivRule(OpRule):
    """A division by a constant keeps zero channels; by a tensor it has no rule."""

    def sources(self, node: fx.Node, walk: Walk) -> Sources:
        if isinstance(_arg(node, 1, "other", None), fx.Node) or len(node.args) > 2:
            raise unsupported(node, "a division by a tensor")
        return walk.src(node.args[0])


def _replace(gm: fx.GraphModule, node: fx.Node, new: fx.Node, kept: Kept) -> None:
    """Make `new` (inserted before `node`) take `node`'s place: its uses, its kept channels
    and its analysed shapes (channels before pruning); `node` is erased."""
    kept[new.name], new.meta = kept[node.name], node.meta
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)


def _call_new_module(gm: fx.GraphModule, name: str, m: nn.Module, args: tuple) -> fx.Node:
    """A node calling `m`, added to `gm` as submodule `name`, at the graph's insert point."""
    gm.add_submodule(name, m)
    return gm.graph.call_module(name, args)


def _arg(node: fx.Node, i: int, name: str, default: object) -> object:
    """Argument `name` of `node`, passed by keyword or as positional argument `i`."""
    return node.kwargs.get(name, node.args[i] if len(node.args) > i else default)


class CatRule(OpRule):
    """A concatenation along channels: the operands' sources, one after the other. Along the
    tokens of [B, N, C] tensors (a class token joined to the patches): every operand has the
    same channels, each output channel all their sources, a parameter's never pruned; surgery
    scatters an operand that keeps fewer channels into the output's."""

    def sources(self, node: fx.Node, walk: Walk) -> Sources:
        dim, parts = _arg(node, 1, "dim", 0), node.args[0]
        tensors = [t for t in parts if not walk.is_parameter(t)]
        srcs = [walk.src(t) for t in tensors]
        ndim = len(_shape(node))
        if srcs and all(isinstance(x, ChannelsLast) for x in srcs) and dim % ndim != ndim - 1:
            if len({len(x) for x in srcs}) != 1:
                raise unsupported(node, "a concatenation of tokens with different channels")
            if len(tensors) < len(parts):
                srcs.append(walk.constants(len(srcs[0])))
            node.meta["channel_dim"] = -1
            return ChannelsLast(frozenset().union(*chans) for chans in zip(*srcs, strict=True))
        if dim != 1:
            raise unsupported(node, f"concatenation along dim {dim}")
        return [s for t in parts for s in walk.src(t)]

    def rewire(self, gm: fx.GraphModule, node: fx.Node, kept: Kept) -> None:
        if node.meta.get("channel_dim") == -1:
            _scatter_operands(gm, node, kept, -1)


class FlattenOpRule(OpRule):
    def sources(self, node: fx.Node, walk: Walk) -> Sources:
        x = node.args[0]
        start, end = _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1)
        return _flattened(node, x, walk.src(x), start, end)


class MeanRule(OpRule):
    """A mean over spatial dims keeps channels; one over the batch or channel dim does not."""

    def sources(self, node: fx.Node, walk: Walk) -> Sources:
        x = walk.src(node.args[0])
        dims = _arg(node, 1, "dim", None)
        dims = (dims,) if isinstance(dims, int) else dims
        ndim = len(_shape(node.args[0]))
        channel = ndim - 1 if isinstance(x, ChannelsLast) else 1
        if dims is None or {d % ndim for d in dims} & {0, channel}:  # -3 of [B, C, H, W] is C
            raise unsupported(node, "a mean over the batch or channel dim")
        if isinstance(x, ChannelsLast) and len(_shape(node)) == 2:
            return list(x)  # tokens averaged: [B, C]
        return x


class SplitRule(OpRule):
    """`split`/`chunk` into a tuple of pieces (read by `getitem`). Along channels the node's
    sources are its input's, cut into pieces by `channel_pieces`; surgery splits the kept
    channels into pieces of the new sizes. Along another dim every piece has all channels."""

    def sources(self, node: fx.Node, walk: Walk) -> Sources:
        return walk.src(node.args[0])

    def rewire(self, gm: fx.GraphModule, node: fx.Node, kept: Kept) -> None:
        pieces = channel_pieces(node)
        if pieces is None:
            return
        x, ins = node.args[0], kept[node.args[0].name]
        sizes = [sum(a <= c < b for c in ins) for a, b in pieces]
        with gm.graph.inserting_before(node):
            new = gm.graph.call_function(torch.split, (x, sizes), {"dim": 1})
        _replace(gm, node, new, kept)


def channel_pieces(node: fx.Node) -> list[tuple[int, int]] | None:
    """[(start, stop)] of each piece's channels for a split/chunk `node` along channels; None
    for one along another dim."""
    metas = node.meta["tensor_meta"]
    dim = _arg(node, 2, "dim", 0)  # split(x, sizes, dim), chunk(x, chunks, dim), x.split(...)
    if dim % len(metas[0].shape) != 1:
        return None
    sizes = [m.shape[1] for m in metas]
    bounds = [0, *itertools.accumulate(sizes)]
    return list(itertools.pairwise(bounds))


class GetItemRule(OpRule):
    """`pieces[i]` of a split, or `x[:, a:b]` (any spatial slices after): a contiguous block
    of channels. Surgery slices the block's kept channels."""

    def sources(self, node: fx.Node, walk: Walk) -> Sources:
        x, index = node.args
        if _is_tuple(x):
            if not isinstance(index, int):
                raise unsupported(node, "a slice of a split's pieces; index them one by one")
            pieces = channel_pieces(x)
            src = walk.src(x)
            return src if pieces is None else src[slice(*pieces[index])]
        if isinstance(walk.src(x), ChannelsLast):
            return _tokens(node, walk.src(x))
        channels = _channel_slice(node)
        return walk.src(x)[channels]

    def rewire(self, gm: fx.GraphModule, node: fx.Node, kept: Kept) -> None:
        x, index = node.args
        if _is_tuple(x) or node.meta.get("tokens"):
            return
        channels = _channel_slice(node)
        if channels == slice(None):
            return
        ins = kept[x.name]
        new = slice(sum(c < channels.start for c in ins), sum(c < channels.stop for c in ins))
        node.args = (x, (index[0], new, *index[2:]))


def _tokens(node: fx.Node, src: Sources) -> Sources:
    """Sources of x[:, i] or x[:, a:b] for x [B, N, C] with channels last (the class token,
    the patch tokens): every channel stays, in [B, C] where one token is taken."""
    index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
    if len(index) > 2 or index[0] != slice(None) or not isinstance(index[-1], int | slice):
        raise unsupported(node, f"indexing a [B, N, C] tensor by {index}")
    node.meta["tokens"] = True
    return list(src) if len(_shape(node)) == 2 else src


def _is_tuple(node: fx.Node) -> bool:
    """Whether `node` computed a tuple of tensors (a split's pieces)."""
    meta = node.meta.get("tensor_meta")
    return isinstance(meta, tuple | list) and not isinstance(meta, TensorMetadata)


def _channel_slice(node: fx.Node) -> slice:
    """The channels `node` = x[index] takes as slice(start, stop), or slice(None) for all;
    fails for an index that is not a batch slice, a channel slice and spatial slices."""
    x, index = node.args
    index = index if isinstance(index, tuple) else (index,)
    if not all(isinstance(i, slice) for i in index) or index[0] != slice(None):
        raise unsupported(node, f"indexing by {index}; only x[:, a:b, ...] slices channels")
    if len(index) < 2 or index[1] == slice(None):
        return slice(None)
    if index[1].step not in (None, 1):
        raise unsupported(node, "a strided slice of the channels")
    return slice(*index[1].indices(_shape(x)[1])[:2])


class Blocked(list):
    """Sources of a tensor whose channels a view has split over dims 1 and 2 (`block` = their
    sizes), in memory order; `perm[i]`: the channel before that view (node `origin`) now at
    position i. A channel shuffle is such a view, a transpose of dims 1 and 2, and a view
    back."""

    def __init__(self, sources: Sources, block: tuple[int, int], perm: list[int], origin: str):
        super().__init__(sources)
        self.block, self.perm, self.origin = block, perm, origin


class ViewRule(OpRule):
    """`view`/`reshape` that keeps the batch and the channels' order: to the same shape, to
    [B, C * H * W] (a flatten; surgery makes it `torch.flatten`), splitting the channels in
    two dims (`Blocked`), or merging them back. The merge of a shuffled block becomes one
    `ChannelGather` of the kept channels in their shuffled order."""

    def sources(self, node: fx.Node, walk: Walk) -> Sources:
        x = node.args[0]
        src, before, after = walk.src(x), tuple(_shape(x)), tuple(_shape(node))
        if isinstance(src, Blocked):
            if after == (before[0], before[1] * before[2], *before[3:]):
                node.meta["channel_gather"] = (src.origin, src.perm)
                return list(src)
        elif after == before:
            return src
        elif len(after) == 2 and after[1] == prod(before[1:]):
            return _flattened(node, x, src, 1, -1)
        elif len(after) == len(before) + 1 and after[3:] == before[2:]:
            if after[0] == before[0] and after[1] * after[2] == before[1]:
                return Blocked(src, (after[1], after[2]), list(range(before[1])), node.name)
        raise unsupported(node, f"a reshape from {before} to {after} that moves channels")

    def rewire(self, gm: fx.GraphModule, node: fx.Node, kept: Kept) -> None:
        before, after = _shape(node.args[0]), _shape(node)
        if "channel_gather" in node.meta:
            origin_name, perm = node.meta["channel_gather"]
            split = next(n for n in gm.graph.nodes if n.name == origin_name)
            origin = split.args[0]
            where = {c: i for i, c in enumerate(kept[origin.name])}
            gather = ChannelGather([where[perm[c]] for c in kept[node.name]])
            with gm.graph.inserting_before(node):
                new = _call_new_module(gm, f"{node.name}_gather", gather, (origin,))
            bypassed = [node.args[0]]  # the shuffle's transpose, contiguous, split view
            while bypassed[-1] is not split:
                bypassed.append(bypassed[-1].args[0])
        elif len(after) == 2 and len(before) > 2:
            with gm.graph.inserting_before(node):
                new = gm.graph.call_function(torch.flatten, (node.args[0], 1))
            bypassed = []
        else:
            return
        _replace(gm, node, new, kept)
        for n in bypassed:
            if not n.users:
                gm.graph.erase_node(n)


class TransposeRule(OpRule):
    """A transpose of two non-channel dims; or of the two dims of a `Blocked` channel split
    (a channel shuffle), which permutes the channels."""

    def sources(self, node: fx.Node, walk: Walk) -> Sources:
        src = walk.src(node.args[0])
        ndim = len(_shape(node.args[0]))
        dims = {d % ndim for d in node.args[1:3]}
        if isinstance(src, Blocked) and dims == {1, 2}:
            a, b = src.block
            order = [j * b + i for i in range(b) for j in range(a)]  # new position -> old
            return Blocked(
                [src[k] for k in order], (b, a), [src.perm[k] for k in order], src.origin
            )
        if ndim == 3 and dims == {1, 2} and not isinstance(src, Blocked):
            # [B, C, N] <-> [B, N, C]: a patch embedding's channels to tokens and back
            return list(src) if isinstance(src, ChannelsLast) else ChannelsLast(src)
        channel_dims = {1, 2} if isinstance(src, Blocked) else {1}
        if isinstance(src, ChannelsLast):
            channel_dims = {ndim - 1}
        if dims & channel_dims or 0 in dims:
            raise unsupported(node, "a transpose that moves the channel dim")
        return src


class PermuteRule(OpRule):
    """[B, C, H, W] -> [B, H, W, C] (`ChannelsLast`) and back; a permute that keeps the
    channel dim where it is passes its sources."""

    TO_LAST, TO_FIRST = (0, 2, 3, 1), (0, 3, 1, 2)

    def sources(self, node: fx.Node, walk: Walk) -> Sources:
        src = walk.src(node.args[0])
        dims = node.kwargs.get("dims") or node.args[1:]  # permute(x, 0, 2, 3, 1) or a list
        dims = tuple(dims[0] if isinstance(dims[0], list | tuple) else dims)
        if isinstance(src, ChannelsLast) and dims == self.TO_FIRST:
            return list(src)
        if not isinstance(src, ChannelsLast | Blocked) and dims == self.TO_LAST:
            return ChannelsLast(src)
        if dims[:2] == (0, 1) and not isinstance(src, ChannelsLast | Blocked):
            return src
        raise unsupported(node, f"a permute {dims} of a tensor with channels in dim 1 or last")


def is_zero_preserving_elementwise(m: nn.Module) -> bool:
    """Whether `m` acts on each element alone and maps 0 to 0: a known activation, or a
    module whose traced graph holds nothing but such operations (timm's GELU)."""
    if isinstance(m, ELEMENTWISE_MODULES):
        return True
    try:
        graph = fx.symbolic_trace(m).graph
    except Exception:  # not traceable: not provably elementwise
        return False
    for node in graph.nodes:
        if node.op in ("call_function", "call_method"):
            if node.target not in ELEMENTWISE_FUNCTIONS + ELEMENTWISE_METHODS:
                return False
        elif node.op not in ("placeholder", "output"):
            return False
    return True


# -- the table --------------------------------------------------------------------------------
# Elementwise ops that map 0 to 0; may also sit inside a fused norm module (BatchNormRule).
ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.SiLU, nn.Mish, nn.GELU,
    nn.Hardswish, nn.Hardtanh, nn.Tanh, nn.Softsign, nn.Identity, nn.Dropout, nn.Dropout2d,
)  # fmt: skip
ELEMENTWISE_FUNCTIONS = (
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.celu, F.selu, F.silu, F.mish, F.gelu,
    F.hardswish, F.hardtanh, torch.tanh,
)  # fmt: skip
ELEMENTWISE_METHODS = ("relu", "relu_", "tanh", "tanh_", "contiguous")
# Ops that keep channels apart and map a zero channel to a zero channel.
ZERO_PRESERVING_MODULES = (
    *ELEMENTWISE_MODULES, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d, nn.Upsample,
)  # fmt: skip
ZERO_PRESERVING_FUNCTIONS = (
    *ELEMENTWISE_FUNCTIONS, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d, F.interpolate,
)  # fmt: skip
# Elementwise ops that map 0 to nonzero: their outputs are tainted (module docstring).
TAINTING_MODULES = (nn.Sigmoid, nn.Hardsigmoid)
TAINTING_FUNCTIONS = (torch.sigmoid, F.hardsigmoid)
TAINTING_METHODS = ("sigmoid", "sigmoid_")

MODULE_RULES: dict[type[nn.Module], ModuleRule] = {
    nn.Conv2d: Conv2dRule(),
    nn.Linear: LinearRule(),
    nn.BatchNorm1d: BatchNormRule(),
    nn.BatchNorm2d: BatchNormRule(),
    nn.Flatten: FlattenRule(),
    nn.LayerNorm: LayerNormRule(channel_dim=-1),
    nn.GroupNorm: GroupNormRule(),
    ZeroPadShortcut: ZeroPadShortcutRule(),
    **{t: ModuleRule() for t in ZERO_PRESERVING_MODULES},
    **{t: TaintingModuleRule() for t in TAINTING_MODULES},
}
FUNCTION_RULES: dict[Callable, OpRule] = {
    **{f: AddRule() for f in (operator.add, operator.iadd, torch.add)},
    **{f: MulRule() for f in (operator.mul, operator.imul, torch.mul)},
    **{f: DivRule() for f in (operator.truediv, torch.div)},
    **{f: SubRule() for f in (operator.sub, torch.sub)},
    torch.cat: CatRule(),
    torch.flatten: FlattenOpRule(),
    **{f: SplitRule() for f in (torch.split, torch.chunk)},
    torch.reshape: ViewRule(),
    torch.permute: PermuteRule(),
    torch.transpose: TransposeRule(),
    operator.getitem: GetItemRule(),
    **{f: OpRule() for f in ZERO_PRESERVING_FUNCTIONS},
    F.dropout: DropoutRule(),
    F.pad: PadRule(),
    heads_attention: HeadsRule(),
    **{f: TaintingRule() for f in TAINTING_FUNCTIONS},
}
METHOD_RULES: dict[str, OpRule] = {
    **{name: AddRule() for name in ("add", "add_")},
    **{name: MulRule() for name in ("mul", "mul_")},
    **{name: DivRule() for name in ("div", "div_")},
    "sub": SubRule(),
    "flatten": FlattenOpRule(),
    "mean": MeanRule(),
    **{name: SplitRule() for name in ("split", "chunk")},
    **{name: ViewRule() for name in ("view", "reshape")},
    "transpose": TransposeRule(),
    "permute": PermuteRule(),
    **{name: OpRule() for name in ELEMENTWISE_METHODS},
    **{name: TaintingRule() for name in TAINTING_METHODS},
}


# Library modules that keep channels apart and map zero to zero, by qualified class name (so
# that this table imports neither library): per-sample drop paths, identities in eval mode.
NAMED_MODULE_RULES: dict[str, ModuleRule] = {
    "timm.layers.attention.Attention": AttentionRule(),
    # TensorFlow's "same" padding (every tf_* model): the padding depends on the input's size
    # alone, which pruning keeps, so the conv's channels are a Conv2d's
    "timm.layers.conv2d_same.Conv2dSame": Conv2dRule(),
    "torchvision.ops.stochastic_depth.StochasticDepth": ModuleRule(),
    "timm.layers.drop.DropPath": ModuleRule(),
    "timm.layers.drop.DropBlock2d": ModuleRule(),
    "timm.layers.norm.LayerNorm2d": LayerNormRule(channel_dim=1),
    "torchvision.models.convnext.LayerNorm2d": LayerNormRule(channel_dim=1),
}


def qualified_name(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


def module_rule(m: nn.Module) -> ModuleRule | None:
    """The rule of `m`'s type, or of its nearest base class that has one."""
    for t in type(m).__mro__:
        rule = MODULE_RULES.get(t) or NAMED_MODULE_RULES.get(qualified_name(t))
        if rule is not None:
            return rule
    return None


def op_rule(node: fx.Node) -> OpRule | None:
    """The rule of a call_function or call_method node's target."""
    table = METHOD_RULES if node.op == "call_method" else FUNCTION_RULES
    return table.get(node.target)
