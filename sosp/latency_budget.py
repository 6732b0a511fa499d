"""Pruning to a latency budget: which structures to remove so that a latency table predicts the
network at (1 - ratio) of its dense latency, losing as little saliency as possible.

`select` is HALP's latency knapsack solved by a greedy of saliency per latency: a move takes
one layer (a group of structures, `StructureGraph.layer_structures`) from its kept count down to
a lower allowed count (a multiple of the table's step and of `round_to`, or 1, within the cap);
it removes the layer's next structures in the method's own order (ascending score; for SOSP-I
those of least Eq. 4 criterion given everything pruned so far, so the correlations count), at
a cost of their saliency (SOSP-I: the exact increase of Eq. 4's objective) and a gain of the
predicted milliseconds saved, with every other layer's kept counts as they are (a conv's time
depends on its input and output counts, two layers' choices). The move with the least cost
per millisecond is taken (where none saves time alone, the one losing least time), until the
predicted latency is within budget; on the way, each step's cheapest move that alone would
reach the budget completes a candidate mask, and the cheapest mask within budget is the
answer (the greedy's classic guard against one large last item). Considering every lower
count within `LOOKAHEAD` structures, not only the next one, steps over the flat stretches a
device's kernels leave (a conv as fast with 9 channels as with 16).
`tests/test_latency_budget.py` compares it with an exact knapsack on small cases.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from sosp.errors import BadInput
from sosp.latency_table import LatencyModel
from sosp.selection import Saliency

LOOKAHEAD = 256  # structures: a move removes at most this many (or down to the next count)


def allowed_kept(n: int, cap: int, step: int, round_to: int | None) -> list[int]:
    """Kept counts a layer of `n` structures may move to, below n: multiples of
    lcm(step, round_to) and (without round_to) 1, keeping at least n - cap."""
    q = math.lcm(step, round_to or 1)
    counts = set(range(q, n, q)) | ({1} if round_to is None else set())
    return sorted(k for k in counts if n - cap <= k < n)


class _Costs:
    """The saliency lost by each layer's next structures: scores (times `scale`) ascending;
    or for SOSP-I the structures of least criterion Q_ss + 2 sum_{s' pruned} Q_ss' (times
    scale) given everything pruned so far, at the exact increase of Eq. 4's objective that
    pruning them in that order adds (their pairwise terms included)."""

    def __init__(self, sal: Saliency, layers: list[list[int]], scale: torch.Tensor | None):
        self.sal, self.layers = sal, layers
        values = sal.scores if sal.q is None else sal.q
        device = values.device
        n = len(values)
        ones = torch.ones(n, dtype=torch.float64, device=device)
        self.scale = ones if scale is None else scale.to(device, torch.float64)
        if sal.q is None:
            scores = (sal.scores.double() * self.scale).tolist()
            self.scores = scores
            self.ranked = [sorted(idx, key=lambda s: (scores[s], s)) for idx in layers]
        else:  # on q's device, as the greedy of Eq. 4 (q may be large: never copied)
            self.crit = sal.q.diagonal().double() * self.scale

    def next(self, layer: int, pruned_in_layer: set[int], m: int) -> tuple[list[int], list[float]]:
        """(the layer's next `m` structures, the cumulative cost after each)."""
        if self.sal.q is None:
            rest = [s for s in self.ranked[layer] if s not in pruned_in_layer][:m]
            return rest, _cumsum(self.scores[s] for s in rest)
        rest = [s for s in self.layers[layer] if s not in pruned_in_layer]
        idx = torch.tensor(rest, device=self.crit.device)
        crit, pos = torch.topk(self.crit[idx], min(m, len(idx)), largest=False, sorted=True)
        order = idx[pos]
        pairs = self.sal.q[order][:, order].double() * (2 * self.scale[order])  # [i, j]: 2 q s_j
        steps = crit + torch.triu(pairs, diagonal=1).sum(0)  # j's terms with those before it
        return order.tolist(), torch.cumsum(steps, 0).tolist()

    def pruned(self, structures: list[int]) -> None:
        if self.sal.q is not None:
            rows = self.sal.q[torch.tensor(structures, device=self.crit.device)]
            self.crit += 2 * rows.double().sum(0) * self.scale


def _cumsum(values: Iterable[float]) -> list[float]:
    out, total = [], 0.0
    for v in values:
        total += v
        out.append(total)
    return out


def select(
    sal: Saliency,
    model: LatencyModel,
    layers: list[list[int]],
    caps: Sequence[int],
    target_ms: float,
    round_to: int | None = None,
    scale: torch.Tensor | None = None,
) -> list[int]:
    """The structures to prune, in the order chosen, so that `model` predicts at most
    `target_ms` (module docstring). `layers[l]`: the structure indices of layer l; `caps[l]`:
    at most that many of them pruned. `model` ends as it started."""
    costs = _Costs(sal, layers, scale)
    allowed = [
        allowed_kept(len(idx), int(c), model.table.step, round_to)
        for idx, c in zip(layers, caps, strict=True)
    ]
    affects = [model.nodes_of(idx) for idx in layers]
    gains: dict[tuple[int, int], float] = {}  # (layer, kept count) -> predicted ms saved
    pruned: list[int] = []
    in_layer: list[set[int]] = [set() for _ in layers]
    start, spent, fastest = model.ops, 0.0, model.total
    best: tuple[float, list[int]] | None = None  # the cheapest mask found within budget
    try:
        while model.total > target_ms:
            moves = _moves(costs, model, layers, allowed, in_layer, gains)
            finishing = [m for m in moves if model.total - m.gain <= target_ms]
            if finishing:  # a complete mask: what was pruned and the cheapest last move
                last = min(finishing, key=lambda m: m.cost)
                if best is None or spent + last.cost < best[0]:
                    best = (spent + last.cost, pruned + last.chunk)
            saving = [m for m in moves if m.gain > 0]
            if saving:  # the least saliency per ms saved
                move = min(saving, key=lambda m: (m.cost / m.gain, m.cost))
            elif moves:  # none saves time alone (a kernel's step): the one losing least
                move = max(moves, key=lambda m: (m.gain, -m.cost))
            else:
                break
            changed = model.prune(move.chunk)
            costs.pruned(move.chunk)
            pruned += move.chunk
            spent += move.cost
            fastest = min(fastest, model.total)
            in_layer[move.layer].update(move.chunk)
            for key in [k for k in gains if affects[k[0]] & changed or k[0] == move.layer]:
                del gains[key]
            kept = len(layers[move.layer]) - len(in_layer[move.layer])
            allowed[move.layer] = [k for k in allowed[move.layer] if k < kept]
        if model.total <= target_ms and (best is None or spent < best[0]):
            best = (spent, pruned)
    finally:
        model.prune(pruned, restore=True)
        model.ops = start
    if best is None:
        reachable = 1 - fastest / model.table.dense_ms
        raise Unreachable(
            f"no mask reaches the latency asked for: the table predicts {fastest:.3g} ms at "
            f"best, {reachable:.1%} less than the dense {model.table.dense_ms:.3g} ms; pass a "
            f"ratio of at most {math.floor(reachable * 1000) / 1000:g}",
            fastest,
        )
    return best[1]


class Unreachable(BadInput):
    """A latency budget beyond every mask the selection found; `fastest_ms`: the best one's
    predicted ms."""

    def __init__(self, message: str, fastest_ms: float):
        super().__init__(message)
        self.fastest_ms = fastest_ms


@dataclass
class _Move:
    """Layer `layer` loses `chunk` (its next structures) at saliency `cost`, saving `gain` ms."""

    layer: int
    chunk: list[int]
    cost: float
    gain: float


def _moves(costs, model, layers, allowed, in_layer, gains) -> list[_Move]:
    """Every move: each layer down to each allowed count within `LOOKAHEAD` structures (at
    least the next count); gains cached in `gains` by (layer, count)."""
    out = []
    for layer, counts in enumerate(allowed):
        if not counts:
            continue
        kept = len(layers[layer]) - len(in_layer[layer])
        reach = max(LOOKAHEAD, kept - counts[-1])  # at least the next count
        counts = [k for k in counts if kept - k <= reach]
        chunk, cum = costs.next(layer, in_layer[layer], kept - counts[0])
        for k in counts:
            m = kept - k
            if (layer, k) not in gains:
                gains[(layer, k)] = model.saved_ms(chunk[:m])
            out.append(_Move(layer, chunk[:m], max(cum[m - 1], 0.0), gains[(layer, k)]))
    return out
