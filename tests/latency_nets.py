"""Helpers of the latency tests: a small chain of convolutions, latency tables whose grids are
written by hand (measured once for their nodes, then overwritten, so that no test depends on
how loaded the machine is), and the brute-force predictions they are checked against."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sosp.latency_table import LatencyTable, measure
from sosp.structures import StructureGraph

CHAIN_SHAPE = (2, 4, 4)


class ChainNet(nn.Module):
    """conv1 -> ReLU -> conv2 -> ReLU -> ... (one conv per entry of `widths`, `kernel` square)
    -> mean -> fc (3 outputs). Input [B, 2, 4, 4]."""

    def __init__(self, widths: Sequence[int] = (4, 5, 4, 3), kernel: int = 3):
        super().__init__()
        ins = [CHAIN_SHAPE[0], *widths[:-1]]
        self.convs = len(widths)
        for i, (cin, cout) in enumerate(zip(ins, widths, strict=True), 1):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, kernel, padding=kernel // 2))
        self.fc = nn.Linear(widths[-1], 3)

    def forward(self, x):
        for i in range(1, self.convs + 1):
            x = F.relu(getattr(self, f"conv{i}")(x))
        return self.fc(x.mean((2, 3)))


def quick_table(model: nn.Module, shape, batch: int = 2, step: int = 4, **kw) -> LatencyTable:
    """`measure` at its cheapest: one timed round, no warmup."""
    return measure(model, shape, batch=batch, step=step, repeats=1, warmup=0, **kw)


def dense_kept(graph: StructureGraph) -> Callable[[str], int]:
    return lambda t: len(graph.sources[t])


def with_grids(
    table: LatencyTable,
    graph: StructureGraph,
    ms: Callable[[str, int, int], float],
    offset: float = 0.0,
    dense_ms: float | None = None,
) -> LatencyTable:
    """A copy of `table` whose every grid point holds ms(op, kept in, kept out) (kept out =
    kept in on a 1-d grid), with offset `offset`, `ops_dense_ms` summed anew at full width
    and `dense_ms` (default: the operations' sum plus the offset)."""
    table = copy.deepcopy(table)
    for name, op in table.ops.items():
        op.ms = [[ms(name, i, o if op.outputs else i) for o in (op.outputs or [None])]
                 for i in op.inputs]  # fmt: skip
    table.offset_ms, table.group_factors = offset, {}
    table.ops_dense_ms = table.ops_ms(dense_kept(graph))
    table.dense_ms = table.ops_dense_ms + offset if dense_ms is None else dense_ms
    return table


def mac_like(name: str, kin: int, kout: int) -> float:
    """A deterministic grid: 1 us plus 1 us per (input, output) channel pair of a conv or
    linear layer, per input channel of any other operation."""
    return 1e-3 * (1 + kin * kout) if name.startswith(("Conv2d", "Linear")) else 1e-3 * (1 + kin)


def brute_kept(graph: StructureGraph, pruned: Sequence[int]) -> Callable[[str], int]:
    """Tensor -> its kept channels by `StructureGraph.kept` on the writers left alive."""
    alive = graph.alive_writers(pruned)
    return lambda t: len(graph.kept(t, alive))


def brute_ms(table: LatencyTable, graph: StructureGraph, pruned: Sequence[int]) -> float:
    """The table's prediction from brute-force kept counts."""
    return table.predicted_ms(table.ops_ms(brute_kept(graph, pruned)))


def allowed_counts(n: int, cap: int, step: int, round_to: int | None) -> list[int]:
    """The kept counts a layer of n structures may end at, n included: multiples of
    lcm(step, round_to) (and 1 without round_to) that prune at most `cap` of them."""
    q = step * (round_to or 1) // math.gcd(step, round_to or 1)
    ks = {k for k in range(1, n) if k % q == 0 or (k == 1 and round_to is None)}
    return sorted(k for k in ks if n - k <= cap) + [n]


def exact_knapsack(
    table: LatencyTable,
    graph: StructureGraph,
    layers: list[list[int]],
    ranked: list[list[int]],
    allowed: list[list[int]],
    loss: Callable[[list[int]], float],
    target_ms: float,
) -> tuple[float, list[int]] | None:
    """The least `loss(pruned)` over every combination of allowed kept counts (layer l keeping
    k prunes its first n_l - k structures of `ranked[l]`) whose brute-force prediction is at
    most `target_ms`, with that mask; None when none is."""
    best = None
    for ks in itertools.product(*allowed):
        pruned = [
            s for r, k, idx in zip(ranked, ks, layers, strict=True) for s in r[: len(idx) - k]
        ]
        if brute_ms(table, graph, pruned) <= target_ms:
            value = loss(pruned)
            if best is None or value < best[0]:
                best = (value, pruned)
    return best


def q_objective(q: torch.Tensor, pruned: Sequence[int]) -> float:
    """Eq. 4's objective: sum over s, s' in `pruned` of q[s, s']."""
    idx = torch.tensor(list(pruned), dtype=torch.long)
    return float(q[idx][:, idx].sum()) if len(idx) else 0.0
