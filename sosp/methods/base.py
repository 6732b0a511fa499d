"""What a pruning method is and what it may use. Method modules (here and in `baselines/`)
import only this module (and the computations they build on); `sosp.methods.registry` lists
them.

A method maps a `Context` to a `Saliency`: per-structure `scores` (prune the smallest) or the
SOSP-I matrix `q` (greedy Eq. 4). Selection, surgery and counting are shared by all methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sosp.curvature import Batch
from sosp.selection import Saliency
from sosp.structures import Layer, StructureGraph

Method = Callable[..., Saliency]  # method(ctx, **options) -> Saliency

__all__ = ["Batch", "Context", "Method", "Saliency", "generator", "per_layer_scores"]


@dataclass
class Context:
    """Everything a method may use. `batches` is a list (read more than once) holding exactly
    the N' pruning samples. `frozen`: {parameter name: bool mask} of the entries an earlier
    round's soft mask holds at zero (pruning in rounds, `sosp.rounds`); a method whose
    quantities would see them (a gradient over all parameters) leaves them out."""

    model: nn.Module
    graph: StructureGraph
    batches: list[Batch]
    loss: str
    n_samples: int
    seed: int = 0
    progress: bool = False
    frozen: dict[str, torch.Tensor] | None = None


def generator(ctx: Context) -> torch.Generator:
    """A CPU generator seeded by `ctx.seed`: the only source of randomness a method may use."""
    return torch.Generator().manual_seed(ctx.seed)


def per_layer_scores(ctx: Context, score: Callable[[Layer], torch.Tensor]) -> Saliency:
    """Saliency from `score(layer)` [out_channels] of every prunable layer, in structure order;
    a coupled structure (several writer channels) scores the sum of its channels' scores."""
    graph = ctx.graph
    per_writer = torch.zeros(graph.num_writers, dtype=torch.float64)
    for layer in graph.layers.values():
        if layer.prunable:
            part = score(layer).detach().flatten()
            if len(part) != layer.out_channels:
                raise ValueError(
                    f"score of {layer.name!r} has {len(part)} entries, not {layer.out_channels}"
                )
            per_writer[layer.first_id : layer.first_id + len(part)] = part.double().cpu()
    owner = torch.tensor([i for i, members in enumerate(graph.members) for _ in members])
    writers = torch.tensor([w for members in graph.members for w in members])
    scores = torch.zeros(len(graph.members), dtype=torch.float64)
    return Saliency(scores=scores.index_add_(0, owner, per_writer[writers]))
