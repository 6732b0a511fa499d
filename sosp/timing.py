"""Seconds spent per named step, synchronizing the GPU so that its work is counted where it
was launched."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for the work queued on a CUDA `device`; nothing elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device | str, fn: Callable, *args: Any) -> tuple[Any, float]:
    """(fn(*args), its wall seconds), `device` synchronized before and after, so that the
    GPU work the call queued counts and earlier work does not."""
    synchronize(device)
    start = time.perf_counter()
    out = fn(*args)
    synchronize(device)
    return out, time.perf_counter() - start


def median_ms(
    device: torch.device | str, fn: Callable, *args: Any, repeats: int, warmup: int = 3
) -> float:
    """Median milliseconds of `fn(*args)` over `repeats` `timed` calls after `warmup` untimed
    ones."""
    for _ in range(warmup):
        fn(*args)
    return statistics.median(timed(device, fn, *args)[1] * 1e3 for _ in range(repeats))


class StepTimer:
    """Accumulates wall seconds per step name: `with timer.step("saliency"): ...`."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def copy(self) -> StepTimer:
        out = StepTimer(self.device)
        out.seconds = dict(self.seconds)
        return out

    def rounded(self, digits: int = 4) -> dict[str, float]:
        return {k: round(v, digits) for k, v in self.seconds.items()}
