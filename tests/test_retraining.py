"""Retraining schedules: the lr of each (at fractional epochs, as set every step) against its
formula, written out here for a step and a cosine training schedule."""

import math

import pytest

from sosp import recipes
from sosp.errors import BadInput
from sosp.recipes import Recipe
from sosp.train import lr_at

STEP = Recipe(epochs=20, lr=0.1, schedule="step", milestones=(10, 15), gamma=0.1)
COSINE = Recipe(epochs=8, lr=0.05, schedule="cosine", milestones=())


def eta_step(e):  # the training lr of epoch e, written out
    return 0.1 if e < 10 else 0.01 if e < 15 else 0.001


def eta_cosine(e):
    return 0.05 * 0.5 * (1 + math.cos(math.pi * e / 8))


TIMES = [0, 0.1, 0.25, 0.5, 0.99, 1, 2.5, 4, 7.3, 9.99]


@pytest.mark.parametrize("original, eta", [(STEP, eta_step), (COSINE, eta_cosine)])
def test_ft_keeps_the_last_lr_of_training(original, eta):
    """FT: min over the training epochs (the last lr), at every t."""
    r = recipes.retraining(original, "ft", 10)
    low = min(eta(e) for e in range(original.epochs))
    assert [lr_at(r, t) for t in TIMES] == pytest.approx([low] * len(TIMES))


@pytest.mark.parametrize("original, eta", [(STEP, eta_step), (COSINE, eta_cosine)])
def test_lrw_replays_the_last_budget_epochs(original, eta):
    """LRW with budget T: eta(floor(E - T + t))."""
    T = 6
    r = recipes.retraining(original, "lrw", T)
    times = [t for t in TIMES if t < T]
    want = [eta(math.floor(original.epochs - T + t)) for t in times]
    assert [lr_at(r, t) for t in times] == pytest.approx(want)


@pytest.mark.parametrize("original, eta", [(STEP, eta_step), (COSINE, eta_cosine)])
def test_slr_warms_up_then_compresses_the_training_schedule(original, eta):
    """SLR with budget T: max (1 - cos(pi t / w)) / 2 for t < w = T / 10, then
    eta(floor((t - w) E / (T - w)))."""
    T, E = 10, original.epochs
    r = recipes.retraining(original, "slr", T)
    top = max(eta(e) for e in range(E))
    for t in TIMES:
        want = top * (1 - math.cos(math.pi * t)) / 2 if t < 1 else eta(math.floor((t - 1) * E / 9))
        assert lr_at(r, t) == pytest.approx(want), t
    assert lr_at(r, 1.0) == pytest.approx(top)  # the warmup ends at the peak


@pytest.mark.parametrize("original, eta", [(STEP, eta_step), (COSINE, eta_cosine)])
def test_clr_warms_up_then_anneals_by_cosine_to_the_last_lr(original, eta):
    """CLR with budget T: the same warmup, then min + (max - min)(1 + cos(pi (t-w)/(T-w)))/2."""
    T = 10
    r = recipes.retraining(original, "clr", T)
    rates = [eta(e) for e in range(original.epochs)]
    top, low = max(rates), min(rates)
    for t in TIMES:
        if t < 1:
            want = top * (1 - math.cos(math.pi * t)) / 2
        else:
            want = low + (top - low) * (1 + math.cos(math.pi * (t - 1) / 9)) / 2
        assert lr_at(r, t) == pytest.approx(want), t


def test_each_cycle_restarts_the_schedule():
    """Iterative: cycle c of budget T repeats the lr of cycle 0 at t + c T."""
    r = recipes.retraining(STEP, "slr", 5, cycles=3)
    for t in (0, 0.3, 2.2, 4.9):
        assert lr_at(r, t + 10) == pytest.approx(lr_at(r, t))


def test_rewinding_past_the_training_is_refused():
    """LRW cannot replay more epochs than training had."""
    with pytest.raises(BadInput, match="at most 20"):
        recipes.retraining(STEP, "lrw", 25)


def test_a_retraining_schedule_without_its_training_schedule_is_refused():
    """`schedule=slr` from a preset has no training schedule to follow."""
    with pytest.raises(BadInput, match="sosp retrain"):
        recipes.resolve("digits", {"schedule": "slr"})


def test_a_recipe_without_original_keeps_its_dict():
    """Adding the `original` field renames no run folder: it is absent from as_dict unless set."""
    assert "original" not in recipes.PRESETS["cifar"].as_dict()
    assert recipes.retraining(STEP, "ft", 3).as_dict()["original"] == STEP.as_dict()
