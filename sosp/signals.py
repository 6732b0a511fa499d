"""Stop signals as exceptions: `Stopped` (SIGTERM, or a signal held while a step that must not
be cut ran) unwinds like Ctrl-C, and `deferred()` holds SIGINT and SIGTERM over such a step.
Standard library only: `sosp.io` and `sosp.cli` use it before torch is imported."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Stopped(KeyboardInterrupt):
    """A stop signal arrived (SIGTERM, or SIGINT held while starting): unwinds like Ctrl-C
    (temporary files removed, locks released)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signal.Signals(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM (those not ignored) are held; the first that
    arrived is raised as `Stopped` when it ends. Only in the main thread (elsewhere signals
    are not delivered anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    held = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) != signal.SIG_IGN]
    previous = {s: signal.signal(s, lambda signum, _frame: arrived.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if arrived:
        raise Stopped(arrived[0])
