"""Operator calls counted on any device: on a GPU each ATen operator call is roughly one kernel
launch, so the count of a launch-bound computation (SOSP's mask) shows on the CPU what its time
on a GPU will be made of.

    with OpCounter() as ops:
        model(x).sum().backward()
    ops.total, ops.by_name  # e.g. 170, {"aten.convolution.default": 20, ...}

`with count_steps(): sosp.prune(...)` makes every `StepTimer` created inside count too, so the
report's `ops_by_step` holds the calls of each step beside `seconds_by_step` (counting slows
the run: its seconds are then not timings).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from torch.utils._python_dispatch import TorchDispatchMode

_COUNT_STEPS: ContextVar[bool] = ContextVar("sosp_count_steps", default=False)


class OpCounter(TorchDispatchMode):
    """Counts every ATen operator call dispatched while active (`with OpCounter() as ops`),
    in all and per operator name (`str` of the overload, e.g. "aten.add.Tensor"). Calls from
    autograd's backward count too; Python-level work (FX tracing, NumPy) does not. Counters
    nest: an outer one sees the calls an inner one saw."""

    def __init__(self) -> None:
        super().__init__()
        self.by_name: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_name.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.by_name[str(func)] += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def count_steps(enabled: bool = True) -> Iterator[None]:
    """Inside, every `sosp.timing.StepTimer` created counts operator calls per step too."""
    token = _COUNT_STEPS.set(enabled)
    try:
        yield
    finally:
        _COUNT_STEPS.reset(token)


def counting_steps() -> bool:
    """Whether `count_steps` is active here."""
    return _COUNT_STEPS.get()
