"""Function and method rules of arithmetic and joins: sums, differences, products, divisions,
concatenations, means, dropout, padding, attention heads and ops that taint."""

from __future__ import annotations

import operator
from math import prod

import torch
import torch.fx as fx
from torch import nn

from sosp.channel_rules.base import (
    ChannelsLast,
    Kept,
    OpRule,
    Sources,
    Walk,
    _arg,
    _call_new_module,
    _replace,
    _reshaped_sizes,
    _select,
    _shape,
    unsupported,
)
from sosp.shortcuts import (
    ChannelScatter,
    IndexAdd,
)


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
    WHAT = "an add"

    def sources(self, node: fx.Node, walk: Walk) -> Sources:
        a, b = node.args[:2]
        if len(node.args) > 2 or node.kwargs:
            raise unsupported(node, f"{self.WHAT} with alpha or out=")
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            return walk.src(a if isinstance(a, fx.Node) else b)
        if walk.is_parameter(a) or walk.is_parameter(b):  # a position embedding
            x, p = (b, a) if walk.is_parameter(a) else (a, b)
            sx = walk.src(x)
            dim = _parameter_channel_dim(_shape(p), _shape(x), sx)
            if dim is None:
                raise unsupported(
                    node, "a parameter added other than per channel of [B, N, C] or [B, C, ...]"
                )
            node.meta["channel_dim"] = dim
            out = [s | c for s, c in zip(sx, walk.constants(len(sx)), strict=True)]
            return ChannelsLast(out) if dim == -1 else out
        sa, sb = walk.src(a), walk.src(b)
        if len(sa) != len(sb):
            raise unsupported(node, "operands of different channel counts (broadcasting)")
        out = [x | y for x, y in zip(sa, sb, strict=True)]
        if isinstance(sa, ChannelsLast) != isinstance(sb, ChannelsLast):
            raise unsupported(node, f"{self.WHAT} of operands with channels in different dims")
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


class SubRule(AddRule):
    """A difference of two feature maps (PoolFormer's `pool(x) - x`): a sum's sources (each
    channel's the union of its operands', zero where both are) and taint; surgery scatters an
    operand that keeps fewer channels into the difference's. A parameter operand has no rule."""

    WHAT = "a subtraction"

    def sources(self, node: fx.Node, walk: Walk) -> Sources:
        for arg in node.args[:2]:
            if walk.is_parameter(arg):
                walk.src(arg)  # refuses it, naming the parameter
        return super().sources(node, walk)

    def rewire(self, gm: fx.GraphModule, node: fx.Node, kept: Kept) -> None:
        _scatter_operands(gm, node, kept, node.meta.get("channel_dim", 1))


def _parameter_channel_dim(p: tuple, x: tuple, sx: Sources) -> int | None:
    """The dim of x's channels (-1 tokens [B, N, C], 1 feature maps [B, C, ...]) where a
    parameter of shape `p` added to x of shape `x` holds one value per channel there (a
    position embedding [1, N, C] or [1, C, H, W]); None where it does not."""
    if isinstance(sx, ChannelsLast):
        return -1 if p and p[-1] == len(sx) else None
    after_batch = len(x) - 1
    fits = 0 < after_batch <= len(p) <= len(x) and p[-after_batch] == len(sx)
    return 1 if fits else None


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
    return _reshaped_sizes(shape, lambda sizes: [new if d == old else d for d in sizes])


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
