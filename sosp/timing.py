"""Seconds spent per named step, synchronizing the GPU so that its work is counted where it
was launched; optionally the operator calls of each step too (`sosp.op_count`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from sosp.op_count import OpCounter, counting_steps


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
    """Accumulates wall seconds per step name: `with timer.step("saliency"): ...`; with
    `count_ops` (default: whether `sosp.op_count.count_steps` is active where it is created)
    also the operator calls per step, in `ops`."""

    def __init__(self, device: torch.device | str = "cpu", count_ops: bool | None = None):
        self.device = torch.device(device)
        self.seconds: dict[str, float] = {}
        self.count_ops = counting_steps() if count_ops is None else count_ops
        self.ops: dict[str, int] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self.count_ops:
            with OpCounter() as counter, self._timed(name):
                yield
            self.ops[name] = self.ops.get(name, 0) + counter.total
        else:
            with self._timed(name):
                yield

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def copy(self) -> StepTimer:
        out = StepTimer(self.device, self.count_ops)
        out.seconds = dict(self.seconds)
        out.ops = dict(self.ops)
        return out

    def rounded(self, digits: int = 4) -> dict[str, float]:
        return {k: round(v, digits) for k, v in self.seconds.items()}
