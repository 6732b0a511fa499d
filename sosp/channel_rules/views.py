"""Function and method rules that move channels: flatten, split and chunk, indexing, views and
reshapes (channel shuffles), transposes and permutes (channels last)."""

from __future__ import annotations

import itertools
from math import prod

import torch
import torch.fx as fx
from torch.fx.passes.shape_prop import TensorMetadata

from sosp.channel_rules.base import (
    Blocked,
    ChannelsLast,
    Kept,
    OpRule,
    Sources,
    Walk,
    _arg,
    _call_new_module,
    _replace,
    _reshaped_sizes,
    _shape,
    unsupported,
)
from sosp.shortcuts import (
    ChannelGather,
)


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


class FlattenOpRule(OpRule):
    def sources(self, node: fx.Node, walk: Walk) -> Sources:
        x = node.args[0]
        start, end = _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1)
        return _flattened(node, x, walk.src(x), start, end)


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
    for one along another dim, or for a module returning a tuple (an attention's)."""
    if node.op == "call_module":
        return None
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
        if _reshapes_only_after_channels(src, before, after):
            node.meta["channels_at"] = 1
            return src
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
            if node.meta.get("channels_at") == 1:  # a literal channel count in the shape
                node.args = (node.args[0], *_with_channels(node.args[1:], len(kept[node.name])))
            return
        _replace(gm, node, new, kept)
        for n in bypassed:
            if not n.users:
                gm.graph.erase_node(n)


def _reshapes_only_after_channels(src: Sources, before: tuple, after: tuple) -> bool:
    """Whether a reshape of a tensor with channels in dim 1 keeps its batch and channel dims
    and reshapes only the dims after them ([B, C, N] <-> [B, C, H, W])."""
    return (
        not isinstance(src, ChannelsLast | Blocked)
        and min(len(before), len(after)) >= 2
        and after[:2] == before[:2]
        and prod(after[2:]) == prod(before[2:])
    )


def _with_channels(shape: tuple, channels: int) -> tuple:
    """A reshape's shape arguments (sizes, or one tuple of them) with dim 1 set to `channels`
    where it is a literal number (a size read from the tensor stays as it is)."""

    def set_channels(sizes: list) -> list:
        literal = len(sizes) > 1 and isinstance(sizes[1], int)
        return [sizes[0], channels, *sizes[2:]] if literal else sizes

    return _reshaped_sizes(shape, set_channels)


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
    """[B, C, H, W] -> [B, H, W, C] (`ChannelsLast`) and back, [B, C, N] <-> [B, N, C]
    likewise; a permute that keeps the channel dim where it is passes its sources."""

    TO_LAST, TO_FIRST = (0, 2, 3, 1), (0, 3, 1, 2)

    def sources(self, node: fx.Node, walk: Walk) -> Sources:
        src = walk.src(node.args[0])
        dims = node.kwargs.get("dims") or node.args[1:]  # permute(x, 0, 2, 3, 1) or a list
        dims = tuple(dims[0] if isinstance(dims[0], list | tuple) else dims)
        if dims == (0, 2, 1) and not isinstance(src, Blocked):  # [B, C, N] <-> [B, N, C]
            return list(src) if isinstance(src, ChannelsLast) else ChannelsLast(src)
        if isinstance(src, ChannelsLast) and dims == self.TO_FIRST:
            return list(src)
        if not isinstance(src, ChannelsLast | Blocked) and dims == self.TO_LAST:
            return ChannelsLast(src)
        if dims[:2] == (0, 1) and not isinstance(src, ChannelsLast | Blocked):
            return src
        raise unsupported(node, f"a permute {dims} of a tensor with channels in dim 1 or last")
