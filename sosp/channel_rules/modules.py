"""Module rules: writers (convs, linears, attention blocks), norms (BatchNorm, LayerNorm,
GroupNorm), flatten and zero-padding shortcuts."""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from sosp.channel_rules.base import (
    ChannelsLast,
    ModuleRule,
    Role,
    Sources,
    Unsupported,
    _check_channels_first,
    _copy_to_shrink,
    _select,
    _shape,
    _shrink_bias,
    is_zero_preserving_elementwise,
    slice_params,
    unsupported,
)
from sosp.channel_rules.views import _flattened
from sosp.modes import eval_mode
from sosp.shortcuts import (
    ChannelGroupNorm,
    ChannelLayerNorm,
    Subsample,
    ZeroPadShortcut,
)


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
    proj = "proj"  # the submodule whose rows are the structures

    def role(self, node: fx.Node, m: nn.Module) -> Role:
        if getattr(m, "gate", None) is not None:
            raise unsupported(node, "an attention block with an output gate")
        return Role.WRITER

    def written(self, node: fx.Node, m: nn.Module, x: Sources, out: Sources) -> Sources:
        if not isinstance(x, ChannelsLast) or len(_shape(node.args[0])) != 3:
            raise unsupported(node, "attention on a tensor other than [B, N, C] tokens")
        return ChannelsLast(out)

    def out_channels(self, m: nn.Module) -> int:
        return getattr(m, self.proj).out_features

    def theta_part(self, m: nn.Module) -> str:
        return self.proj

    def gate_site(self, m: nn.Module) -> tuple[nn.Module, str]:
        return m.proj, "output"

    def shrink(self, m: nn.Module, out_idx: list[int], in_idx: list[int]) -> nn.Module:
        m = _copy_to_shrink(m, "qkv", "proj")
        linear = LinearRule()
        m.qkv = linear.shrink(m.qkv, list(range(m.qkv.out_features)), in_idx)
        m.proj = linear.shrink(m.proj, out_idx, list(range(m.proj.in_features)))
        return m

    def zero(self, m: nn.Module, channels: list[int]) -> None:
        for p in slice_params(getattr(m, self.proj)):
            p[channels] = 0


class MultiheadAttentionRule(AttentionRule):
    """torch's `nn.MultiheadAttention` as self-attention on batch-first [B, N, C] tokens
    (torchvision's ViT encoder), one writer as timm's: `out_proj`'s rows are the structures;
    its forward uses `out_proj`'s weights without calling it, so the gate sits on the
    module's output (its first element); the input projection needs the query's full width,
    so pruning may remove none of the channels it reads."""

    proj = "out_proj"
    reads_whole = True

    def input_of(self, node: fx.Node, m: nn.Module) -> fx.Node:
        q, k, v = (list(node.args) + [node.kwargs.get(n) for n in ("key", "value")])[:3]
        if not (q is k is v):
            raise unsupported(node, "a MultiheadAttention other than self-attention")
        return q

    def role(self, node: fx.Node, m: nn.Module) -> Role:
        if not m.batch_first or not m._qkv_same_embed_dim:
            raise unsupported(
                node, "a MultiheadAttention without batch_first or with its own kdim, vdim"
            )
        return Role.WRITER

    def gate_site(self, m: nn.Module) -> tuple[nn.Module, str]:
        return m, "output"

    def shrink(self, m: nn.Module, out_idx: list[int], in_idx: list[int]) -> nn.Module:
        assert len(in_idx) == m.embed_dim, "reads_whole: its input keeps every channel"
        m = _copy_to_shrink(m, "out_proj")
        m.out_proj = LinearRule().shrink(m.out_proj, out_idx, list(range(m.embed_dim)))
        return m


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
