"""Selection: the O(S^2) greedy against the literal argmin of Eq. 4, caps, scopes, budgets."""

import math

import pytest
import torch

from sosp.errors import BadInput
from sosp.selection import (
    Saliency,
    _greedy_on_device,
    greedy_order,
    layer_caps,
    order,
    prefix_for_budget,
    rounded,
    shuffled,
    sorted_order,
)


def naive_eq4(q, layer_of, caps):
    """Literal Eq. 4: argmin over s not in M (layer below cap) of Q_ss + 2 sum_{s' in M} Q_ss'."""
    M = []
    used = [0] * len(caps)
    while True:
        best, best_val = None, math.inf
        for s in range(len(q)):
            if s in M or used[layer_of[s]] >= caps[layer_of[s]]:
                continue
            val = q[s, s].item() + 2 * sum(q[s, t].item() for t in M)
            if val < best_val:
                best, best_val = s, val
        if best is None:
            return M
        M.append(best)
        used[layer_of[best]] += 1


def random_q(S, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(S, S, generator=g, dtype=torch.float64)
    return 0.5 * (A @ A.T).abs() + torch.rand(S, generator=g, dtype=torch.float64).diag()


@pytest.mark.parametrize("seed", range(5))
def test_greedy_equals_literal_eq4(seed):
    """The running-sum greedy returns the same order as the naive O(S^3) argmin, caps too."""
    S = 40
    q = random_q(S, seed)
    layer_of = torch.arange(S) % 4
    caps = torch.tensor([9, 5, 10, 3])
    assert greedy_order(q, layer_of, caps) == naive_eq4(q, layer_of.tolist(), caps.tolist())


def torch_loop_eq4(q, layer_of, caps, scale=None):
    """The greedy as it was before it moved to NumPy (a torch op per step, `int(argmin)`): the
    reference for the arithmetic of the criterion (row to float64, times 2 scale, added in
    the order chosen), so that ties and near-ties resolve alike."""
    weight = torch.ones(len(q), dtype=torch.float64) if scale is None else scale.double()
    crit = q.diagonal().to(torch.float64) * weight
    step = 2 * weight
    caps_left, layer_list = caps.tolist(), layer_of.tolist()
    for layer, cap in enumerate(caps_left):
        if cap == 0:
            crit[layer_of == layer] = math.inf
    out = []
    for _ in range(sum(caps_left)):
        s = int(crit.argmin())
        out.append(s)
        crit += q[s].to(torch.float64) * step
        crit[s] = math.inf
        caps_left[layer_list[s]] -= 1
        if caps_left[layer_list[s]] == 0:
            crit[layer_of == layer_list[s]] = math.inf
    return out


def tied_q(S, seed, dtype, signed=False):
    """Symmetric integer-valued Q (entries 0-3, or -2..2 when `signed`): many exact ties."""
    g = torch.Generator().manual_seed(seed)
    low, high = (-2, 3) if signed else (0, 4)
    A = torch.randint(low, high, (S, S), generator=g)
    return (A.triu() + A.triu(1).T).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["random", "tied", "tied_signed"])
@pytest.mark.parametrize("scaled", [False, True])
def test_greedy_paths_equal_the_torch_loop(dtype, seed, kind, scaled):
    """The NumPy loop (halved criterion without scale below float64, else row times 2 scale)
    and the on-device loop return the old torch loop's order, with caps (one 0), kernel
    scales, Q with exact ties (integer-valued) and with negative entries."""
    S = 60
    q = (
        random_q(S, seed).to(dtype)
        if kind == "random"
        else tied_q(S, seed, dtype, "signed" in kind)
    )
    layer_of = torch.randperm(S, generator=torch.Generator().manual_seed(seed)) % 5
    caps = torch.tensor([11, 0, 7, 11, 3])
    scale = 1 / torch.tensor([1.0, 2.0, 3.0, 4.0, 1.0])[layer_of] if scaled else None
    want = torch_loop_eq4(q, layer_of, caps, scale)
    assert len(want) == sum(caps.tolist())
    assert greedy_order(q, layer_of, caps, scale) == want
    assert _greedy_on_device(q, layer_of, caps, scale) == want


@pytest.mark.parametrize("seed", range(3))
def test_greedy_breaks_ties_like_literal_eq4(seed):
    """With integer-valued Q every sum is exact: the order is the literal Eq. 4's, whose
    argmin takes the first index on ties."""
    S = 30
    q = tied_q(S, seed, torch.float32)
    layer_of = torch.arange(S) % 3
    caps = torch.tensor([9, 4, 9])
    want = naive_eq4(q, layer_of.tolist(), caps.tolist())
    assert greedy_order(q, layer_of, caps) == want
    assert _greedy_on_device(q, layer_of, caps, None) == want


def test_sorted_order_respects_caps():
    scores = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    layer_of = torch.tensor([0, 0, 0, 1, 1])
    assert sorted_order(scores, layer_of, torch.tensor([1, 2])) == [0, 3, 4]


def test_layer_caps_keep_one_structure():
    """Every layer keeps at least one structure; a fraction caps by floor(f * n)."""
    assert layer_caps([16, 1, 64], None).tolist() == [15, 0, 63]
    assert layer_caps([16, 64], 0.95).tolist() == [15, 60]
    with pytest.raises(BadInput):
        layer_caps([4], 1.5)


def test_local_scope_prunes_each_layer_alike():
    """Local selection: a prefix of k = ratio * S prunes ratio of every layer (integral case)."""
    scores = torch.rand(12)
    layer_of = torch.tensor([0] * 4 + [1] * 8)
    o = order(Saliency(scores=scores), layer_of, layer_caps([4, 8], None), "local")
    first = o[:6]
    assert sum(layer_of[s] == 0 for s in first) == 2 and sum(layer_of[s] == 1 for s in first) == 4
    # within a layer, lowest scores first
    l1 = [s for s in o if layer_of[s] == 1]
    assert l1 == sorted(l1, key=lambda s: scores[s].item())


def test_budget_is_the_shortest_prefix():
    """params/MACs budgets take the shortest prefix reaching the fraction."""
    full = list(range(10))
    removed = lambda p: len(p) / 10 * 0.8  # noqa: E731
    assert prefix_for_budget(full, 0.4, "params", 10, removed) == full[:5]
    assert prefix_for_budget(full, 0.3, "structures", 10, removed) == full[:3]


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_ratio_outside_unit_interval(ratio):
    with pytest.raises(BadInput, match="ratio"):
        prefix_for_budget(list(range(4)), ratio, "structures", 4, lambda p: 0.0)


def test_unreachable_budget_is_an_error():
    with pytest.raises(BadInput, match="no mask can"):
        prefix_for_budget(list(range(4)), 0.9, "params", 4, lambda p: 0.1 * len(p))
    with pytest.raises(BadInput, match="no mask can"):
        prefix_for_budget(list(range(4)), 0.9, "structures", 10, lambda p: 0.0)


def test_nan_saliency_is_rejected():
    with pytest.raises(BadInput, match="NaN"):
        Saliency(scores=torch.tensor([0.1, float("nan")])).check_finite("sosp_h")


def test_rounded_keeps_a_multiple_of_k_per_layer():
    """Per layer of n structures with c in the prefix, the first n - min(n, k ceil((n-c)/k))
    of them (in prefix order) are pruned: layer 0 (n=8, c=3) keeps 8 and prunes none, layer 1
    (n=8, c=5) keeps 4 and prunes its first 4, layer 2 (n=3 < k) prunes none."""
    layer_of = [0] * 8 + [1] * 8 + [2] * 3
    prefix = [9, 0, 10, 1, 11, 2, 12, 13, 16]
    assert rounded(prefix, layer_of, [8, 8, 3], 4) == [9, 10, 11, 12]
    assert rounded(prefix, layer_of, [8, 8, 3], 1) == prefix


def test_rounded_masks_meet_the_budget_with_the_shortest_prefix():
    """With a choice function, the budget is met by the choice of the shortest prefix whose
    choice meets it, and the result is that choice."""
    layer_of, sizes = [0] * 8 + [1] * 8, [8, 8]
    full = list(range(16))  # layer 0 first

    def chosen(p):
        return rounded(p, layer_of, sizes, 4)

    removed = len  # each structure removes one unit
    got = prefix_for_budget(full, 0.4, "params", 16, lambda p: removed(p) / 16, chosen)
    # prefix 8 prunes 4 of layer 0 (it keeps at least k), prefix 12 then 4 of layer 1: 8/16
    assert got == [0, 1, 2, 3, 8, 9, 10, 11]
    got = prefix_for_budget(full, 0.25, "structures", 16, None, chosen)
    assert got == [0, 1, 2, 3]


def test_shuffled_moves_each_units_pattern_to_a_seeded_random_unit():
    """In a group of units (a, b) the pruned positions of one unit move to another unit of
    the group, position by position: each group keeps its pattern counts, the same seed gives
    the same mask, a larger mask's shuffle holds a smaller's, and the seeds move the mask."""
    groups = [[(0, 1), (2, 3), (4, 5), (6, 7)], [(8,), (9,), (10,), (11,), (12,)]]
    small, large = [0, 1, 3, 8], [0, 1, 3, 5, 8, 9]

    def patterns(mask):
        return [sorted(tuple(s in mask for s in u) for u in units) for units in groups]

    masks = [shuffled(small, groups, seed) for seed in range(20)]
    assert all(patterns(m) == patterns(small) for m in masks)
    assert masks[0] == shuffled(small, groups, 0) == sorted(masks[0])
    assert len({tuple(m) for m in masks}) > 10
    assert all(set(m) <= set(shuffled(large, groups, seed)) for seed, m in enumerate(masks))
