"""Retraining schedules after pruning (Zimmer, Spiegel & Pokutta, ICLR 2023): the learning
rate at time t in [0, T) epochs of a retraining phase of T epochs, from the original training
schedule eta(e) (the lr of its epoch e, as `sosp.train.fit` ran it, e = 0..E-1).

    ft   fine-tuning: the last (smallest) lr of training, min_e eta(e), throughout
    lrw  learning-rate rewinding (Renda et al., 2020): the last T epochs of training,
         eta(floor(E - T + t))
    slr  scaled learning-rate restarting (Le & Hua, 2021): a warmup over w = 0.1 T from 0 to
         the largest lr, max_lr (1 - cos(pi t / w)) / 2, then the whole training schedule
         compressed into the remaining T - w epochs, eta(floor((t - w) E / (T - w)))
    clr  cyclic learning-rate restarting (Le & Hua, 2021): the same warmup, then a cosine from
         max_lr down to min_lr over T - w epochs

t is fractional: a hook (`sosp.sparse_hooks.StepLR`) sets the lr after every optimizer step,
at t = epoch + step / steps_per_epoch (the paper's code steps its schedulers per iteration).
"""

from __future__ import annotations

import math
from collections.abc import Callable

WARMUP_FRACTION = 0.1  # SLR and CLR: warm up over the first 10% of the phase

# (t, T, eta, E) -> lr; eta(e) is the original lr of epoch e, E its epochs
Schedule = Callable[[float, int, Callable[[int], float], int], float]


def lr_range(eta: Callable[[int], float], epochs: int) -> tuple[float, float]:
    """(max, min) of the original schedule over its epochs."""
    rates = [eta(e) for e in range(epochs)]
    return max(rates), min(rates)


def warmup(t: float, budget: int, peak: float) -> float | None:
    """The warmup's lr at t (a cosine from 0 to `peak` over 10% of `budget`), None past it."""
    w = WARMUP_FRACTION * budget
    return peak * (1 - math.cos(math.pi * t / w)) / 2 if t < w else None


def fine_tuning(t: float, budget: int, eta, epochs: int) -> float:
    return lr_range(eta, epochs)[1]


def rewinding(t: float, budget: int, eta, epochs: int) -> float:
    return eta(min(epochs - 1, math.floor(epochs - budget + t)))


def scaled_restarting(t: float, budget: int, eta, epochs: int) -> float:
    peak = lr_range(eta, epochs)[0]
    rising = warmup(t, budget, peak)
    if rising is not None:
        return rising
    w = WARMUP_FRACTION * budget
    return eta(min(epochs - 1, math.floor((t - w) * epochs / (budget - w))))


def cyclic_restarting(t: float, budget: int, eta, epochs: int) -> float:
    peak, low = lr_range(eta, epochs)
    rising = warmup(t, budget, peak)
    if rising is not None:
        return rising
    w = WARMUP_FRACTION * budget
    return low + (peak - low) * (1 + math.cos(math.pi * (t - w) / (budget - w))) / 2


SCHEDULES: dict[str, Schedule] = {
    "ft": fine_tuning,
    "lrw": rewinding,
    "slr": scaled_restarting,
    "clr": cyclic_restarting,
}
