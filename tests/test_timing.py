"""Timing: `timed` returns the call's result and at least the wall time it took; `StepTimer`
accumulates seconds per step name."""

import time

from sosp.timing import StepTimer, timed


def test_timed_returns_the_result_and_the_seconds_the_call_took():
    """A call sleeping 20 ms is timed at 20 ms or more (and well under a second), and its
    return value comes back unchanged."""
    out, seconds = timed("cpu", lambda x: (time.sleep(0.02), x + 1)[1], 41)
    assert out == 42
    assert 0.02 <= seconds < 1.0


def test_step_timer_adds_up_repeated_steps():
    """Two 10 ms steps of one name add up to 20 ms or more under that name."""
    timer = StepTimer("cpu")
    for _ in range(2):
        with timer.step("sleep"):
            time.sleep(0.01)
    assert set(timer.seconds) == {"sleep"}
    assert 0.02 <= timer.seconds["sleep"] < 1.0
