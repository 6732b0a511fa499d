"""Timing: `timed` returns the call's result and at least the wall time it took; `StepTimer`
accumulates seconds per step name."""

import time

from sosp.timing import StepTimer, median_ms, timed


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


def test_median_ms_warms_up_then_takes_the_median_of_the_timed_calls():
    """`warmup` untimed calls come first, then `repeats` timed ones: of sleeps of 1, 1, 90, 20,
    20, 20 and 90 ms (two warm-ups, five repeats) the median is 20 ms, not the warm-ups' 1 nor
    the mean's 48."""
    sleeps = iter([0.001, 0.001, 0.09, 0.02, 0.02, 0.02, 0.09])
    ms = median_ms("cpu", lambda: time.sleep(next(sleeps)), repeats=5, warmup=2)
    assert 20 <= ms < 40
    assert next(sleeps, None) is None  # exactly warmup + repeats calls
