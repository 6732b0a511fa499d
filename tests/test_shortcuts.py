"""Shortcut modules of pruned networks: they compute the dense scatter-and-add, and keep a
channels_last input channels_last (a contiguous output makes every later conv copy its input
back, which made bf16 ResNet-50 on a GPU 2x slower than the dense network)."""

import pytest
import torch

from sosp.shortcuts import ChannelScatter, IndexAdd, layout_of

POSITIONS = [1, 4, 6]


def scattered(x: torch.Tensor, size: int) -> torch.Tensor:
    """Brute force: x's channels at POSITIONS of a zero tensor with `size` channels."""
    out = torch.zeros(x.shape[0], size, *x.shape[2:])
    for i, p in enumerate(POSITIONS):
        out[:, p] = x[:, i]
    return out


LAYOUTS = [torch.contiguous_format, torch.channels_last]


@pytest.mark.parametrize("fmt", LAYOUTS)
@pytest.mark.parametrize("branch_fmt", LAYOUTS)
def test_scatter_and_index_add_equal_brute_force_and_keep_the_layout(fmt, branch_fmt):
    """ChannelScatter(x) and IndexAdd(stream, branch) equal the zero-padded tensors' values,
    come out in the input's memory layout, and leave an out-of-place stream untouched; also
    where the branch is stored in the other layout (on the CPU, a channels_last stream takes
    the scatter_add path)."""
    g = torch.Generator().manual_seed(0)
    stream = torch.randn(2, 8, 3, 5, generator=g).to(memory_format=fmt)
    branch = torch.randn(2, 3, 3, 5, generator=g).to(memory_format=branch_fmt)
    before = stream.clone()
    scatter = ChannelScatter(POSITIONS, 8)(branch.contiguous(memory_format=fmt))
    added = IndexAdd(POSITIONS, 8)(stream, branch)
    torch.testing.assert_close(scatter, scattered(branch, 8), rtol=0, atol=0)
    torch.testing.assert_close(added, before + scattered(branch, 8), rtol=0, atol=0)
    torch.testing.assert_close(stream, before, rtol=0, atol=0)
    for out in (scatter, added):
        assert out.is_contiguous(memory_format=fmt)
    inplace = IndexAdd(POSITIONS, 8, inplace=True)(stream, branch)
    assert inplace.data_ptr() == stream.data_ptr()
    torch.testing.assert_close(stream, before + scattered(branch, 8), rtol=0, atol=0)


@pytest.mark.parametrize("fmt", LAYOUTS)
def test_overwrite_adds_into_the_stream_only_without_autograd(fmt):
    """IndexAdd(overwrite=True) returns the stream itself, added into, under no_grad and
    inference_mode, and a new tensor where autograd is on (the stream may be saved for a
    backward pass); the values are the same."""
    g = torch.Generator().manual_seed(1)
    stream = torch.randn(2, 8, 3, 5, generator=g).to(memory_format=fmt)
    branch = torch.randn(2, 3, 3, 5, generator=g).to(memory_format=fmt)
    add = IndexAdd(POSITIONS, 8, overwrite=True)
    want = stream + scattered(branch, 8)
    copied = add(stream, branch)
    assert copied.data_ptr() != stream.data_ptr()
    torch.testing.assert_close(copied, want, rtol=0, atol=0)
    for no_autograd in (torch.no_grad, torch.inference_mode):
        s = stream.clone()
        with no_autograd():
            out = add(s, branch)
        assert out.data_ptr() == s.data_ptr() and out.is_contiguous(memory_format=fmt)
        torch.testing.assert_close(out, want, rtol=0, atol=0)


def test_cpu_channels_last_sums_keep_an_fp32_stream_fp32_under_bf16_autocast():
    """On the CPU a channels_last sum is a GEMM; under bf16 autocast it still adds in the
    stream's dtype (as index_add_ does): an fp32 stream is not rounded to bf16."""
    g = torch.Generator().manual_seed(2)
    stream = torch.randn(2, 8, 3, 5, generator=g).to(memory_format=torch.channels_last)
    branch = torch.randn(2, 3, 3, 5, generator=g).to(memory_format=torch.channels_last)
    want = stream + scattered(branch, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        added = IndexAdd(POSITIONS, 8)(stream, branch)
        scatter = ChannelScatter(POSITIONS, 8)(branch)
        with torch.no_grad():
            into = IndexAdd(POSITIONS, 8, overwrite=True)(stream, branch)
    assert added.dtype == scatter.dtype == into.dtype == torch.float32
    for got in (added, into):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(scatter, scattered(branch, 8), rtol=0, atol=0)


def test_layout_of_names_channels_last_only_where_it_differs_from_contiguous():
    """A [B, 1, 1, 1] or 2-d tensor is contiguous in both senses: it gets the contiguous layout."""
    assert layout_of(torch.zeros(2, 3, 4, 5).to(memory_format=torch.channels_last)) == (
        torch.channels_last
    )
    assert layout_of(torch.zeros(2, 3, 4, 5)) == torch.contiguous_format
    assert layout_of(torch.zeros(2, 1, 1, 1).to(memory_format=torch.channels_last)) == (
        torch.contiguous_format
    )
    assert layout_of(torch.zeros(2, 3)) == torch.contiguous_format
