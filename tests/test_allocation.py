"""Sparsity allocations, each against its definition written out on a tiny net's weights."""

import math

import pytest
import torch

from sosp import allocation, unstructured
from sosp.errors import BadInput, UnknownName
from tests.sparse_nets import SparseTiny


def scores():
    torch.manual_seed(3)
    return unstructured.magnitude_scores(SparseTiny())


def kept_by_threshold(values: dict, kept: int) -> dict:
    """Brute force: per layer, how many values are >= the kept-th largest of all of them."""
    every = sorted((float(v) for s in values.values() for v in s.flatten()), reverse=True)
    threshold = every[kept - 1]
    return {name: sum(float(v) >= threshold for v in s.flatten()) for name, s in values.items()}


@pytest.mark.parametrize("sparsity", [0.3, 0.75, 0.95])
def test_global_keeps_the_largest_magnitudes_of_the_whole_net(sparsity):
    """global: one threshold; the per-layer counts are those of the N - round(sN) largest |w|."""
    s = scores()
    n = sum(v.numel() for v in s.values())
    got = allocation.counts("global", s, sparsity)
    assert got == kept_by_threshold(s, n - round(sparsity * n))


def test_uniform_prunes_every_layer_to_the_sparsity():
    """uniform: layer l keeps n_l - round(s n_l)."""
    s = scores()
    got = allocation.counts("uniform", s, 0.6)
    assert got == {k: v.numel() - round(0.6 * v.numel()) for k, v in s.items()}


@pytest.mark.parametrize("sparsity", [0.3, 0.55])
def test_uniform_plus_keeps_the_first_layer_dense_and_caps_the_last(sparsity):
    """uniform+: the first layer dense, the last at most 80% sparse, the others at one common
    sparsity q, and (1 - kept / N) = s up to per-layer rounding."""
    s = scores()
    sizes = {k: v.numel() for k, v in s.items()}
    got = allocation.counts("uniform_plus", s, sparsity)
    assert got["conv1.weight"] == sizes["conv1.weight"]
    assert 1 - got["fc.weight"] / sizes["fc.weight"] <= 0.8 + 1 / sizes["fc.weight"]
    middle = [k for k in sizes if k not in ("conv1.weight", "fc.weight")]
    qs = {1 - got[k] / sizes[k] for k in middle}
    assert max(qs) - min(qs) <= 1 / min(sizes[k] for k in middle) + 1e-9
    pruned = sum(sizes[k] - got[k] for k in sizes)
    assert pruned == pytest.approx(sparsity * sum(sizes.values()), abs=len(sizes))


def test_uniform_plus_refuses_a_sparsity_it_cannot_reach():
    """With the first layer dense (72 of 179 weights), 0.9 overall is out of reach."""
    with pytest.raises(BadInput, match="uniform\\+ cannot reach"):
        allocation.counts("uniform_plus", scores(), 0.9)


def test_erk_densities_follow_the_erdos_renyi_kernel_ratio():
    """ERK: the kept weights total (1 - s) N; each sparse layer's density is
    eps * sum(shape) / prod(shape) with one eps; a dense layer is one eps would push past 1."""
    s = scores()
    raw = {k: sum(v.shape) / v.numel() for k, v in s.items()}
    for sparsity in (0.5, 0.9):
        d = allocation.erk_densities(s, sparsity)
        total = sum(d[k] * v.numel() for k, v in s.items())
        assert total == pytest.approx((1 - sparsity) * sum(v.numel() for v in s.values()))
        sparse_layers = [k for k in s if d[k] < 1]
        eps = {d[k] / raw[k] for k in sparse_layers}
        assert max(eps) == pytest.approx(min(eps))
        for k in s:
            if d[k] == 1:
                assert min(eps) * raw[k] >= 1 - 1e-12
    assert allocation.erk_densities(s, 0.5)["fc.weight"] == 1.0  # 8/15 * eps > 1 here
    counts = allocation.counts("erk", s, 0.9)
    d = allocation.erk_densities(s, 0.9)
    assert counts == {k: round(d[k] * v.numel()) for k, v in s.items()}


def lamp_by_definition(values: torch.Tensor) -> list[float]:
    """w_u^2 / sum over v of the layer with |w_v| >= |w_u| of w_v^2, entry by entry (no ties)."""
    flat = [float(v) for v in values.flatten()]
    return [u**2 / sum(v**2 for v in flat if abs(v) >= abs(u)) for u in flat]


def test_lamp_scores_and_counts_match_their_definition():
    """LAMP's score of each weight by its definition; the counts keep the N - round(sN) largest
    scores of the net."""
    s = scores()
    lamp = allocation.lamp_scores(s)
    for name, v in s.items():
        assert lamp[name].flatten().tolist() == pytest.approx(lamp_by_definition(v))
    n = sum(v.numel() for v in s.values())
    assert allocation.counts("lamp", s, 0.8) == kept_by_threshold(lamp, n - round(0.8 * n))
    # the largest weight of every layer scores 1: with 5 kept of 4 layers none is emptied
    assert all(c >= 1 for c in allocation.counts("lamp", s, 0.97).values())


def test_already_pruned_entries_are_pruned_first():
    """An entry at -inf (pruned in an earlier cycle) is never kept while enough others are."""
    s = scores()
    s["conv1.weight"].view(-1)[:10] = -math.inf
    mask = {k: unstructured.keep_largest(v, c) for (k, v), c in zip(
        s.items(), allocation.counts("global", s, 0.5).values(), strict=True)}  # fmt: skip
    assert not mask["conv1.weight"].view(-1)[:10].any()


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_sparsity_outside_the_open_interval_is_refused(bad):
    """A sparsity outside (0, 1) stops with a message naming the range."""
    with pytest.raises(BadInput, match="must lie in \\(0, 1\\)"):
        allocation.counts("global", scores(), bad)


def test_unknown_allocation_names_the_known_ones():
    """An unknown allocation stops with the list to choose from."""
    with pytest.raises(UnknownName, match="global, uniform, uniform_plus, erk, lamp"):
        allocation.counts("random", scores(), 0.5)
