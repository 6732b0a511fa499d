"""Sparsity allocation of weight-level pruning: how many weights each layer keeps.

Each allocation maps {parameter name: scores [same shape as the weight]} (the weights'
magnitudes, already pruned entries at -inf) and a target sparsity s in (0, 1) to {name: weights
kept}; `sosp.unstructured.magnitude_mask` then keeps each layer's largest magnitudes. The
counts sum to N - round(s N) over the N prunable weights (uniform, uniform+ and ERK round per
layer, so up to one weight per layer off).

    global        one magnitude threshold over every prunable weight
    uniform       every layer at sparsity s
    uniform_plus  uniform+ (Gale et al., 2019): the first layer dense, the last at most 80%
                  sparse, the others at one common sparsity that reaches s overall
    erk           Erdos-Renyi-Kernel (Evci et al., 2020): density of layer l proportional to
                  sum(shape_l) / prod(shape_l); layers it would make denser than 1 stay dense
    lamp          LAMP (Lee et al., 2021): one threshold over the scores
                  w_u^2 / sum_{v in layer, |w_v| >= |w_u|} w_v^2
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sosp.errors import BadInput, UnknownName

Scores = dict[str, torch.Tensor]
UNIFORM_PLUS_LAST_MAX = 0.8  # uniform+: the classifier is at most 80% sparse


def check_sparsity(sparsity: float) -> None:
    if not 0 < sparsity < 1:
        raise BadInput(f"sparsity {sparsity} must lie in (0, 1): e.g. 0.9 prunes 90% of weights")


def total_kept(scores: Scores, sparsity: float) -> int:
    """N - round(s N): the weights kept over all prunable weights."""
    n = sum(s.numel() for s in scores.values())
    return n - round(sparsity * n)


def top_counts(scores: Scores, kept: int) -> dict[str, int]:
    """How many of each layer's entries are among the `kept` largest of all scores together."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    chosen[torch.topk(flat, kept, sorted=False).indices] = True
    counts, start = {}, 0
    for name, s in scores.items():
        counts[name] = int(chosen[start : start + s.numel()].sum())
        start += s.numel()
    return counts


def global_counts(scores: Scores, sparsity: float) -> dict[str, int]:
    return top_counts(scores, total_kept(scores, sparsity))


def uniform_counts(scores: Scores, sparsity: float) -> dict[str, int]:
    return {name: s.numel() - round(sparsity * s.numel()) for name, s in scores.items()}


def uniform_plus_counts(scores: Scores, sparsity: float) -> dict[str, int]:
    """First layer dense; the others at a common sparsity q, the last capped at 80%."""
    names = list(scores)
    first, last = names[0], names[-1]
    sizes = {name: s.numel() for name, s in scores.items()}
    n = sum(sizes.values())
    prune = sparsity * n
    q = prune / (n - sizes[first])
    counts = {first: sizes[first]}
    if q > UNIFORM_PLUS_LAST_MAX:
        last_pruned = UNIFORM_PLUS_LAST_MAX * sizes[last]
        rest = n - sizes[first] - sizes[last]
        q = (prune - last_pruned) / rest if rest else float("inf")
        counts[last] = sizes[last] - round(last_pruned)
    if q >= 1:
        raise BadInput(
            f"uniform+ cannot reach sparsity {sparsity}: the first layer stays dense and the "
            "last keeps 20%; choose a lower sparsity or another allocation"
        )
    for name in names:
        counts.setdefault(name, sizes[name] - round(q * sizes[name]))
    return counts


def erk_densities(scores: Scores, sparsity: float) -> dict[str, float]:
    """ERK's density of each layer: eps * sum(shape) / prod(shape), eps set so the kept
    weights total (1 - s) N; a layer eps would make denser than 1 is set dense and eps solved
    again (the layers of the largest raw density first, as RigL's code does)."""
    raw = {name: sum(s.shape) / s.numel() for name, s in scores.items()}
    kept = (1 - sparsity) * sum(s.numel() for s in scores.values())
    dense: set[str] = set()
    while True:
        free = [name for name in scores if name not in dense]
        if not free:
            raise BadInput(f"ERK cannot reach sparsity {sparsity}")
        left = kept - sum(scores[name].numel() for name in dense)
        eps = left / sum(raw[name] * scores[name].numel() for name in free)
        top = max(raw[name] for name in free)
        if eps * top <= 1:
            return {name: 1.0 if name in dense else eps * raw[name] for name in scores}
        dense |= {name for name in free if raw[name] == top}


def erk_counts(scores: Scores, sparsity: float) -> dict[str, int]:
    densities = erk_densities(scores, sparsity)
    return {name: round(densities[name] * s.numel()) for name, s in scores.items()}


def lamp_scores(scores: Scores) -> Scores:
    """LAMP's score of every entry: its squared magnitude over the sum of the squares of the
    entries of its layer at least as large (pruned entries, at -inf, score -inf)."""
    out = {}
    for name, s in scores.items():
        flat = s.flatten()
        pruned = torch.isneginf(flat)
        sq = torch.where(pruned, torch.zeros_like(flat), flat.double() ** 2)
        order = torch.argsort(sq)  # ascending
        sorted_sq = sq[order]
        suffix = torch.flip(torch.cumsum(torch.flip(sorted_sq, [0]), 0), [0])
        ratio = torch.empty_like(sq)
        ratio[order] = sorted_sq / suffix.clamp_min(torch.finfo(sq.dtype).tiny)
        out[name] = torch.where(pruned, torch.full_like(ratio, float("-inf")), ratio).view_as(s)
    return out


def lamp_counts(scores: Scores, sparsity: float) -> dict[str, int]:
    """Within a layer LAMP orders entries as their magnitudes do, so its counts applied to
    magnitudes keep the same weights."""
    return top_counts(lamp_scores(scores), total_kept(scores, sparsity))


ALLOCATIONS: dict[str, Callable[[Scores, float], dict[str, int]]] = {
    "global": global_counts,
    "uniform": uniform_counts,
    "uniform_plus": uniform_plus_counts,
    "erk": erk_counts,
    "lamp": lamp_counts,
}


def counts(allocation: str, scores: Scores, sparsity: float) -> dict[str, int]:
    """The weights each layer keeps under `allocation` (a key of ALLOCATIONS) at `sparsity`."""
    check_sparsity(sparsity)
    if allocation not in ALLOCATIONS:
        raise UnknownName(
            f"unknown allocation {allocation!r}; choose one of {', '.join(ALLOCATIONS)}"
        )
    return ALLOCATIONS[allocation](scores, sparsity)
