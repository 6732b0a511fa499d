"""Pruning to a latency budget: which structures to remove so that a latency table predicts the
network at (1 - ratio) of its dense latency, losing as little saliency as possible.

`LatencyModel` predicts a mask's latency from a `LatencyTable`, updated structure by structure:
each tensor's kept channel count (a channel stays while any of its writers is alive) and each
operation's time at its kept counts.

`select` is HALP's latency knapsack solved by a greedy of saliency per latency: a move takes
one layer (a group of structures, `StructureGraph.layer_structures`) from its kept count down to
a lower allowed count (a multiple of the table's step and of `round_to`, or 1, within the cap);
it removes the layer's next structures in the method's own order (ascending score; for SOSP-I
those of least Eq. 4 criterion given everything pruned so far, so the correlations count), at
a cost of their saliency (SOSP-I: the exact increase of Eq. 4's objective)
and a gain of the predicted milliseconds saved, with every other layer's kept counts as they
are (a conv's time depends on its input and output counts, two layers' choices). The move
with the least cost per millisecond is taken, or, once one move alone reaches the budget, the
cheapest such move; until the predicted latency is within budget. Considering every lower
count within `LOOKAHEAD` structures, not only the next one, steps over the flat stretches a
device's kernels leave (a conv as fast with 9 channels as with 16).
`tests/test_latency_budget.py` compares it with an exact knapsack on small cases.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from sosp.errors import BadInput
from sosp.latency_table import LatencyTable
from sosp.selection import Saliency
from sosp.structures import StructureGraph

LOOKAHEAD = 256  # structures: a move removes at most this many (or down to the next count)


class LatencyModel:
    """The predicted ms of `graph`'s network (the table's) as structures are pruned."""

    def __init__(self, table: LatencyTable, graph: StructureGraph, input_shape: tuple[int, ...]):
        table.check_network(graph, input_shape)
        self.table = table
        tensors = {n for n in table.nodes} | {e.input for e in table.nodes.values() if e.input}
        self.kept = {t: len(graph.sources[t]) for t in tensors}
        self.readers: dict[str, list[str]] = {t: [] for t in tensors}
        for name, entry in table.nodes.items():
            self.readers[name].append(name)
            if entry.input is not None:
                self.readers[entry.input].append(name)
        self.touch, self.alive = _channel_owners(graph, tensors)
        self.ms = {name: self._node_ms(name) for name in table.nodes}
        self.ops = sum(self.ms.values())  # the operations' isolated ms, summed

    @property
    def total(self) -> float:
        """The predicted ms of the network as it is now pruned."""
        return self.table.predicted_ms(self.ops)

    def _node_ms(self, name: str) -> float:
        entry = self.table.nodes[name]
        kin = self.kept[entry.input] if entry.input is not None else entry.in_channels
        return self.table.node_ms(name, kin, self.kept[name])

    def nodes_of(self, structures: Iterable[int]) -> set[str]:
        """The operations whose time the kept counts of these structures' channels set."""
        return {n for s in structures for t, _ in self.touch[s] for n in self.readers[t]}

    def prune(self, structures: Iterable[int], restore: bool = False) -> set[str]:
        """Mark `structures` pruned (or, with `restore`, alive again); returns the operations
        whose time changed."""
        changed = set()
        for s in structures:
            for t, c in self.touch[s]:
                before = self.alive[c]
                self.alive[c] += 1 if restore else -1
                if (before == 0) != (self.alive[c] == 0):  # the channel died or came back
                    self.kept[t] += 1 if restore else -1
                    changed.update(self.readers[t])
        for name in changed:
            new = self._node_ms(name)
            self.ops += new - self.ms[name]
            self.ms[name] = new
        return changed

    def saved_ms(self, structures: Sequence[int]) -> float:
        """Predicted ms that pruning `structures` as well would save (nothing kept pruned)."""
        return self.total - self.table.predicted_ms(self.ops_of(structures))

    def ops_of(self, structures: Iterable[int]) -> float:
        """The operations' summed isolated ms with `structures` pruned as well (the model is
        left as it was)."""
        structures, before = list(structures), self.ops
        self.prune(structures)
        out = self.ops
        self.prune(structures, restore=True)
        self.ops = before  # no rounding drift
        return out

    def predict(self, pruned: Iterable[int]) -> float:
        """Predicted ms with `pruned` pruned as well (the model is left as it was)."""
        return self.table.predicted_ms(self.ops_of(pruned))


def _channel_owners(
    graph: StructureGraph, tensors: set[str]
) -> tuple[list[list[tuple[str, int]]], list[int]]:
    """(per structure, the (tensor, channel id) pairs it writes; per channel id, how many
    structures writing it are alive). A channel with a writer no structure owns (an excluded
    or unprunable layer, the input) never goes and gets no id; a follower (a gate's channel)
    counts as its leaders."""
    owner = {w: s for s, members in enumerate(graph.members) for w in members}

    def owners(w: int) -> set[int] | None:
        if w in graph.followers:
            found = [owners(v) for v in graph.followers[w]]
            return None if any(o is None for o in found) else set().union(*found)
        return {owner[w]} if w in owner else None

    touch: list[list[tuple[str, int]]] = [[] for _ in graph.members]
    alive: list[int] = []
    for t in sorted(tensors):
        for writers in graph.sources[t]:
            found = [owners(w) for w in writers]
            if not found or any(o is None for o in found):
                continue
            structures = set().union(*found)
            for s in structures:
                touch[s].append((t, len(alive)))
            alive.append(len(structures))
    return touch, alive


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
    start = model.ops
    try:
        while model.total > target_ms:
            move = _best_move(costs, model, layers, allowed, in_layer, gains, target_ms)
            if move is None:
                raise BadInput(
                    f"no mask reaches the latency asked for: the table predicts "
                    f"{model.total:.3g} ms at best, {1 - model.total / model.table.dense_ms:.1%} "
                    f"less than the dense {model.table.dense_ms:.3g} ms; pass a ratio of at "
                    f"most {math.floor((1 - model.total / model.table.dense_ms) * 1000) / 1000:g}"
                )
            layer, chunk = move
            changed = model.prune(chunk)
            costs.pruned(chunk)
            pruned += chunk
            in_layer[layer].update(chunk)
            for key in [k for k in gains if affects[k[0]] & changed or k[0] == layer]:
                del gains[key]
            allowed[layer] = [
                k for k in allowed[layer] if k < len(layers[layer]) - len(in_layer[layer])
            ]
    finally:
        model.prune(pruned, restore=True)
        model.ops = start
    return pruned


def _best_move(costs, model, layers, allowed, in_layer, gains, target_ms):
    """(layer, structures) of the move with the least cost per ms saved, or the cheapest
    that alone reaches `target_ms`; None when no move saves time."""
    best, best_key, finishing, finishing_cost = None, math.inf, None, math.inf
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
            gain, cost = gains[(layer, k)], max(cum[m - 1], 0.0)
            if gain <= 0:
                continue
            if model.total - gain <= target_ms and cost < finishing_cost:
                finishing, finishing_cost = (layer, chunk[:m]), cost
            if cost / gain < best_key:
                best, best_key = (layer, chunk[:m]), cost / gain
    return finishing if finishing is not None else best
