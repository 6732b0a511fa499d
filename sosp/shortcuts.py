"""Parameter-free modules of residual shortcuts: the zero-padding shortcut that models use, and
the modules surgery puts in a pruned network (a shortcut without its padding channels, the
addition of a branch's kept channels into the wider residual stream, the scatter of an
operand into the stream's channels where no operand holds all of them, and the gather that
replaces a channel shuffle)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def layout_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last where a 4-d `x` is stored so (and not also contiguous), else contiguous:
    the layout a new tensor of x's rank needs so that the convs after it copy nothing."""
    if (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: [B, c_in, H, W] -> [B, c_out, ceil(H/stride), ceil(W/stride)], the
    subsampled input at channels offset .. offset + c_in - 1, zeros elsewhere, with
    `offset = (c_out - c_in) // 2`. No parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.offset = (out_channels - in_channels) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        after = self.out_channels - self.in_channels - self.offset
        return F.pad(x, (0, 0, 0, 0, self.offset, after))


class Subsample(nn.Module):
    """[B, C, H, W] -> [B, C, ceil(H/stride), ceil(W/stride)]: a zero-padding shortcut once
    surgery has removed its padding channels."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride]


class ChannelScatter(nn.Module):
    """[B, C_in, ...] -> [B, size, ...]: channel i of x at channel `positions[i]`, zeros
    elsewhere (channels along `dim`: 1, or -1 for a transformer's [B, N, C]). Surgery puts it
    before a residual sum whose operands keep different channels."""

    def __init__(self, positions: Sequence[int], size: int, dim: int = 1):
        super().__init__()
        self.size, self.dim = size, dim
        self.register_buffer(
            "positions", torch.tensor(list(positions), dtype=torch.long), persistent=False
        )
        self.register_buffer("onehot", placement(positions, size), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dim != 1:
            shape = (*x.shape[: self.dim], self.size, *x.shape[self.dim :][1:])
            return x.new_zeros(shape).index_copy_(self.dim, self.positions, x)
        layout = layout_of(x)
        if x.device.type == "cpu" and layout == torch.channels_last:
            onehot = self.onehot if self.onehot.dtype == x.dtype else self.onehot.to(x.dtype)
            with _no_autocast():  # in x's dtype, as index_copy_ is
                rows = torch.mm(pixel_rows(x), onehot)
            return from_pixel_rows(rows, x.shape, self.size)
        shape = (x.shape[0], self.size, *x.shape[2:])
        out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=layout).zero_()
        return out.index_copy_(1, self.positions, x)


class IndexAdd(nn.Module):
    """(stream [B, size, ...], branch [B, k, ...]) -> stream with branch channel i added to
    channel `positions[i]` (channels along `dim`: 1, or -1 for a transformer's [B, N, C]): a
    residual sum whose branch keeps fewer channels than the stream, without materializing the
    zero channels (one `index_add`).

    Where the sum goes: `inplace`, into `stream` itself, for a sum that was in place
    (`out += identity`); `overwrite` (surgery sets it where nothing reads the stream after the
    sum, `sosp.liveness`), into `stream` too while autograd is off (`torch.no_grad`,
    `torch.inference_mode`), since a backward pass may need the stream; else into a copy."""

    def __init__(
        self,
        positions: Sequence[int],
        size: int,
        inplace: bool = False,
        overwrite: bool = False,
        dim: int = 1,
    ):
        super().__init__()
        self.size, self.inplace, self.overwrite, self.dim = size, inplace, overwrite, dim
        self.register_buffer(
            "positions", torch.tensor(list(positions), dtype=torch.long), persistent=False
        )
        self.register_buffer("onehot", placement(positions, size), persistent=False)

    def forward(self, stream: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        into_stream = self.inplace or (self.overwrite and not torch.is_grad_enabled())
        if self.dim != 1:
            return (stream if into_stream else stream.clone()).index_add_(
                self.dim, self.positions, branch
            )
        if stream.device.type == "cpu" and layout_of(stream) == torch.channels_last:
            return _added_rows(stream, branch, self.onehot, into_stream)
        if not into_stream:
            # Not `stream.index_add`: its output is allocated contiguous, so a channels_last
            # stream was copied to NCHW and every later conv copied it back (bf16 ResNet-50 on
            # an H200: 2.95 ms against 0.94 for clone + index_add_ at 256x256x56x56).
            stream = stream.clone()
        return stream.index_add_(1, self.positions, branch)


def placement(positions: Sequence[int], size: int) -> torch.Tensor:
    """[k, size] float32: row i is 1 at column positions[i], 0 elsewhere."""
    out = torch.zeros(len(positions), size)
    out[torch.arange(len(positions)), torch.tensor(list(positions), dtype=torch.long)] = 1
    return out


def pixel_rows(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B*H*W, C]: a view where x is channels_last, else a copy."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def from_pixel_rows(rows: torch.Tensor, shape: torch.Size, channels: int) -> torch.Tensor:
    """[B*H*W, channels] -> [B, channels, H, W] channels_last (a view of `rows`)."""
    b, _, h, w = shape
    return rows.view(b, h, w, channels).permute(0, 3, 1, 2)


def _added_rows(
    stream: torch.Tensor, branch: torch.Tensor, onehot: torch.Tensor, into_stream: bool
) -> torch.Tensor:
    """`stream` with `branch` added at onehot's columns, for a channels_last 4-d stream on the
    CPU: rows(stream) + rows(branch) @ onehot, one GEMM over the [pixels, channels] matrices
    the layout stores. The CPU's index_add along dim 1 makes one strided pass per index, and a
    scatter_add over the rows was still 2.5x the dense add (64x16x32x32 fp32 on 2 cores: dense
    add 0.34 ms, scatter_add 0.82, this 0.48, into the stream 0.22). Exact for finite values:
    each product term is the branch value times 1 or a zero; a non-finite branch value
    (0 * inf) turns its pixel's other channels NaN. A counter of ATen's matrix products
    (ptflops) sees k x C multiply-adds per pixel here; `sosp.counting` counts a sum as none."""
    rows, source = pixel_rows(stream), pixel_rows(branch)
    if source.dtype != rows.dtype or onehot.dtype != rows.dtype:  # the stream's, as index_add_
        source, onehot = source.to(rows.dtype), onehot.to(rows.dtype)
    if into_stream:
        rows.addmm_(source, onehot)
        return stream
    with _no_autocast():  # in the stream's dtype, as index_add_ is
        rows = torch.addmm(rows, source, onehot)
    return from_pixel_rows(rows, stream.shape, stream.shape[1])


def _no_autocast() -> torch.autocast:
    """CPU autocast off: its bf16 GEMM would round an fp32 stream."""
    return torch.autocast("cpu", enabled=False)


class ChannelGather(nn.Module):
    """[B, C, ...] -> [B, len(index), ...]: channel `index[i]` of x at channel i. Surgery puts
    it in place of a channel shuffle (view, transpose, view), whose pruned groups would no
    longer be of one size."""

    def __init__(self, index: Sequence[int]):
        super().__init__()
        self.register_buffer("index", torch.tensor(list(index), dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.index).contiguous(memory_format=layout_of(x))


class ChannelLayerNorm(nn.Module):
    """A LayerNorm over the channel dim `dim` (1 or -1) of a tensor whose other `total` -
    C channels were pruned: they still count as zeros in the mean and variance, as they did
    (exactly zero) in the network before surgery. weight, bias: [C]."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, total: int, eps: float, dim: int):
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)
        self.total, self.eps, self.dim = total, eps, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        missing = self.total - x.shape[self.dim]
        mean = x.sum(self.dim, keepdim=True) / self.total
        squares = (x - mean).square().sum(self.dim, keepdim=True) + missing * mean.square()
        y = (x - mean) * torch.rsqrt(squares / self.total + self.eps)
        shape = [-1] + [1] * (x.dim() - 2) if self.dim == 1 else [-1]
        return y * self.weight.view(shape) + self.bias.view(shape)


class ChannelGroupNorm(nn.Module):
    """A GroupNorm of [B, C, ...] whose groups lost channels to pruning: each kept channel's
    group (`groups[i]`) still has its `sizes[g]` channels before pruning, the pruned ones
    counting as zeros in the mean and variance, as they did (exactly zero) in the network
    before surgery. weight, bias: [C] (None without affine)."""

    def __init__(
        self,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        groups: Sequence[int],
        sizes: Sequence[int],
        eps: float,
    ):
        super().__init__()
        self.weight = None if weight is None else nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)
        self.eps = eps
        self.register_buffer("groups", torch.tensor(list(groups), dtype=torch.long))
        self.register_buffer("sizes", torch.tensor(list(sizes), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)  # [B, C, HW]
        count = self.sizes.to(x.dtype) * flat.shape[2]  # [G] elements per group, pruned too
        sums = flat.new_zeros(len(x), len(self.sizes)).index_add_(1, self.groups, flat.sum(2))
        mean = (sums / count)[:, self.groups]  # [B, C]
        centered = flat - mean[..., None]
        squares = flat.new_zeros(len(x), len(self.sizes))
        squares.index_add_(1, self.groups, centered.square().sum(2))
        missing = (self.sizes - torch.bincount(self.groups, minlength=len(self.sizes))).to(x.dtype)
        var = (squares + missing * flat.shape[2] * (sums / count).square()) / count
        y = centered * torch.rsqrt(var[:, self.groups] + self.eps)[..., None]
        if self.weight is not None:
            y = y * self.weight[:, None] + self.bias[:, None]
        return y.view_as(x)
