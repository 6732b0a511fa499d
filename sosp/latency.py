"""Forward latency of a network on a device, as a user deploys it: eval mode, no autograd, a
precision (fp32, or bf16 autocast) and a memory layout (nchw, or nhwc = channels_last).

What it was measured on goes with every figure (`measured_on`): a latency means nothing
without the device, torch version, threads, precision, layout and batch.
"""

from __future__ import annotations

import argparse
import functools
import platform
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from sosp.errors import BadInput
from sosp.exporting import folded_batchnorm
from sosp.timing import timed

PRECISIONS = ("fp32", "bf16")
LAYOUTS = ("nchw", "nhwc")


def add_setup_arguments(parser: argparse.ArgumentParser, layout: str = "nchw") -> None:
    """`--precision` (fp32, or bf16 autocast) and `--layout` (default `layout`) on `parser`."""
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32, or bf16 autocast (default: fp32)",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default=layout,
        help=f"nchw, or nhwc = channels_last (default: {layout})",
    )


def device_name(device: torch.device | str) -> str:
    """The GPU's name, or the CPU's model with the thread count torch uses."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def measured_on(
    device: torch.device | str, precision: str, layout: str, batch: int, fold_bn: bool
) -> dict:
    """What a latency depends on besides the network: {device, device_name, torch, precision,
    layout, batch, fold_bn}."""
    if precision not in PRECISIONS:
        raise BadInput(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if layout not in LAYOUTS:
        raise BadInput(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    return {
        "device": torch.device(device).type,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "precision": precision,
        "layout": layout,
        "batch": batch,
        "fold_bn": fold_bn,
    }


def memory_format(layout: str) -> torch.memory_format:
    return torch.channels_last if layout == "nhwc" else torch.contiguous_format


def autocast_for(device: torch.device | str, precision: str) -> torch.autocast:
    """bf16 autocast on `device` where `precision` is bf16, else off; without the cast cache
    (a CUDA graph must not capture casts it would then skip)."""
    kind = torch.device(device).type
    return torch.autocast(kind, torch.bfloat16, enabled=precision == "bf16", cache_enabled=False)


def sample_input(
    shape: tuple[int, ...],
    device: torch.device | str,
    layout: str,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> torch.Tensor:
    """A random input [*shape] (its batch first) of `dtype` (the model's parameters') on
    `device` in `layout` (4-d tensors only)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype).to(device)
    return x.contiguous(memory_format=memory_format(layout)) if x.dim() == 4 else x


def deployed(
    model: nn.Module, device: torch.device | str, precision: str, layout: str, fold_bn: bool
) -> Callable:
    """One forward of `model` as it is timed: in eval mode, BatchNorm folded into the convs
    before it where `fold_bn` (as `sosp export --fold-bn` writes it), in `layout`, under
    `precision`'s autocast and `torch.inference_mode`. `model` may be changed in place."""
    if fold_bn:
        model = folded_batchnorm(model)
    model.eval().to(memory_format=memory_format(layout))

    @torch.inference_mode()
    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast_for(device, precision):
            return model(x)

    return forward


def interleaved_ms(
    forwards: dict[str, Callable],
    x: torch.Tensor,
    device: torch.device | str,
    repeats: int = 15,
    warmup: int = 3,
) -> dict[str, float]:
    """{name: ms} of each forward on `x` (`interleaved_calls_ms`)."""
    calls = [functools.partial(forward, x) for forward in forwards.values()]
    return dict(zip(forwards, interleaved_calls_ms(calls, device, repeats, warmup), strict=True))


def interleaved_calls_ms(
    calls: list[Callable[[], object]], device: torch.device | str, repeats: int, warmup: int
) -> list[float]:
    """The ms of each call: `warmup` rounds, then `repeats` rounds that take every call in
    turn, and of each call the fastest: on a shared machine the least disturbed, which other
    work slows unevenly (wide and narrow networks alike by far less than by minutes of
    drift), so the fastest calls of a table and of a later measurement agree best."""
    with torch.inference_mode():
        for _ in range(warmup):
            for call in calls:
                call()
        times: list[list[float]] = [[] for _ in calls]
        for _ in range(repeats):
            for t, call in zip(times, calls, strict=True):
                t.append(timed(device, call)[1] * 1e3)
    return [min(t) for t in times]
