"""Magnitude ranks filters by their weight norm; random is reproducible for a seed and differs
across seeds."""

import pytest

import sosp
from sosp.errors import BadInput
from tests.brute import ascending_keeping_one, setup


@pytest.mark.parametrize("norm,p", [("l1", 1), ("l2", 2)])
def test_magnitude_scores_are_filter_norms(norm, p):
    model, graph, x, y = setup()
    r = sosp.prune(model, "magnitude", 0.25, [(x, y)], n_samples=6, norm=norm)
    for name, ch in graph.structures:
        w = graph.layers[name].module.weight[ch].detach()
        assert r.scores[(name, ch)] == pytest.approx(w.abs().pow(p).sum().pow(1 / p).item())
    assert r.order == ascending_keeping_one(r.scores)[: len(r.order)]


def test_magnitude_rejects_unknown_norm():
    model, _, x, y = setup()
    with pytest.raises(BadInput, match="l1, l2"):
        sosp.prune(model, "magnitude", 0.25, [(x, y)], n_samples=6, norm="linf")


def test_random_is_seeded():
    model, _, x, y = setup()

    def order(seed):
        return sosp.prune(model, "random", 0.5, [(x, y)], n_samples=6, seed=seed).order

    assert order(0) == order(0)
    assert order(0) != order(1)
