"""Turn saliencies into a pruning order and the order into a mask that meets a budget.

A method yields either per-structure `scores` (prune the smallest first) or the SOSP-I matrix
`q` (greedy Eq. 4). Selection is `global` (one order over all structures) or `local` (each
layer ranked on its own; the orders interleave so that a prefix prunes the same fraction of
every layer). Every layer keeps at least one structure and at most `max_layer_fraction` of its
structures are pruned; a "layer" here is a group of `api.layer_index`: a layer's structures, or
the part of them that another layer reads alone (a piece of a split). The budget is a fraction
of structures, of parameters, of MACs or of predicted latency removed (a latency budget with
global scope is `sosp.latency_budget`'s knapsack instead of a prefix); for the others the
shortest prefix of the order that removes at least that fraction of the exact count of the
pruned architecture is taken (binary search). With `round_to=k` every layer keeps a multiple of
k structures (or all): each prefix prunes, per layer, only as many of its structures as that
allows (`rounded`), and the search runs over the rounded masks. `shuffled` exchanges a mask's
structures at random among those that sit alike, so each layer's count and the pruned
architecture stay (the paper's shuffle control).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from sosp.errors import BadInput

BUDGETS = ("structures", "params", "macs", "latency")
SCOPES = ("global", "local")


@dataclass
class Saliency:
    """What a method computed: `scores` [S] (lower = prune first) or `q` [S, S] for greedy."""

    scores: torch.Tensor | None = None
    q: torch.Tensor | None = None

    def check_finite(self, method: str) -> None:
        """Refuse NaN or infinite saliencies, counting structures: a score, or a row of Q
        (the structure's own and pairwise terms) with any non-finite entry."""
        values = self.scores if self.scores is not None else self.q
        bad = ~torch.isfinite(values)
        if bad.any():
            rows = bad if bad.dim() == 1 else bad.flatten(1).any(dim=1)
            raise BadInput(
                f"method {method!r} produced NaN or infinite saliencies for "
                f"{int(rows.sum())} of {len(rows)} structures; the weights or the loss on the "
                "pruning data are not finite (check the checkpoint and the data)"
            )


def greedy_order(
    q: torch.Tensor, layer_of: torch.Tensor, caps: torch.Tensor, scale: torch.Tensor | None = None
) -> list[int]:
    """SOSP-I's greedy selection (Eq. 4) in O(S^2): repeatedly add the structure s not in M
    minimizing Q_ss + 2 sum_{s' in M} Q_ss' (times `scale[s]`), skipping layers whose cap
    (max structures pruned) is reached. Returns the whole order (until every layer is at its
    cap); on ties, the lowest index (argmin's first).

    q [S, S] is symmetric (Q = |G|/2 + diag |lambda_1|), so the running criterion takes one
    contiguous row per step: crit [S] = scale * diag(Q) + sum over M of Q[s'] * 2 scale, in
    float64, each row's terms rounded and added in the order chosen, with +inf for the
    structures that may not be chosen; layer_of [S], caps [L], scale [S]. On the CPU the loop
    runs in NumPy (`_greedy_host`); elsewhere on q's device with no host synchronization per
    step (`_greedy_on_device`). Both give the same order, bit for bit of the criterion."""
    if q.device.type == "cpu":
        return _greedy_host(q, layer_of, caps, scale)
    return _greedy_on_device(q, layer_of, caps, scale)


def _greedy_host(
    q: torch.Tensor, layer_of: torch.Tensor, caps: torch.Tensor, scale: torch.Tensor | None
) -> list[int]:
    """`greedy_order` on the host: per step one argmin, one row added into crit [S] with
    preallocated buffers (a NumPy call costs a microsecond, a torch one several, and torch's
    argmin on [S] is slower). Without `scale` and with a q [S, S] below float64, it tracks
    crit / 2 = diag(Q) / 2 + sum of rows, one pass per step instead of two: halving is exact
    there (no float32 sum comes near float64's overflow or subnormals), so the argmins are the
    same."""
    q = q.detach()
    if q.dtype not in (torch.float32, torch.float64):
        q = q.float()  # exact (float16, bfloat16); NumPy has no bfloat16
    rows = q.numpy()
    halved = scale is None and q.dtype == torch.float32
    weight = np.ones(len(rows)) if scale is None else scale.detach().cpu().double().numpy()
    crit = np.diagonal(rows).astype(np.float64) * (0.5 if halved else weight)
    step, term = 2 * weight, np.empty(len(rows))
    caps_left, layer_list = caps.tolist(), layer_of.tolist()
    members = [m.numpy() for m in _members(layer_of.cpu(), len(caps_left), torch.device("cpu"))]
    for layer, cap in enumerate(caps_left):
        if cap == 0:
            crit[members[layer]] = math.inf
    order: list[int] = []
    for _ in range(sum(caps_left)):
        s = int(crit.argmin())
        order.append(s)
        if halved:
            np.add(crit, rows[s], out=crit)
        else:
            np.multiply(rows[s], step, out=term)
            np.add(crit, term, out=crit)
        crit[s] = math.inf
        layer = layer_list[s]
        caps_left[layer] -= 1
        if caps_left[layer] == 0:
            crit[members[layer]] = math.inf
    return order


GRAPH_BLOCK = 256  # greedy steps per captured CUDA graph


def _greedy_on_device(
    q: torch.Tensor,
    layer_of: torch.Tensor,
    caps: torch.Tensor,
    scale: torch.Tensor | None,
    block: int = GRAPH_BLOCK,
) -> list[int]:
    """`greedy_order` on q's device (any, the CPU included) without reading anything back
    until the end: the argmin s [1] stays a tensor that selects the row and is written into
    the order at a position kept on the device, and each layer's count left [L] is
    decremented there, its structures masked (+inf) by a fill that is empty until the count
    reaches 0 (`_GreedyState.step`). On CUDA `block` steps are captured once as a CUDA graph
    and replayed (one launch for about 14 x `block` kernels), the rest run as they are. The
    criterion's arithmetic is `_greedy_host`'s (row to float64, times 2 scale, added), so the
    order is the same."""
    state = _GreedyState(q, layer_of, caps, scale)
    steps = len(state.order)
    done = 0
    if q.device.type == "cuda" and steps >= 2 * block:
        graph, done = state.captured(block)
        for _ in range((steps - done) // block):
            graph.replay()
            done += block
    for _ in range(steps - done):
        state.step()
    return state.order.tolist()


class _GreedyState:
    """The greedy's tensors on q's device: crit [S] float64, the order [n] being written and
    its position [1], the count left per layer [L]."""

    def __init__(self, q, layer_of, caps, scale) -> None:
        device = q.device
        weight = torch.ones(len(q), dtype=torch.float64, device=device)
        if scale is not None:
            weight = scale.to(device, torch.float64)
        self.q, self.step_weight = q, 2 * weight
        self.crit = q.diagonal().to(torch.float64) * weight
        self.layer_of = layer_of.to(device)
        self.left = caps.to(device).clone()
        self.crit.masked_fill_(self.left[self.layer_of] == 0, math.inf)
        self.minus_one = torch.full((1,), -1, dtype=self.left.dtype, device=device)
        self.order = torch.empty(int(caps.sum()), dtype=torch.long, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)

    def step(self) -> None:
        """Choose the next structure: no value is read back to the host."""
        s = self.crit.argmin().view(1)
        self.order.index_copy_(0, self.position, s)
        self.position += 1
        self.crit += self.q.index_select(0, s)[0].to(torch.float64) * self.step_weight
        self.crit.index_fill_(0, s, math.inf)
        layer = self.layer_of.index_select(0, s)
        self.left.index_add_(0, layer, self.minus_one)
        full = (self.layer_of == layer) & (self.left.index_select(0, layer) == 0)
        self.crit.masked_fill_(full, math.inf)

    def captured(self, block: int) -> tuple[torch.cuda.CUDAGraph, int]:
        """(a CUDA graph of `block` steps, the steps taken meanwhile): three steps run first on
        a side stream (CUDA's warm-up before a capture; they are steps of the order), then
        the capture records without running."""
        side = torch.cuda.Stream(self.q.device)
        side.wait_stream(torch.cuda.current_stream(self.q.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self.step()
        torch.cuda.current_stream(self.q.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(block):
                self.step()
        return graph, 3


def _members(layer_of: torch.Tensor, num_layers: int, device: torch.device) -> list[torch.Tensor]:
    """Per layer, the indices [n_k] of its structures, on `device`."""
    ranked = torch.argsort(layer_of, stable=True)
    counts = torch.bincount(layer_of, minlength=num_layers).tolist()
    return [part.to(device) for part in torch.split(ranked, counts)]


def sorted_order(scores: torch.Tensor, layer_of: torch.Tensor, caps: torch.Tensor) -> list[int]:
    """Structures by ascending score (stable), skipping those beyond their layer's cap."""
    caps_left, layer_list = caps.tolist(), layer_of.tolist()
    order = []
    for s in torch.argsort(scores.double(), stable=True).tolist():
        if caps_left[layer_list[s]] > 0:
            caps_left[layer_list[s]] -= 1
            order.append(s)
    return order


def layer_caps(layer_sizes: list[int], max_layer_fraction: float | None) -> torch.Tensor:
    """Max structures pruned per layer: floor(fraction * n), never all n."""
    if max_layer_fraction is not None and not 0 < max_layer_fraction <= 1:
        raise BadInput(f"max_layer_fraction must be in (0, 1], not {max_layer_fraction}")
    frac = 1.0 if max_layer_fraction is None else max_layer_fraction
    return torch.tensor([min(n - 1, math.floor(frac * n + 1e-9)) for n in layer_sizes])


def order(
    sal: Saliency,
    layer_of: torch.Tensor,
    caps: torch.Tensor,
    scope: str = "global",
    scale: torch.Tensor | None = None,
) -> list[int]:
    """The pruning order of all structures that may be pruned under the caps."""
    if scope not in SCOPES:
        raise BadInput(f"scope must be one of {SCOPES}, not {scope!r}")
    if scope == "global":
        return _one_order(sal, torch.arange(len(layer_of)), layer_of, caps, scale)
    ranked = []  # (fraction of its layer pruned after this one, layer, structure)
    for layer in range(len(caps)):
        idx = (layer_of == layer).nonzero().flatten()
        sub = Saliency(
            None if sal.scores is None else sal.scores[idx],
            None if sal.q is None else sal.q[idx][:, idx],
        )
        local = _one_order(
            sub,
            idx,
            torch.zeros(len(idx), dtype=torch.long),
            caps[layer : layer + 1],
            None if scale is None else scale[idx],
        )
        ranked += [((r + 1) / len(idx), layer, s) for r, s in enumerate(local)]
    return [s for *_, s in sorted(ranked)]


def _one_order(
    sal: Saliency,
    idx: torch.Tensor,
    layer_of: torch.Tensor,
    caps: torch.Tensor,
    scale: torch.Tensor | None,
) -> list[int]:
    """Order of the structures `idx` (saliency, layer_of and scale indexed like idx)."""
    if sal.q is not None:
        local = greedy_order(sal.q, layer_of, caps, scale)
    else:
        scores = sal.scores.double().cpu()  # one sort on the host, whatever the device
        scores = scores if scale is None else scores * scale.cpu()
        local = sorted_order(scores, layer_of, caps)
    positions = idx.tolist()  # one call, not two operator calls per structure
    return [positions[s] for s in local]


def prefix_for_budget(
    full_order: list[int],
    ratio: float,
    budget: str,
    num_structures: int,
    removed_fraction: Callable[[list[int]], float],
    chosen: Callable[[list[int]], list[int]] | None = None,
) -> list[int]:
    """The structures to prune: the shortest prefix of `full_order` meeting the budget.

    `removed_fraction(pruned)` gives the fraction of params, MACs or latency a mask removes.
    `chosen(prefix)` maps a prefix to the structures really pruned (e.g. `rounded`; it must
    grow with the prefix); the shortest prefix whose choice meets the budget is taken.
    """
    if not 0 < ratio < 1:
        raise BadInput(f"ratio must lie in (0, 1), not {ratio}")
    if budget not in BUDGETS:
        raise BadInput(f"budget must be one of {BUDGETS}, not {budget!r}")
    if budget == "structures" and chosen is None:
        k = round(ratio * num_structures)
        if k > len(full_order):
            raise BadInput(
                f"no mask can prune {k} of {num_structures} structures: {_KEPT}, so at most "
                f"{len(full_order)} can go; {_at_most(len(full_order) / num_structures)}"
            )
        return full_order[:k]
    chosen = chosen or (lambda prefix: prefix)
    if budget == "structures":  # as many as the rounded count, like the branch above
        ratio = round(ratio * num_structures) / num_structures
        removed = lambda prefix: len(chosen(prefix)) / num_structures  # noqa: E731
    else:
        removed = lambda prefix: removed_fraction(chosen(prefix))  # noqa: E731
    most = removed(full_order)
    if most < ratio:
        raise BadInput(
            f"no mask can remove {ratio:.1%} of the {budget}: {_KEPT}, so pruning all the "
            f"others removes {most:.1%}; {_at_most(most)}"
        )
    lo, hi = 0, len(full_order)  # removed(prefix hi) >= ratio
    while lo < hi:
        mid = (lo + hi) // 2
        if removed(full_order[:mid]) >= ratio:
            hi = mid
        else:
            lo = mid + 1
    return chosen(full_order[:hi])


# Why a ratio can be out of reach: what every mask keeps (the settings that keep more named
# as conditions, since the message cannot tell which of them are set).
_KEPT = (
    "every layer keeps at least one structure (more with max_layer_fraction or round_to) and "
    "excluded layers keep all"
)


def _at_most(reachable: float) -> str:
    """The fix: a ratio no larger than the `reachable` fraction, rounded down to 3 digits."""
    return f"pass a ratio of at most {math.floor(reachable * 1000) / 1000:g}"


def rounded(prefix: list[int], layer_of: list[int], sizes: list[int], k: int) -> list[int]:
    """The structures of `prefix` (in its order) that leave every layer a multiple of `k`
    structures, or all of them: a layer with n structures of which c are in `prefix` keeps
    min(n, k * ceil(max(n - c, 1) / k)) (never none), pruning the first n - that of its
    structures in `prefix`. Grows with the prefix."""
    if k < 1:
        raise BadInput(f"round_to must be a positive number of channels, not {k}")
    in_prefix = [0] * len(sizes)
    for s in prefix:
        in_prefix[layer_of[s]] += 1
    pairs = zip(sizes, in_prefix, strict=True)
    allowed = [n - min(n, k * math.ceil(max(n - c, 1) / k)) for n, c in pairs]
    out = []
    for s in prefix:
        if allowed[layer_of[s]] > 0:
            allowed[layer_of[s]] -= 1
            out.append(s)
    return out


def shuffled(pruned: list[int], groups: list[list[tuple[int, ...]]], seed: int) -> list[int]:
    """A random mask like `pruned`: in each group of exchangeable units (tuples of structures,
    position i of each alike, e.g. `StructureGraph.exchangeable`), unit j's pruned positions
    go to unit perm[j] of a random permutation, drawn group by group from a generator seeded
    with `seed` (the same whatever `pruned` is, so a larger mask's shuffle holds a smaller's).
    The groups must cover every structure. In index order."""
    chosen = set(pruned)
    g = torch.Generator().manual_seed(seed)
    out = []
    for units in groups:
        perm = torch.randperm(len(units), generator=g).tolist()
        for unit, target in zip(units, perm, strict=True):
            out += [units[target][pos] for pos, s in enumerate(unit) if s in chosen]
    return sorted(out)
